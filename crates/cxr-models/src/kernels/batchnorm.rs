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

use std::ops::Range;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{tensor, values, with_values, MIN_PARALLEL_LEN};

/// `[N, C, H, W]` as images, channels and positions per plane.
#[derive(Clone, Copy, Debug)]
struct Planes {
    images: usize,
    channels: usize,
    positions: usize,
}

impl Planes {
    fn of(dims: &[usize]) -> candle_core::Result<Self> {
        match *dims {
            [images, channels, h, w] => Ok(Self {
                images,
                channels,
                positions: h * w,
            }),
            _ => candle_core::bail!("BatchNorm expects [N, C, H, W], got {dims:?}"),
        }
    }

    /// Values per channel.
    fn count(&self) -> usize {
        self.images * self.positions
    }

    /// Flat index ranges of channel `c`'s plane in every image.
    fn of_channel(&self, c: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.images).map(move |i| {
            let start = (i * self.channels + c) * self.positions;
            start..start + self.positions
        })
    }

    /// Applies `f(channel, plane offset, plane)` to every plane of `out`, in parallel.
    fn map(&self, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let p = self.positions;
        out.par_chunks_mut(p)
            .enumerate()
            .with_min_len(MIN_PARALLEL_LEN.div_ceil(p))
            .for_each(|(plane, o)| f(plane % self.channels, plane * p, o));
    }

    /// `f(channel)` for every channel, in parallel.
    fn per_channel<R: Send>(&self, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
        (0..self.channels).into_par_iter().map(f).collect()
    }
}

/// Batch mean and biased variance per channel (what train mode normalises with).
#[derive(Clone, Debug)]
pub(crate) struct BatchStats {
    pub(crate) mean: Vec<f32>,
    pub(crate) var: Vec<f32>,
}

