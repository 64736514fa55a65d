//! BatchNorm2d with its ReLU on CUDA, in one kernel per direction (cargo feature `cuda`).
//!
//! Why: composed of candle's ops, a train-mode BatchNorm is about seven passes over its input
//! (two sums, a subtraction, a square, a scaling, a shift, the ReLU) and its backward through
//! candle's autograd twice as many, each a kernel launch whose result the backward keeps. On an
//! H200 that made DenseNet121 train at 0.14x PyTorch's speed in 3.4x its GPU memory. Here the
//! forward reads the input three times and writes once, the backward reads input and gradient
//! twice and writes once, and nothing but the batch statistics is kept: DenseNet121 trained at
//! 2.3x the speed (0.40x PyTorch's) in 12 GB instead of 27, and inferred at 2.6x (0.81x).
//!
//! The kernels are in `src/cuda/batchnorm.cu`, compiled to PTX by `build.rs` with the nvcc that
//! builds candle's own kernels; the driver compiles the PTX for the GPU at first use. Numbers:
//! the same formulas as the CPU kernels and PyTorch (biased variance to normalise, the ReLU's
//! gradient masked where its output is not positive), checked against the CPU by
//! `cxr-train gpu-check`.
//!
//! The forward's output is one flat tensor, `y` then the batch mean and biased variance per
//! channel, so that the backward finds the statistics in it (candle hands a custom op's backward
//! its output) and the caller can fold them into the running statistics.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Shape, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/batchnorm.ptx"));
const MODULE: &str = "cxr_batchnorm";
/// Threads per block, as `THREADS` in the kernels.
const THREADS: u32 = 512;

/// Whether these kernels run `x`'s BatchNorm: an f32 tensor on CUDA, unless the environment
/// says `CXR_CUDA_BATCHNORM=composed` (candle's own ops, for comparisons).
pub(crate) fn takes(x: &Tensor) -> bool {
    static COMPOSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let composed = *COMPOSED
        .get_or_init(|| std::env::var("CXR_CUDA_BATCHNORM").is_ok_and(|v| v == "composed"));
    x.device().is_cuda() && x.dtype() == DType::F32 && !composed
}

/// Train mode: `(y, batch mean, biased batch variance)` of `[N, C, H, W]` `x` with affine `w`,
/// `b`, ReLU applied when `relu`; `y` is differentiable in `x`, `w` and `b`.
pub(crate) fn train(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
    relu: bool,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, wd) = x.dims4()?;
    let total = n * c * h * wd;
    let out = x
        .contiguous()?
        .apply_op3(w, b, BatchNorm::new(Pass::Train, eps, relu))?;
    let y = out.narrow(0, 0, total)?.reshape(x.shape())?;
    let mean = out.narrow(0, total, c)?.detach();
    let var = out.narrow(0, total + c, c)?.detach();
    Ok((y, mean, var))
}

/// Eval mode for inference, recording nothing: `x * alpha + beta` per channel, then the ReLU.
pub(crate) fn eval(
    x: &Tensor,
    alpha: &Tensor,
    beta: &Tensor,
    relu: bool,
) -> candle_core::Result<Tensor> {
    let op = BatchNorm::new(Pass::Eval, 0.0, relu);
    x.contiguous()?
        .apply_op3_no_bwd(&alpha.contiguous()?, &beta.contiguous()?, &op)
}

/// Which kernel a [`BatchNorm`] op runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// `(x, w, b)` to `[y, mean, var]`, flat; differentiable.
    Train,
    /// `(x, dy, [w, b, mean, var])` to `[dx, dw, db]`, flat.
    TrainBackward,
    /// `(x, alpha, beta)` to `y`.
    Eval,
}

/// One of the kernels as a candle op on three tensors.
struct BatchNorm {
    pass: Pass,
    eps: f32,
    relu: bool,
}

impl BatchNorm {
    fn new(pass: Pass, eps: f64, relu: bool) -> Self {
        Self {
            pass,
            eps: eps as f32,
            relu,
        }
    }
}

