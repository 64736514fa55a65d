//! BatchNorm (with an optional fused ReLU) in two passes forward and two backward.
//!
//! Train mode: one parallel-over-channels pass for the batch mean and variance (accumulated in
//! f64), one parallel-over-planes pass for `y = relu?(x * a + b)`. Backward, with
//! `g = dy * [y > 0]` (the ReLU's mask read off the output), `x̂ = (x - mean) * invstd` and
//! `M = N * H * W`: one pass for `Σg` and `Σg (x - mean)` per channel, which are also the bias
//! and weight gradients (the latter times `invstd`), and one for
//! `dx = w invstd (g - Σg / M) - w invstd³ Σg(x - mean) / M * (x - mean)`.
//!
//! Eval mode is an affine map per channel, `y = relu?(x * alpha + beta)`, with `alpha` and
//! `beta` computed by candle from the parameters and running statistics (so their gradients
//! flow on through candle's autograd).
//!
//! The slice functions read and write `[N, C, P]` tensors in either plane order
//! ([`super::planes`]), for the dense block's channel-major buffers.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::planes::{Order, Planes, View};
use super::{for_overwrite, tensor, values, vectorized, with_values};

/// Batch mean and biased variance per channel (what train mode normalises with).
#[derive(Clone, Debug)]
pub(crate) struct BatchStats {
    pub(crate) mean: Vec<f32>,
    pub(crate) var: Vec<f32>,
}

pub(super) fn batch_stats(x: View, s: Planes) -> BatchStats {
    let count = s.count() as f64;
    let (mean, var) = s
        .per_channel(|c| {
            let sum: f64 = x.channel(s, c).map(|plane| lane_sum(plane, |v| v)).sum();
            let mean = (sum / count) as f32;
            let squares = x
                .channel(s, c)
                .map(|plane| lane_sum(plane, |v| (v - mean).powi(2)));
            (mean, (squares.sum::<f64>() / count) as f32)
        })
        .into_iter()
        .unzip();
    BatchStats { mean, var }
}

/// Independent partial sums per plane: a single running sum is a chain of dependent additions
/// that the compiler must keep in order (no SIMD, one add every few cycles), and the
/// reductions were most of BatchNorm's time; 16 lanes vectorise.
const LANES: usize = 16;

vectorized! {
    /// `Σ f(v)` over `values`: f32 within each lane, f64 across lanes (and, by the callers,
    /// across planes).
    fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
        let mut lanes = [0f32; LANES];
        let chunks = values.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += f(v);
            }
        }
        lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
    }
}

/// `1 / sqrt(var + eps)` per channel.
pub(super) fn inverse_std(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect()
}

/// A BatchNorm's per-channel constants: `y = relu?((x - mean) * invstd * weight + bias)`.
pub(super) struct Norm<'a> {
    pub(super) mean: &'a [f32],
    pub(super) invstd: &'a [f32],
    pub(super) weight: &'a [f32],
    pub(super) relu: bool,
    /// Whether `mean` and `invstd` are the batch's own (train mode), so that the backward
    /// differentiates through them; otherwise they are constants (eval mode).
    pub(super) batch: bool,
}

