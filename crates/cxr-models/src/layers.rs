//! The building blocks: convolution, BatchNorm, pools.
//!
//! [`Conv2d::new`] is the only place a convolution is created and [`BatchNorm::new`] the only
//! place a normalisation is, so their parameters and running statistics (torchvision's names)
//! live here whatever runs them: on the CPU, the custom ops of [`crate::kernels`], either layer
//! by layer through the `forward`s (BatchNorm with the following ReLU fused,
//! [`BatchNorm::forward_relu`]) or a whole dense or residual block at once, fed by
//! [`fused_inputs`] and [`BatchNorm::record`]; elsewhere (CUDA), candle's own ops, except for
//! the convolutions under the `cudnn` feature (`crate::cudnn`: forward and backward on cuDNN).
//!
//! candle's pools cannot do what torchvision's stem needs: `max_pool2d` has no padding argument
//! and no backward when kernel != stride. On the CPU [`max_pool2d`] is a custom op; elsewhere it
//! is written as an elementwise maximum of strided shifted views of an input padded with -inf,
//! which is differentiable with candle's own autograd and equals PyTorch's pool (padding never
//! wins a window).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::LocalKey;

use candle_core::{DType, Tensor, TensorId, Var};

use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::kernels;
use crate::state::{join, lock, Builder, SharedStats};

/// Training or evaluation behaviour (BatchNorm batch statistics vs running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Normalise with batch statistics and update the running statistics.
    Train,
    /// Normalise with the running statistics; nothing is updated.
    Eval,
}

/// Geometry of a square convolution without bias (all of torchvision's DenseNet/ResNet convs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvSpec {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
}

impl ConvSpec {
    /// A convolution padded by half its kernel (torchvision's ResNet convolutions).
    pub(crate) fn same(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride,
            padding: kernel / 2,
        }
    }
}

/// What a fused kernel ([`kernels::dense_block`], [`kernels::residual_block`]) takes.
pub(crate) struct FusedInputs {
    /// The block's input.
    pub(crate) x: Tensor,
    /// The block's parameters, flattened and concatenated in order (so their gradients flow
    /// back through candle's concatenation).
    pub(crate) packed: Tensor,
    /// In eval mode, the running statistics of the block's BatchNorms in order.
    pub(crate) running: Option<Vec<kernels::BatchStats>>,
    /// While the weights are frozen ([`Frozen`]), each convolution's kept weights.
    pub(crate) frozen: Option<Arc<[kernels::FrozenWeights]>>,
}

/// The [`FusedInputs`] of a block with parameters `params` and BatchNorms `norms`. Inside
/// [`without_grad`] the packed parameters are detached (as [`param`] detaches a layer's, and
/// `Model::infer` its input), so candle records nothing and the kernel's saved buffers are
/// freed as soon as it returns; inside [`Frozen::scope`] too, they are made once per block and
/// kept.
pub(crate) fn fused_inputs<'a>(
    x: &Tensor,
    params: impl IntoIterator<Item = &'a Tensor>,
    norms: impl IntoIterator<Item = &'a BatchNorm>,
    mode: Mode,
) -> Result<FusedInputs> {
    let params: Vec<&Tensor> = params.into_iter().collect();
    let norms: Vec<&BatchNorm> = norms.into_iter().collect();
    if !recording() && mode == Mode::Eval {
        if let Some(frozen) = FROZEN.with_borrow(Option::clone) {
            return frozen.inputs(x.clone(), &params, &norms);
        }
    }
    let packed = pack(&params)?;
    let running = match mode {
        Mode::Train => None,
        Mode::Eval => Some(running_stats(&norms)?),
    };
    let packed = match recording() {
        true => packed,
        false => packed.detach(),
    };
    Ok(FusedInputs {
        x: x.clone(),
        packed,
        running,
        frozen: None,
    })
}

fn pack(params: &[&Tensor]) -> Result<Tensor> {
    let flat = params.iter().map(|t| t.flatten_all());
    Ok(Tensor::cat(
        &flat.collect::<candle_core::Result<Vec<_>>>()?,
        0,
    )?)
}

fn running_stats(norms: &[&BatchNorm]) -> Result<Vec<kernels::BatchStats>> {
    norms.iter().map(|n| n.running_stats()).collect()
}