type Fwd<S = CudaStorage> = candle_core::Result<(S, Shape)>;
type Grads = candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)>;

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Train => "cuda-batch-norm-train",
            Pass::TrainBackward => "cuda-batch-norm-train-backward",
            Pass::Eval => "cuda-batch-norm-eval",
        }
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Fwd<CpuStorage> {
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        a: &CudaStorage,
        al: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Fwd {
        let dims = nchw(xl)?;
        let device = x.device().clone();
        let inputs = [&view(x, xl)?, &view(a, al)?, &view(b, bl)?];
        match self.pass {
            Pass::Train => per_channel(&device, "bn_train_forward", inputs, dims, self),
            Pass::TrainBackward => per_channel(&device, "bn_train_backward", inputs, dims, self),
            Pass::Eval => elementwise(&device, inputs, dims, self.relu, xl),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, res: &Tensor, grad: &Tensor) -> Grads {
        if self.pass != Pass::Train {
            candle_core::bail!("{} has no backward", self.name());
        }
        let (n, c, h, wd) = x.dims4()?;
        let total = n * c * h * wd;
        let dy = grad.narrow(0, 0, total)?.contiguous()?;
        let stats = res.narrow(0, total, 2 * c)?;
        let params = Tensor::cat(&[w, b, &stats], 0)?;
        let op = BatchNorm {
            pass: Pass::TrainBackward,
            ..*self
        };
        let g = x.apply_op3_no_bwd(&dy, &params, &op)?;
        let dx = g.narrow(0, 0, total)?.reshape(x.shape())?;
        let (dw, db) = (g.narrow(0, total, c)?, g.narrow(0, total + c, c)?);
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The eval kernel over every value, a thread each (grid-strided).
fn elementwise(
    device: &CudaDevice,
    [x, alpha, beta]: [&CudaView<'_, f32>; 3],
    (n, c, hw): (usize, usize, usize),
    relu: bool,
    layout: &Layout,
) -> Fwd {
    let total = n * c * hw;
    let func = device.get_or_load_custom_func("bn_eval_forward", MODULE, PTX)?;
    // SAFETY: the kernel writes every one of the `total` values.
    let mut y = unsafe { device.alloc::<f32>(total) }?;
    let (c32, hw32, total64, relu) = (c as i32, hw as i32, total as i64, i32::from(relu));
    let blocks = total.div_ceil(THREADS as usize).min(65_535) as u32;
    let mut args = func.builder();
    args.arg(x).arg(alpha).arg(beta).arg(&mut y);
    args.arg(&c32).arg(&hw32).arg(&total64).arg(&relu);
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments in the kernel's order and types; `y` holds `total` values.
    unsafe { args.launch(cfg) }.w()?;
    let storage = CudaStorage::wrap_cuda_slice(y, device.clone());
    Ok((storage, Shape::from(layout.dims())))
}

/// Launches `kernel` with one block per channel: `(in1, in2, in3, out, n, c, hw, eps, relu)`,
/// `out` a fresh flat tensor of `n * c * hw + 2 * c` values that the kernel fills.
fn per_channel(
    device: &CudaDevice,
    kernel: &str,
    inputs: [&CudaView<'_, f32>; 3],
    (n, c, hw): (usize, usize, usize),
    op: &BatchNorm,
) -> Fwd {
    let (eps, relu) = (op.eps, op.relu);
    let out_len = n * c * hw + 2 * c;
    let func = device.get_or_load_custom_func(kernel, MODULE, PTX)?;
    // SAFETY: the kernels write every value of `out`: each block its channel and statistics.
    let mut out = unsafe { device.alloc::<f32>(out_len) }?;
    let (n32, c32, hw32, relu) = (n as i32, c as i32, hw as i32, i32::from(relu));
    let mut args = func.builder();
    args.arg(inputs[0])
        .arg(inputs[1])
        .arg(inputs[2])
        .arg(&mut out);
    args.arg(&n32).arg(&c32).arg(&hw32).arg(&eps).arg(&relu);
    let cfg = LaunchConfig {
        grid_dim: (c as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments in the kernel's order and types, sizes from the same dimensions.
    unsafe { args.launch(cfg) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, device.clone()),
        Shape::from(out_len),
    ))
}

/// `(N, C, H * W)` of a contiguous 4-D f32 layout.
fn nchw(layout: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, c, h, w) = layout.shape().dims4()?;
    Ok((n, c, h * w))
}

/// The f32 values of a contiguous storage, from the layout's offset on.
fn view<'a>(storage: &'a CudaStorage, layout: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
    if !layout.is_contiguous() || storage.dtype() != DType::F32 {
        candle_core::bail!("the CUDA BatchNorm takes contiguous f32 tensors, got {layout:?}");
    }
    let slice = storage.as_cuda_slice::<f32>()?;
    Ok(slice.slice(layout.start_offset()..))
}