impl Norm<'_> {
    /// `(scale, shift)` with `y = relu?(x * scale + shift)`.
    pub(super) fn affine(&self, bias: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self
            .weight
            .iter()
            .zip(self.invstd)
            .map(|(w, i)| w * i)
            .collect();
        let shift = (0..scale.len())
            .map(|c| bias[c] - self.mean[c] * scale[c])
            .collect();
        (scale, shift)
    }

    /// `dx` into `dx` (laid out in `dx_order`; added to what is there with `accumulate`), and
    /// the weight and bias gradients.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        x: View,
        y: View,
        dy: View,
        s: Planes,
        dx: &mut [f32],
        dx_order: Order,
        accumulate: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let sums = grad_sums(x, y, dy, s, self.mean, self.relu);
        let m = s.count() as f64;
        // dx = k_g * (g - mean_g) + k_x * (x - mean), per channel.
        let coefs: Vec<(f32, f32, f32)> = (0..s.channels)
            .map(|c| {
                let invstd = self.invstd[c] as f64;
                let k_g = self.weight[c] as f64 * invstd;
                if !self.batch {
                    return (k_g as f32, 0.0, 0.0);
                }
                let k_x = -k_g * invstd * invstd * sums[c].1 / m;
                (k_g as f32, (sums[c].0 / m) as f32, k_x as f32)
            })
            .collect();
        s.map(dx, dx_order, |image, c, out| {
            let (k_g, mean_g, k_x) = coefs[c];
            let coefs = GradCoefs {
                k_g,
                mean_g,
                k_x,
                mean: self.mean[c],
                relu: self.relu,
            };
            let [x, y, dy] = [x, y, dy].map(|v| v.plane(s, image, c));
            plane_input_grad(out, x, y, dy, coefs, accumulate);
        });
        let dweight = sums.iter().zip(self.invstd);
        let dweight = dweight.map(|(&(_, gx), &i)| (gx * i as f64) as f32);
        (
            dweight.collect(),
            sums.iter().map(|&(g, _)| g as f32).collect(),
        )
    }
}

/// Mean and `1 / sqrt(var + eps)` of one BatchNorm.
pub(super) struct Normaliser {
    pub(super) mean: Vec<f32>,
    pub(super) invstd: Vec<f32>,
}

impl Normaliser {
    pub(super) fn new(stats: &BatchStats, eps: f64) -> Self {
        Self {
            mean: stats.mean.clone(),
            invstd: inverse_std(&stats.var, eps),
        }
    }

    /// The norm with these statistics and `weight`: `batch` if they are the batch's own.
    pub(super) fn norm<'a>(&'a self, weight: &'a [f32], relu: bool, batch: bool) -> Norm<'a> {
        Norm {
            mean: &self.mean,
            invstd: &self.invstd,
            weight,
            relu,
            batch,
        }
    }
}

/// `y = relu?(x * scale[c] + shift[c])` into `out`, laid out in `order`.
#[allow(clippy::too_many_arguments)]
pub(super) fn affine_into(
    x: View,
    s: Planes,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    out: &mut [f32],
    order: Order,
) {
    s.map(out, order, |image, c, out| {
        affine_plane(out, x.plane(s, image, c), scale[c], shift[c], relu)
    });
}

vectorized! {
    /// `out = relu?(src * a + b)`.
    fn affine_plane(out: &mut [f32], src: &[f32], a: f32, b: f32, relu: bool) {
        if relu {
            out.iter_mut()
                .zip(src)
                .for_each(|(o, &v)| *o = (v * a + b).max(0.0));
        } else {
            out.iter_mut().zip(src).for_each(|(o, &v)| *o = v * a + b);
        }
    }
}

/// [`affine_into`] a new image-major tensor.
fn affine(x: &[f32], s: Planes, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    // SAFETY: `affine_into` writes every plane of `y`.
    let mut y = unsafe { for_overwrite(x.len()) };
    let x = View::image_major(x);
    affine_into(x, s, scale, shift, relu, &mut y, Order::ImageMajor);
    y
}