/// The fused blocks' inputs that depend on their weights alone, made at a block's first
/// inference and kept while the weights are frozen ([`crate::Inference`]): the packed
/// parameters (a copy of all weights per call otherwise: 20 ms of ResNet50's 0.75 s at batch
/// 8 on two cores), the running statistics, and the convolutions' transformed weights.
#[derive(Default)]
pub(crate) struct Frozen(Mutex<HashMap<TensorId, FrozenBlock>>);

#[derive(Clone)]
struct FrozenBlock {
    packed: Tensor,
    running: Vec<kernels::BatchStats>,
    weights: Arc<[kernels::FrozenWeights]>,
}

thread_local! {
    /// The frozen weights in use on this thread (see [`Frozen::scope`]).
    static FROZEN: RefCell<Option<Arc<Frozen>>> = const { RefCell::new(None) };
}

impl Frozen {
    /// Runs `f` with the fused blocks' inference (eval mode inside [`without_grad`]) on this
    /// thread reading and filling `self`.
    pub(crate) fn scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        scoped(&FROZEN, Some(Arc::clone(self)), f)
    }

    /// A block's inputs, keyed by its first parameter (candle never reuses a tensor's id).
    fn inputs(&self, x: Tensor, params: &[&Tensor], norms: &[&BatchNorm]) -> Result<FusedInputs> {
        let key = params.first().expect("a block has parameters").id();
        let mut blocks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let block = match blocks.get(&key) {
            Some(block) => block.clone(),
            None => {
                let block = FrozenBlock {
                    packed: pack(params)?.detach(),
                    running: running_stats(norms)?,
                    weights: norms.iter().map(|_| Default::default()).collect(),
                };
                blocks.insert(key, block.clone());
                block
            }
        };
        Ok(FusedInputs {
            x,
            packed: block.packed,
            running: Some(block.running),
            frozen: Some(block.weights),
        })
    }
}

thread_local! {
    /// Whether the fused blocks are recorded for a backward (see [`without_grad`]).
    static RECORDING: RefCell<bool> = const { RefCell::new(true) };
}

fn recording() -> bool {
    RECORDING.with_borrow(|r| *r)
}

/// Runs `f` with this thread's `key` set to `value`, and its previous value back afterwards,
/// also when `f` panics.
pub(crate) fn scoped<T: 'static, R>(
    key: &'static LocalKey<RefCell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static>(&'static LocalKey<RefCell<T>>, Option<T>);
    impl<T> Drop for Restore<T> {
        fn drop(&mut self) {
            if let Some(previous) = self.1.take() {
                self.0.set(previous);
            }
        }
    }
    let _restore = Restore(key, Some(key.replace(value)));
    f()
}

/// Runs `f` with the fused blocks unrecorded, like PyTorch's `torch.no_grad()` (and, like it,
/// for this thread only): candle records an op whenever an input is a variable, so without
/// this every block of an inference forward would keep its intermediate buffers until the
/// output is dropped. Gradients through what `f` returns are then missing or partial.
pub(crate) fn without_grad<R>(f: impl FnOnce() -> R) -> R {
    scoped(&RECORDING, false, f)
}

/// A parameter as an op's input: the variable itself, or inside [`without_grad`] a detached
/// handle on the same storage, so that the layers outside the fused blocks (and on CUDA, all
/// of them) record nothing either.
pub(crate) fn param(v: &Var) -> Tensor {
    match recording() {
        true => v.as_tensor().clone(),
        false => v.as_tensor().detach(),
    }
}

/// Folds the batch statistics a fused kernel returns (train mode; none in eval mode) into the
/// running statistics of `norms`, in order.
pub(crate) fn record_fused<'a>(
    norms: impl IntoIterator<Item = &'a BatchNorm>,
    stats: Vec<(kernels::BatchStats, usize)>,
) -> Result<()> {
    for (norm, (stats, count)) in norms.into_iter().zip(stats) {
        norm.record(stats, count)?;
    }
    Ok(())
}

/// 2-D convolution without bias, weight `[c_out, c_in, k, k]` named `<name>.weight`.
#[derive(Clone, Debug)]
pub(crate) struct Conv2d {
    weight: Var,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub(crate) fn new(b: &mut Builder, name: &str, spec: ConvSpec, init: Init) -> Result<Self> {
        let shape = [spec.c_out, spec.c_in, spec.kernel, spec.kernel];
        let weight = b.param(join(name, "weight"), &shape, init)?;
        Ok(Self {
            weight,
            stride: spec.stride,
            padding: spec.padding,
        })
    }