fn batch_stats(x: &[f32], s: Planes) -> BatchStats {
    let count = s.count() as f64;
    let (mean, var) = s
        .per_channel(|c| {
            let sum: f64 = s.of_channel(c).map(|r| sum_f64(&x[r])).sum();
            let mean = sum / count;
            let sq: f64 = s
                .of_channel(c)
                .map(|r| x[r].iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                .sum();
            (mean as f32, (sq / count) as f32)
        })
        .into_iter()
        .unzip();
    BatchStats { mean, var }
}

fn sum_f64(values: &[f32]) -> f64 {
    values.iter().map(|&v| v as f64).sum()
}

/// `y = relu?(x * scale[c] + shift[c])`.
fn affine(x: &[f32], s: Planes, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    s.map(&mut y, |c, offset, out| {
        let (a, b) = (scale[c], shift[c]);
        let src = &x[offset..][..out.len()];
        if relu {
            out.iter_mut()
                .zip(src)
                .for_each(|(o, &v)| *o = (v * a + b).max(0.0));
        } else {
            out.iter_mut().zip(src).for_each(|(o, &v)| *o = v * a + b);
        }
    });
    y
}

/// The gradient reaching the affine map: `dy`, zeroed where the fused ReLU clipped.
fn masked(dy: f32, y: f32, relu: bool) -> f32 {
    if relu && y <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// Per channel: `Σ g` and `Σ g * (x - centre[c])`, over images and positions.
fn grad_sums(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    s: Planes,
    centre: &[f32],
    relu: bool,
) -> Vec<(f64, f64)> {
    s.per_channel(|c| {
        let mut sums = (0f64, 0f64);
        for r in s.of_channel(c) {
            let (mut g_sum, mut gx_sum) = (0f32, 0f32);
            for ((&x, &y), &dy) in x[r.clone()].iter().zip(&y[r.clone()]).zip(&dy[r]) {
                let g = masked(dy, y, relu);
                g_sum += g;
                gx_sum += g * (x - centre[c]);
            }
            // f32 within a plane, f64 across planes and images.
            sums.0 += g_sum as f64;
            sums.1 += gx_sum as f64;
        }
        sums
    })
}

/// Train-mode forward op; holds the batch statistics its backward needs.
struct TrainOp {
    mean: Arc<Vec<f32>>,
    invstd: Arc<Vec<f32>>,
    relu: bool,
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
        let scale: Vec<f32> = weight
            .iter()
            .zip(self.invstd.iter())
            .map(|(w, i)| w * i)
            .collect();
        let shift: Vec<f32> = (0..s.channels)
            .map(|c| bias[c] - self.mean[c] * scale[c])
            .collect();
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
        let s = Planes::of(x.dims())?;
        let weight = weight.to_vec1::<f32>()?;
        let (dx, sums) = with_values(x, |x| {
            with_values(y, |y| {
                with_values(dy, |dy| self.input_grad(x, y, dy, s, &weight))
            })
        })???;
        let dweight = sums
            .iter()
            .zip(self.invstd.iter())
            .map(|(&(_, gx), &i)| (gx * i as f64) as f32);
        let dbias = sums.iter().map(|&(g, _)| g as f32);
        Ok((
            Some(tensor(dx, x.shape())?),
            Some(tensor(dweight.collect(), s.channels)?),
            Some(tensor(dbias.collect(), s.channels)?),
        ))
    }
}

impl TrainOp {
    /// `dx`, and the per-channel sums the parameter gradients are made of.
    fn input_grad(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        s: Planes,
        weight: &[f32],
    ) -> (Vec<f32>, Vec<(f64, f64)>) {
        let sums = grad_sums(x, y, dy, s, &self.mean, self.relu);
        let m = s.count() as f64;
        // dx = k_g * (g - mean_g) + k_x * (x - mean), per channel.
        let coefs: Vec<(f32, f32, f32)> = (0..s.channels)
            .map(|c| {
                let invstd = self.invstd[c] as f64;
                let k_g = weight[c] as f64 * invstd;
                let k_x = -k_g * invstd * invstd * sums[c].1 / m;
                (k_g as f32, (sums[c].0 / m) as f32, k_x as f32)
            })
            .collect();
        let mut dx = vec![0f32; x.len()];
        s.map(&mut dx, |c, offset, out| {
            let (k_g, mean_g, k_x) = coefs[c];
            let mean = self.mean[c];
            let n = out.len();
            let src = x[offset..][..n]
                .iter()
                .zip(&y[offset..][..n])
                .zip(&dy[offset..][..n]);
            for (o, ((&x, &y), &dy)) in out.iter_mut().zip(src) {
                *o = k_g * (masked(dy, y, self.relu) - mean_g) + k_x * (x - mean);
            }
        });
        (dx, sums)
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
    let stats = with_values(&x, |v| batch_stats(v, s))?;
    let invstd = stats
        .var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    let op = TrainOp {
        mean: Arc::new(stats.mean.clone()),
        invstd: Arc::new(invstd),
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
        let s = Planes::of(x.dims())?;
        let alpha = alpha.to_vec1::<f32>()?;
        let relu = self.relu;
        let (dx, sums) = with_values(x, |x| {
            with_values(y, |y| {
                with_values(dy, |dy| {
                    let zeros = vec![0f32; s.channels];
                    let sums = grad_sums(x, y, dy, s, &zeros, relu);
                    let mut dx = vec![0f32; x.len()];
                    s.map(&mut dx, |c, offset, out| {
                        let n = out.len();
                        let src = y[offset..][..n].iter().zip(&dy[offset..][..n]);
                        for (o, (&y, &dy)) in out.iter_mut().zip(src) {
                            *o = masked(dy, y, relu) * alpha[c];
                        }
                    });
                    (dx, sums)
                })
            })
        })???;
        let dalpha = sums.iter().map(|&(_, gx)| gx as f32).collect();
        let dbeta = sums.iter().map(|&(g, _)| g as f32).collect();
        Ok((
            Some(tensor(dx, x.shape())?),
            Some(tensor(dalpha, s.channels)?),
            Some(tensor(dbeta, s.channels)?),
        ))
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
}