/// The gradient reaching the affine map: `dy`, zeroed where the fused ReLU clipped.
#[inline(always)]
fn masked(dy: f32, y: f32, relu: bool) -> f32 {
    if relu && y <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// Per channel: `Σ g` and `Σ g * (x - centre[c])`, over images and positions.
fn grad_sums(x: View, y: View, dy: View, s: Planes, centre: &[f32], relu: bool) -> Vec<(f64, f64)> {
    s.per_channel(|c| {
        let planes = (0..s.images).map(|i| {
            let [x, y, dy] = [x, y, dy].map(|v| v.plane(s, i, c));
            plane_grad_sums(x, y, dy, centre[c], relu)
        });
        planes.fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

vectorized! {
    /// `Σ g` and `Σ g * (x - centre)` over one plane, in [`LANES`] lanes.
    fn plane_grad_sums(x: &[f32], y: &[f32], dy: &[f32], centre: f32, relu: bool) -> (f64, f64) {
        let (mut g_lanes, mut gx_lanes) = ([0f32; LANES], [0f32; LANES]);
        let whole = x.len() / LANES * LANES;
        let xs = x[..whole].chunks_exact(LANES);
        let chunks = xs
            .zip(y[..whole].chunks_exact(LANES))
            .zip(dy[..whole].chunks_exact(LANES));
        for ((x, y), dy) in chunks {
            for i in 0..LANES {
                let g = masked(dy[i], y[i], relu);
                g_lanes[i] += g;
                gx_lanes[i] += g * (x[i] - centre);
            }
        }
        let total = |lanes: [f32; LANES]| lanes.iter().map(|&l| l as f64).sum::<f64>();
        let (mut g_sum, mut gx_sum) = (total(g_lanes), total(gx_lanes));
        for i in whole..x.len() {
            let g = masked(dy[i], y[i], relu);
            g_sum += g as f64;
            gx_sum += (g * (x[i] - centre)) as f64;
        }
        (g_sum, gx_sum)
    }
}

/// One plane's `dx = k_g (g - mean_g) + k_x (x - mean)` (see [`Norm::backward`]).
#[derive(Clone, Copy)]
struct GradCoefs {
    k_g: f32,
    mean_g: f32,
    k_x: f32,
    mean: f32,
    relu: bool,
}

vectorized! {
    /// One plane's input gradient, written to `out` or added to it.
    fn plane_input_grad(
        out: &mut [f32],
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        k: GradCoefs,
        accumulate: bool,
    ) {
        let src = x.iter().zip(y).zip(dy);
        let grads = src.map(|((&x, &y), &dy)| {
            k.k_g * (masked(dy, y, k.relu) - k.mean_g) + k.k_x * (x - k.mean)
        });
        if accumulate {
            out.iter_mut().zip(grads).for_each(|(o, d)| *o += d);
        } else {
            out.iter_mut().zip(grads).for_each(|(o, d)| *o = d);
        }
    }
}

/// The backward of a BatchNorm op whose inputs and output are candle tensors (image-major).
fn backward_op(
    norm: &Norm,
    x: &Tensor,
    y: &Tensor,
    dy: &Tensor,
) -> candle_core::Result<[Tensor; 3]> {
    let s = Planes::of(x.dims())?;
    let (dx, dweight, dbias) = with_values(x, |x| {
        with_values(y, |y| {
            with_values(dy, |dy| {
                // SAFETY: the backward writes every plane of `dx` (it does not accumulate).
                let mut dx = unsafe { for_overwrite(x.len()) };
                let views = [x, y, dy].map(View::image_major);
                let (dw, db) = norm.backward(
                    views[0],
                    views[1],
                    views[2],
                    s,
                    &mut dx,
                    Order::ImageMajor,
                    false,
                );
                (dx, dw, db)
            })
        })
    })???;
    Ok([
        tensor(dx, x.shape())?,
        tensor(dweight, s.channels)?,
        tensor(dbias, s.channels)?,
    ])
}

/// Train-mode forward op; holds the batch statistics its backward needs.
struct TrainOp {
    mean: Arc<Vec<f32>>,
    invstd: Arc<Vec<f32>>,
    relu: bool,
}

impl TrainOp {
    fn norm<'a>(&'a self, weight: &'a [f32]) -> Norm<'a> {
        Norm {
            mean: &self.mean,
            invstd: &self.invstd,
            weight,
            relu: self.relu,
            batch: true,
        }
    }
}

impl CustomOp3 for TrainOp {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        w_layout: &Layout,
        bias: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = Planes::of(x_layout.dims())?;
        let (weight, bias) = (values(weight, w_layout)?, values(bias, b_layout)?);
        let (scale, shift) = self.norm(weight).affine(bias);
        let y = affine(values(x, x_layout)?, s, &scale, &shift, self.relu);
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let weight = weight.to_vec1::<f32>()?;
        let [dx, dweight, dbias] = backward_op(&self.norm(&weight), x, y, dy)?;
        Ok((Some(dx), Some(dweight), Some(dbias)))
    }
}

/// Normalises `x` with its batch statistics, `y = relu?((x - mean) / sqrt(var + eps) * weight
/// + bias)`, and returns the statistics for the running averages.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> candle_core::Result<(Tensor, BatchStats)> {
    let x = x.contiguous()?;
    let s = Planes::of(x.dims())?;
    let stats = with_values(&x, |v| batch_stats(View::image_major(v), s))?;
    let op = TrainOp {
        invstd: Arc::new(inverse_std(&stats.var, eps)),
        mean: Arc::new(stats.mean.clone()),
        relu,
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, stats))
}

/// Eval-mode op: a per-channel affine map.
struct AffineOp {
    relu: bool,
}

impl CustomOp3 for AffineOp {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        alpha: &CpuStorage,
        a_layout: &Layout,
        beta: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = Planes::of(x_layout.dims())?;
        let (alpha, beta) = (values(alpha, a_layout)?, values(beta, b_layout)?);
        let y = affine(values(x, x_layout)?, s, alpha, beta, self.relu);
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // `x * alpha + beta` is a norm with mean 0, invstd 1 and weight alpha, constants.
        let alpha = alpha.to_vec1::<f32>()?;
        let (zeros, ones) = (vec![0f32; alpha.len()], vec![1f32; alpha.len()]);
        let norm = Norm {
            mean: &zeros,
            invstd: &ones,
            weight: &alpha,
            relu: self.relu,
            batch: false,
        };
        let [dx, dalpha, dbeta] = backward_op(&norm, x, y, dy)?;
        Ok((Some(dx), Some(dalpha), Some(dbeta)))
    }
}