    pub(crate) fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    /// `[N, c_in, H, W] -> [N, c_out, H', W']`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = &param(&self.weight);
        if kernels::on_cpu_f32(x) {
            return Ok(kernels::conv2d(x, weight, self.stride, self.padding)?);
        }
        // Off the CPU kernels: the operands in the current precision, the result in f32.
        let dtype = crate::precision::operand_dtype();
        if dtype != DType::F32 && x.device().is_cpu() {
            // candle's CPU convolution has no bf16 product: the same arithmetic emulated, with
            // operands and output rounded to bf16 (products of bf16 values are exact in f32).
            let round = |t: &Tensor| t.to_dtype(dtype)?.to_dtype(DType::F32);
            let y = round(x)?.conv2d(&round(weight)?, self.padding, self.stride, 1, 1)?;
            return Ok(round(&y)?);
        }
        let (x, weight) = (x.to_dtype(dtype)?, weight.to_dtype(dtype)?);
        #[cfg(feature = "cudnn")]
        if x.device().is_cuda() {
            let y = crate::cudnn::conv2d(&x, &weight, self.stride, self.padding)?;
            return Ok(y.to_dtype(DType::F32)?);
        }
        let y = x.conv2d(&weight, self.padding, self.stride, 1, 1)?;
        Ok(y.to_dtype(DType::F32)?)
    }
}

/// `torch.nn.BatchNorm2d` (eps 1e-5, momentum 0.1, affine, tracking running statistics).
///
/// Train mode normalises with the batch mean and biased variance, then updates the running
/// statistics as PyTorch does: `running = (1 - momentum) * running + momentum * batch`, with the
/// *unbiased* batch variance, and `num_batches_tracked += 1`. Eval mode uses the running
/// statistics. Weight and bias are trainable parameters; the running statistics are buffers and
/// never reach an optimiser.
#[derive(Clone, Debug)]
pub(crate) struct BatchNorm {
    weight: Var,
    bias: Var,
    stats: SharedStats,
}

