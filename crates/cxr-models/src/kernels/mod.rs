//! CPU kernels for the layers that dominate DenseNet and ResNet training (issue #6).
//!
//! candle's CPU backend is correct but slow where these networks spend their time: the input
//! gradient of a convolution goes through a single-threaded `conv_transpose2d`, BatchNorm is a
//! chain of a dozen elementwise passes (each single-threaded, each allocating), and its
//! backward is the chain's. The kernels here replace exactly those pieces with candle custom ops
//! (`CustomOp2/3` with a `cpu_fwd` and a `bwd`), so autograd, `Var`s and the rest of the model
//! stay candle's:
//!
//! * [`conv2d`]: im2col (nothing for 1x1 stride-1 convolutions) and one GEMM per image (below
//!   28x28, per thread's images side by side) on the `gemm` crate candle itself uses; the
//!   backward is two more GEMMs and a col2im. Stride-1 convolutions with a window run instead
//!   as a direct convolution in assembly (AVX2 or AVX-512, `simd`) where it pays (`direct`): no patch matrix, no
//!   packing, forward, input and weight gradients. ResNet's 3x3 convolutions (64 channels or
//!   more) run as Winograd F(2x2, 3x3) instead (`winograd`), forward and both gradients: 2.25
//!   times fewer multiply-adds.
//! * [`batch_norm_train`] / [`batch_norm_eval`]: BatchNorm with an optional fused ReLU, forward
//!   and backward in two passes each, parallel over channels or (image, channel) planes.
//! * [`residual_blocks`]: a chain of whole ResNet blocks (a stage), each one's last BatchNorms,
//!   sum and ReLU in one pass.
//! * [`dense_block`]: a whole DenseNet dense block, in one buffer of all its channels, with no
//!   concatenations and its input gradient accumulated in place.
//! * [`max_pool2d`]: the stem's padded max pool, forward and backward in one pass each.
//! * [`update_in_place`]: an optimiser's elementwise step, parameter and state written in place
//!   in one pass (for cxr-train's optimisers, which bring the arithmetic).
//!
//! The entry points take f32 CPU tensors; callers check [`on_cpu_f32`] and otherwise use
//! candle's own ops (also on the CPU inside [`with_candle_ops`]), so CUDA builds keep cuDNN and
//! candle's kernels. Gradients of the custom ops are computed by
//! plain slice functions and are not themselves differentiable (no second derivatives).

mod batchnorm;
mod conv;
mod dense_block;
#[cfg(target_arch = "x86_64")]
mod direct;
mod gemm;
mod in_place;
mod planes;
mod pool;
mod residual;
#[cfg(target_arch = "x86_64")]
mod simd;
mod winograd;

#[cfg(target_arch = "x86_64")]
use simd::vectorized;

/// Elsewhere than on x86-64, a [`vectorized!`](simd::vectorized) function is compiled once.
#[cfg(not(target_arch = "x86_64"))]
macro_rules! vectorized {
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        $(#[$attr])* $vis fn $($rest)*
    };
}
#[cfg(not(target_arch = "x86_64"))]
use vectorized;

pub(crate) use batchnorm::{batch_norm_eval, batch_norm_train, BatchStats};
pub(crate) use conv::{conv2d, FrozenWeights};
pub(crate) use dense_block::{dense_block, DenseBlockSpec};
pub use in_place::{can_update_in_place, update_in_place};
pub(crate) use pool::max_pool2d;
pub(crate) use residual::{residual_blocks, ResidualSpec};

use candle_core::{DType, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Whether the custom kernels apply: f32 values on the CPU, outside [`with_candle_ops`].
pub(crate) fn on_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !candle_ops()
}

/// Whether this thread runs the layers on candle's own ops ([`with_candle_ops`]).
pub(crate) fn candle_ops() -> bool {
    CANDLE_OPS.with_borrow(|c| *c)
}

thread_local! {
    static CANDLE_OPS: std::cell::RefCell<bool> = const { std::cell::RefCell::new(false) };
}

/// Runs `f` (on this thread) with the layers on candle's own ops, as on CUDA, instead of these
/// kernels: the golden tests check that path against PyTorch on the CPU, where no GPU is.
pub fn with_candle_ops<R>(f: impl FnOnce() -> R) -> R {
    crate::layers::scoped(&CANDLE_OPS, true, f)
}