/// `y = relu?(x * alpha[c] + beta[c])` for `[N, C, H, W]` inputs and `[C]` coefficients.
pub(crate) fn batch_norm_eval(
    x: &Tensor,
    alpha: &Tensor,
    beta: &Tensor,
    relu: bool,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&alpha.contiguous()?, &beta.contiguous()?, AffineOp { relu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::assert_close;
    use candle_core::{Device, Var};

    /// BatchNorm from candle's ops: the reference for values and gradients.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Tensor {
        let c = x.dim(1).unwrap();
        let per_channel = (1, c, 1, 1);
        let count = (x.elem_count() / c) as f64;
        let mean = (x.sum_keepdim((0, 2, 3)).unwrap() / count).unwrap();
        let centred = x.broadcast_sub(&mean).unwrap();
        let var = (centred.sqr().unwrap().sum_keepdim((0, 2, 3)).unwrap() / count).unwrap();
        let scale = w
            .reshape(per_channel)
            .unwrap()
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap();
        affine(&centred, &scale, b, relu)
    }

    /// `x * scale + shift` per channel (`scale` `[1, C, 1, 1]` or `[C]`, `shift` `[C]`), then
    /// ReLU if asked.
    fn affine(x: &Tensor, scale: &Tensor, shift: &Tensor, relu: bool) -> Tensor {
        let per_channel = (1, x.dim(1).unwrap(), 1, 1);
        let y = x
            .broadcast_mul(&scale.reshape(per_channel).unwrap())
            .unwrap()
            .broadcast_add(&shift.reshape(per_channel).unwrap())
            .unwrap();
        if relu {
            y.relu().unwrap()
        } else {
            y
        }
    }

    /// Output, then the gradients of `sum(y * mix)` for `x`, `w`, `b`.
    fn run(
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        vars: &[Var; 3],
        mix: &Tensor,
    ) -> Vec<Tensor> {
        let [x, w, b] = vars.each_ref().map(|v| v.as_tensor());
        let y = f(x, w, b);
        let grads = (&y * mix).unwrap().sum_all().unwrap().backward().unwrap();
        let mut out = vec![y];
        out.extend([x, w, b].map(|t| grads.get(t).unwrap().clone()));
        out
    }

    fn vars(shape: (usize, usize, usize, usize)) -> ([Var; 3], Tensor) {
        let dev = Device::Cpu;
        let c = shape.1;
        let x = Var::randn(0.5f32, 2f32, shape, &dev).unwrap();
        let w = Var::randn(1f32, 0.5f32, c, &dev).unwrap();
        let b = Var::randn(0f32, 0.5f32, c, &dev).unwrap();
        let mix = Tensor::randn(0f32, 1f32, shape, &dev).unwrap();
        ([x, w, b], mix)
    }

    #[test]
    fn train_mode_matches_candle_values_gradients_and_statistics() {
        for shape in [(2, 3, 5, 7), (1, 4, 3, 3), (4, 2, 1, 1), (3, 5, 8, 6)] {
            for relu in [false, true] {
                let (vars, mix) = vars(shape);
                let fast = |x: &Tensor, w: &Tensor, b: &Tensor| {
                    batch_norm_train(x, w, b, 1e-5, relu).unwrap().0
                };
                let got = run(fast, &vars, &mix);
                let want = run(|x, w, b| reference(x, w, b, relu), &vars, &mix);
                for (i, what) in ["y", "dx", "dweight", "dbias"].iter().enumerate() {
                    assert_close(
                        &got[i],
                        &want[i],
                        1e-5,
                        &format!("{shape:?} relu {relu}: {what}"),
                    );
                }
                let x = vars[0].as_tensor();
                let stats =
                    batch_norm_train(x, vars[1].as_tensor(), vars[2].as_tensor(), 1e-5, relu)
                        .unwrap()
                        .1;
                let mean = x.mean_keepdim((0, 2, 3)).unwrap();
                let var = x
                    .broadcast_sub(&mean)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .mean((0, 2, 3))
                    .unwrap();
                let as_tensor = |v: Vec<f32>| Tensor::new(v, &Device::Cpu).unwrap();
                assert_close(
                    &as_tensor(stats.mean),
                    &mean.flatten_all().unwrap(),
                    1e-6,
                    "mean",
                );
                assert_close(&as_tensor(stats.var), &var, 1e-6, "var");
            }
        }
    }

    #[test]
    fn eval_mode_matches_candle_values_and_gradients() {
        for relu in [false, true] {
            let (vars, mix) = vars((3, 4, 5, 2));
            let fast = |x: &Tensor, a: &Tensor, b: &Tensor| batch_norm_eval(x, a, b, relu).unwrap();
            let slow = |x: &Tensor, a: &Tensor, b: &Tensor| affine(x, a, b, relu);
            let (got, want) = (run(fast, &vars, &mix), run(slow, &vars, &mix));
            for (i, what) in ["y", "dx", "dalpha", "dbeta"].iter().enumerate() {
                assert_close(&got[i], &want[i], 1e-5, &format!("relu {relu}: {what}"));
            }
        }
    }

    /// The vectorised passes give the baseline's bits in every variant the CPU runs (a plane
    /// length that leaves a tail after the lanes, ReLU on and off).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_vector_variant_gives_the_same_bits() {
        use crate::kernels::simd::{assert_same_in_every_variant as same, bits};
        let [x, y, dy] = crate::kernels::simd::test_planes();
        same("lane_sum", || lane_sum(&x, |v| (v - 0.3).powi(2)).to_bits());
        for relu in [false, true] {
            same("plane_grad_sums", || {
                let (g, gx) = plane_grad_sums(&x, &y, &dy, 0.1, relu);
                (g.to_bits(), gx.to_bits())
            });
            same("affine_plane", || {
                let mut out = vec![0f32; x.len()];
                affine_plane(&mut out, &x, 1.5, -0.25, relu);
                bits(&out)
            });
            let k = GradCoefs {
                k_g: 0.7,
                mean_g: 0.05,
                k_x: -0.3,
                mean: 0.2,
                relu,
            };
            for accumulate in [false, true] {
                same("plane_input_grad", || {
                    let mut out = y.clone();
                    plane_input_grad(&mut out, &x, &y, &dy, k, accumulate);
                    bits(&out)
                });
            }
        }
    }
}