pub(crate) const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    pub(crate) fn new(b: &mut Builder, name: &str, channels: usize) -> Result<Self> {
        let weight = b.param(join(name, "weight"), &[channels], Init::Ones)?;
        let bias = b.param(join(name, "bias"), &[channels], Init::Zeros)?;
        let stats = b.running_stats(name, channels)?;
        Ok(Self {
            weight,
            bias,
            stats,
        })
    }

    /// `[N, C, H, W] -> [N, C, H, W]`.
    pub(crate) fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.normalise(x, mode, false)
    }

    /// `relu(self.forward(x))`, fused on the CPU.
    pub(crate) fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.normalise(x, mode, true)
    }

    pub(crate) fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    pub(crate) fn bias(&self) -> &Tensor {
        self.bias.as_tensor()
    }

    /// Values per channel of `x`, checked to be enough for batch statistics in train mode.
    pub(crate) fn count(x: &Tensor, mode: Mode) -> Result<usize> {
        let (n, _, h, w) = x.dims4()?;
        if mode == Mode::Train && n * h * w < 2 {
            return Err(too_few_values(format!("input {:?}", x.dims())));
        }
        Ok(n * h * w)
    }

    /// The running mean and variance, for kernels that normalise in eval mode themselves.
    pub(crate) fn running_stats(&self) -> Result<kernels::BatchStats> {
        let stats = lock(&self.stats);
        Ok(kernels::BatchStats {
            mean: stats.mean.to_vec1()?,
            var: stats.var.to_vec1()?,
        })
    }

    /// Folds a batch's statistics (`count` values per channel) into the running statistics.
    /// Fused kernels normalise inner layers whose sizes the caller does not see, so the check of
    /// [`BatchNorm::count`] is repeated here.
    pub(crate) fn record(&self, stats: kernels::BatchStats, count: usize) -> Result<()> {
        if count < 2 {
            return Err(too_few_values(format!("{count} in an inner layer")));
        }
        let channels = stats.mean.len();
        let device = self.weight.device();
        let mean = Tensor::from_vec(stats.mean, channels, device)?;
        let var = Tensor::from_vec(stats.var, channels, device)?;
        self.update_running_stats(&mean, &var, count)
    }

    fn normalise(&self, x: &Tensor, mode: Mode, relu: bool) -> Result<Tensor> {
        let count = Self::count(x, mode)?;
        let (weight, bias) = (&param(&self.weight), &param(&self.bias));
        let fast = kernels::on_cpu_f32(x);
        let y = match (mode, fast) {
            (Mode::Train, true) => {
                let (y, stats) = kernels::batch_norm_train(x, weight, bias, BN_EPS, relu)?;
                self.record(stats, count)?;
                return Ok(y);
            }
            #[cfg(feature = "cuda")]
            (Mode::Train, false) if crate::batchnorm_cuda::takes(x) => {
                let (y, mean, var) = crate::batchnorm_cuda::train(x, weight, bias, BN_EPS, relu)?;
                self.update_running_stats(&mean, &var, count)?;
                return Ok(y);
            }
            (Mode::Train, false) => self.normalise_with_batch_stats(x)?,
            (Mode::Eval, _) => {
                let (alpha, beta) = self.eval_affine()?;
                if fast {
                    return Ok(kernels::batch_norm_eval(x, &alpha, &beta, relu)?);
                }
                #[cfg(feature = "cuda")]
                if !recording() && crate::batchnorm_cuda::takes(x) {
                    return Ok(crate::batchnorm_cuda::eval(x, &alpha, &beta, relu)?);
                }
                let per_channel = (1, alpha.dim(0)?, 1, 1);
                x.broadcast_mul(&alpha.reshape(per_channel)?)?
                    .broadcast_add(&beta.reshape(per_channel)?)?
            }
        };
        Ok(if relu { y.relu()? } else { y })
    }

    /// Eval mode is `x * alpha + beta` per channel, with PyTorch's CPU kernel's coefficients
    /// `alpha = w / sqrt(var + eps)`, `beta = b - mean * alpha`.
    fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let (mean, var) = {
            let stats = lock(&self.stats);
            (stats.mean.clone(), stats.var.clone())
        };
        let alpha = param(&self.weight).div(&(var + BN_EPS)?.sqrt()?)?;
        let beta = param(&self.bias).sub(&mean.mul(&alpha)?)?;
        Ok((alpha, beta))
    }

    /// Train mode with candle's ops (off the CPU kernels' path).
    fn normalise_with_batch_stats(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let per_channel = (1, c, 1, 1);
        let weight = param(&self.weight).reshape(per_channel)?;
        let bias = param(&self.bias).reshape(per_channel)?;
        let count = n * h * w;
        let mean = (x.sum_keepdim((2, 3))?.sum_keepdim(0)? / count as f64)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim((2, 3))?.sum_keepdim(0)? / count as f64)?;
        let scale = weight.div(&(&var + BN_EPS)?.sqrt()?)?;
        let y = centred.broadcast_mul(&scale)?.broadcast_add(&bias)?;
        self.update_running_stats(&mean, &var, count)?;
        Ok(y)
    }

    fn update_running_stats(&self, mean: &Tensor, biased_var: &Tensor, count: usize) -> Result<()> {
        let mean = mean.detach().flatten_all()?;
        let unbiased = (biased_var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
        let mut stats = lock(&self.stats);
        stats.mean = ((&stats.mean * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?;
        stats.var = ((&stats.var * (1.0 - BN_MOMENTUM))? + (unbiased * BN_MOMENTUM)?)?;
        stats.num_batches_tracked += 1;
        Ok(())
    }
}

fn too_few_values(got: String) -> ModelError {
    ModelError::InvalidInput(format!(
        "BatchNorm in train mode needs more than one value per channel, got {got}; use a \
         larger batch or larger images, or Mode::Eval"
    ))
}

/// Max pool over `kernel x kernel` windows with stride and -inf padding (PyTorch's
/// `max_pool2d(x, kernel, stride, padding)`, floor mode), differentiable.
pub(crate) fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if kernel == 0 || stride == 0 || padding * 2 > kernel || h.min(w) + 2 * padding < kernel {
        return Err(ModelError::InvalidInput(format!(
            "max_pool2d(kernel {kernel}, stride {stride}, padding {padding}) does not fit input {:?}",
            x.dims()
        )));
    }
    if kernels::on_cpu_f32(x) {
        return Ok(kernels::max_pool2d(x, kernel, stride, padding)?);
    }
    max_pool2d_composed(x, kernel, stride, padding)
}

/// [`max_pool2d`] from candle's ops (off the CPU kernels' path), after the checks.
///
/// The maximum is separable: first over the kernel's rows, then its columns, each as the
/// elementwise maximum of `kernel` strided views. A strided view is taken by narrowing to
/// `stride * out` rows and keeping the first of each group of `stride` rows.
pub(crate) fn max_pool2d_composed(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let out_h = (h + 2 * padding - kernel) / stride + 1;
    let out_w = (w + 2 * padding - kernel) / stride + 1;
    let x = pad_neg_inf(x, 2, padding, kernel - 1 + stride * out_h - h - padding)?;
    let x = pad_neg_inf(&x, 3, padding, kernel - 1 + stride * out_w - w - padding)?;
    let rows = max_of_shifted_views(&x, 2, kernel, stride, out_h)?;
    max_of_shifted_views(&rows, 3, kernel, stride, out_w)
}

/// Elementwise maximum over `shift in 0..kernel` of `x[.., shift + stride * i, ..]` along `dim`.
fn max_of_shifted_views(
    x: &Tensor,
    dim: usize,
    kernel: usize,
    stride: usize,
    out: usize,
) -> Result<Tensor> {
    let mut grouped = x.dims().to_vec();
    grouped[dim] = out;
    grouped.insert(dim + 1, stride);
    let mut result: Option<Tensor> = None;
    for shift in 0..kernel {
        let view = x
            .narrow(dim, shift, stride * out)?
            .reshape(grouped.as_slice())?
            .narrow(dim + 1, 0, 1)?
            .squeeze(dim + 1)?;
        result = Some(match result {
            None => view,
            Some(acc) => acc.maximum(&view)?,
        });
    }
    Ok(result.expect("kernel > 0 was checked"))
}

/// Pads `dim` with -inf, which never wins a maximum over a window holding a real value.
fn pad_neg_inf(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    let block = |len: usize| -> Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[dim] = len;
        Ok(Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?)
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Ok(Tensor::cat(&parts, dim)?)
}

/// Average pool over non-overlapping `size x size` windows (PyTorch floor mode: trailing rows and
/// columns that do not fill a window are dropped, which also keeps candle's backward exact).
pub(crate) fn avg_pool2d(x: &Tensor, size: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (h_used, w_used) = (h / size * size, w / size * size);
    if h_used == 0 || w_used == 0 {
        return Err(ModelError::InvalidInput(format!(
            "avg_pool2d({size}) needs at least {size}x{size} pixels, got {:?}",
            x.dims()
        )));
    }
    if (h_used, w_used) == (h, w) {
        Ok(x.avg_pool2d(size)?)
    } else {
        let cropped = x.narrow(2, 0, h_used)?.narrow(3, 0, w_used)?.contiguous()?;
        Ok(cropped.avg_pool2d(size)?)
    }
}

/// Global average pool: `[N, C, H, W] -> [N, C]`.
pub(crate) fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Direct loops, as PyTorch defines the pool.
    fn naive_max_pool(x: &[f32], h: usize, w: usize, k: usize, s: usize, p: usize) -> Vec<f32> {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut out = vec![f32::NEG_INFINITY; oh * ow];
        for i in 0..oh {
            for j in 0..ow {
                for di in 0..k {
                    for dj in 0..k {
                        let (r, c) = (
                            (i * s + di) as isize - p as isize,
                            (j * s + dj) as isize - p as isize,
                        );
                        if r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w {
                            let v = x[r as usize * w + c as usize];
                            out[i * ow + j] = out[i * ow + j].max(v);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn max_pool_matches_definition_for_even_and_odd_sizes() {
        let dev = Device::Cpu;
        for (h, w) in [(8, 8), (7, 9), (5, 6)] {
            let x = Tensor::randn(0f32, 1f32, (1, 1, h, w), &dev).unwrap();
            let got = max_pool2d(&x, 3, 2, 1).unwrap();
            let want = naive_max_pool(&x.flatten_all().unwrap().to_vec1().unwrap(), h, w, 3, 2, 1);
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want,
                "{h}x{w}"
            );
        }
    }

    #[test]
    fn max_pool_gradient_goes_to_the_window_maximum() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 16., &dev)
                .unwrap()
                .reshape((1, 1, 4, 4))
                .unwrap(),
        )
        .unwrap();
        let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
        // windows of the 4x4 ramp: maxima at (1,1), (1,3), (3,1), (3,3)
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5., 7., 13., 15.]
        );
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut want = vec![0f32; 16];
        for i in [5, 7, 13, 15] {
            want[i] = 1.0;
        }
        assert_eq!(g, want);
    }

    #[test]
    fn avg_pool_floors_odd_sizes() {
        let x = Tensor::arange(0f32, 25., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 5, 5))
            .unwrap();
        let y = avg_pool2d(&x, 2).unwrap();
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [3., 5., 13., 15.]
        );
        assert_eq!(
            global_avg_pool(&x)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap(),
            [[12.0]]
        );
    }
}