/// The values of a contiguous f32 CPU storage as laid out by `layout`.
fn values<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cxr kernels need contiguous inputs".into()))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// Runs `f` on the values of a contiguous f32 CPU tensor (as a backward pass must).
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(values(cpu, layout)?)),
        _ => candle_core::bail!("cxr kernels run on the CPU only"),
    }
}

/// A CPU tensor holding `values` in `shape`.
fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// `len` zeros, written by all threads: the kernels' buffers are allocated on the calling
/// thread, and a single-threaded `vec![0.0; len]` of every activation-sized buffer left the other
/// threads idle for about a tenth of a DenseNet121 training step (its dense blocks allocate about
/// 1.5 GB per step; glibc reuses freed memory, so each allocation is a `memset`).
fn zeroed(len: usize) -> Vec<f32> {
    const PIECE: usize = 1 << 16;
    if len < 2 * PIECE {
        return vec![0.0; len];
    }
    // An indexed parallel iterator extends a vector in place, each thread writing its pieces.
    let mut values = Vec::with_capacity(len);
    values.par_extend(rayon::iter::repeat_n(0.0, len).with_min_len(PIECE));
    values
}

/// A buffer of `len` values for a kernel that writes every one of them before any is read
/// (a convolution's output, a BatchNorm's, a block's): [`zeroed`] would first write it whole
/// for nothing, a pass through memory per activation (alternating with zeroed buffers, 4
/// rounds: ResNet50 inference +11%, DenseNet121 training +5%). In debug builds, which the tests run, it is
/// filled with NaN instead, so an element a kernel leaves unwritten shows in their results.
///
/// # Safety
///
/// The caller writes every element before reading any, and before the buffer leaves it.
unsafe fn for_overwrite(len: usize) -> Vec<f32> {
    if cfg!(debug_assertions) {
        return vec![f32::NAN; len];
    }
    let mut values = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; the caller initialises every element before reading it.
    #[allow(clippy::uninit_vec)]
    unsafe {
        values.set_len(len)
    };
    values
}

/// The leading parts of a fused op's packed parameters (or their gradients), `lens` long.
fn split_packed<const N: usize>(mut rest: &[f32], lens: [usize; N]) -> [&[f32]; N] {
    lens.map(|len| {
        let (head, tail) = rest.split_at(len);
        rest = tail;
        head
    })
}

/// [`split_packed`] for writing.
fn split_packed_mut<const N: usize>(mut rest: &mut [f32], lens: [usize; N]) -> [&mut [f32]; N] {
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
}

/// What a fused op and the BatchNorms it runs exchange: their running statistics go in (eval
/// mode); their batch statistics, each with its values per channel, come out (train mode), in
/// the same order.
struct Statistics {
    running: Option<Vec<BatchStats>>,
    batch: std::sync::Mutex<Vec<(BatchStats, usize)>>,
}

impl Statistics {
    fn new(running: Option<Vec<BatchStats>>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            running,
            batch: Default::default(),
        })
    }

    fn train(&self) -> bool {
        self.running.is_none()
    }

    /// BatchNorm `i`'s running statistics, in eval mode.
    fn running(&self, i: usize) -> Option<&BatchStats> {
        self.running.as_ref().map(|r| &r[i])
    }

    fn record(&self, stats: BatchStats, count: usize) {
        lock(&self.batch).push((stats, count));
    }

    fn take(&self) -> Vec<(BatchStats, usize)> {
        std::mem::take(&mut *lock(&self.batch))
    }
}

/// Locks `m`, also after a panic elsewhere (the data are buffers, valid either way).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Below this many elements a parallel loop costs more than it saves.
const MIN_PARALLEL_LEN: usize = 1 << 14;

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::Tensor;

    /// Largest absolute difference, relative to the largest reference magnitude, within `tol`.
    pub(crate) fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, want) = (flat(got), flat(want));
        // `f32::max` below skips NaN, which marks values a kernel left unwritten.
        let bad = got.iter().position(|v| !v.is_finite());
        assert!(bad.is_none(), "{what}: value {bad:?} is not finite");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff / scale <= tol,
            "{what}: max abs diff {diff:e}, relative {:e}",
            diff / scale
        );
    }
}
