//! A whole DenseNet dense block as one op, forward and backward.
//!
//! Built from candle ops, a dense block concatenates its growing feature map after every layer
//! (layer `j` copies all `c0 + 32 j` channels again), and candle's backward then adds each
//! tensor's gradient into a fresh zero tensor, splits the concatenations' gradients back into
//! copies and sums them: most of DenseNet's time outside the convolutions went there. Here the
//! block owns one buffer of all its channels, each layer writes its 32 new channels into it, and
//! the backward accumulates the block's input gradient in place, layer by layer, in reverse
//! (the layout of memory-efficient DenseNet implementations, and like them recomputing the
//! BatchNorm-ReLU outputs in the backward instead of keeping them: see [`SavedLayer`]).
//!
//! The buffers are channel-major (`[C, N, H*W]`, see [`super::planes`]): a layer's input is the
//! buffer's first `c` channels, the batch statistics of a channel are computed once when it is
//! written (every later layer's first BatchNorm reads the same values), and the 1x1 bottleneck
//! convolution is one GEMM over all images, its weight gradient one GEMM with all images' positions
//! as its depth (per image, DenseNet's late 7x7 and 14x14 maps make small, slow GEMMs).
//!
//! The parameters arrive packed into one tensor (a custom op has at most three inputs), per layer
//! in the order of [`LayerParams`]; their gradients leave packed the same way.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::batchnorm::{affine_into, batch_stats, BatchStats, Normaliser};
use super::conv::{self, Geometry};
use super::gemm::{matmul, matmul_deep, parallelism, Matrix};
use super::planes::{reorder, Order, Planes, View};
use super::{
    for_overwrite, lock, split_packed, split_packed_mut, tensor, values, with_values, zeroed,
    Statistics,
};

/// A dense block: `layers` times BN-ReLU-conv1x1 (to `width` channels) then BN-ReLU-conv3x3
/// (to `growth` channels, appended to the block's features).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DenseBlockSpec {
    pub(crate) layers: usize,
    pub(crate) growth: usize,
    pub(crate) width: usize,
    pub(crate) eps: f64,
}

impl DenseBlockSpec {
    /// Parameter lengths of a layer with `c_in` input channels, in packing order.
    fn param_lens(&self, c_in: usize) -> [usize; 6] {
        let (w, g) = (self.width, self.growth);
        [c_in, c_in, w * c_in, w, w, g * w * 9]
    }

    /// Where each layer's parameters start in the packed tensor, and its total length.
    fn param_offsets(&self, c0: usize) -> (Vec<usize>, usize) {
        let mut offsets = Vec::with_capacity(self.layers);
        let mut end = 0;
        for j in 0..self.layers {
            offsets.push(end);
            end += self.param_lens(c0 + j * self.growth).iter().sum::<usize>();
        }
        (offsets, end)
    }
}

/// One layer's parameters (or their gradients), cut from the packed tensor.
struct LayerParams<T> {
    norm1_weight: T,
    norm1_bias: T,
    conv1: T,
    norm2_weight: T,
    norm2_bias: T,
    conv2: T,
}

impl<T> From<[T; 6]> for LayerParams<T> {
    fn from([norm1_weight, norm1_bias, conv1, norm2_weight, norm2_bias, conv2]: [T; 6]) -> Self {
        Self {
            norm1_weight,
            norm1_bias,
            conv1,
            norm2_weight,
            norm2_bias,
            conv2,
        }
    }
}

/// What a layer's backward needs from its forward. Not the outputs of its BatchNorm-ReLUs
/// `relu(norm1(x))` and `relu(norm2(bottleneck))`: the first is the size of the layer's whole
/// input, so kept for every layer it would hold 290 MB in DenseNet121 at batch 8 (the second 140
/// MB), and the backward recomputes both from what is kept in one pass each, about what writing
/// and later reading them back costs. Peak memory went from 1066 to 683 MiB.
struct SavedLayer {
    norm1: Normaliser,
    /// The bottleneck (conv1's output), channel-major `[width, N, P]`.
    bottleneck: Vec<f32>,
    norm2: Normaliser,
}

/// The forward's buffers, kept for the backward.
struct Saved {
    /// All the block's channels, channel-major.
    features: Vec<f32>,
    layers: Vec<SavedLayer>,
}

/// The block's sizes for one input.
#[derive(Clone, Copy)]
struct Dims {
    images: usize,
    c0: usize,
    h: usize,
    w: usize,
}

impl Dims {
    fn of(x: &[usize]) -> candle_core::Result<Self> {
        match *x {
            [images, c0, h, w] => Ok(Self { images, c0, h, w }),
            _ => candle_core::bail!("dense block expects [N, C, H, W], got {x:?}"),
        }
    }

    fn planes(&self, channels: usize) -> Planes {
        Planes {
            images: self.images,
            channels,
            positions: self.h * self.w,
        }
    }

    /// The length of the last (widest) layer's input.
    fn widest_input(&self, spec: &DenseBlockSpec) -> usize {
        self.planes(self.c0 + spec.layers.saturating_sub(1) * spec.growth)
            .len()
    }

    /// Columns of a channel-major matrix: every image's positions.
    fn columns(&self) -> usize {
        self.images * self.h * self.w
    }
}

struct DenseBlockOp {
    spec: DenseBlockSpec,
    /// Of norm1, norm2 of each layer in turn.
    stats: Arc<Statistics>,
    saved: Mutex<Option<Saved>>,
}

impl DenseBlockOp {
    fn train(&self) -> bool {
        self.stats.train()
    }

    /// Runs layer `j`, appending its channels to `features` (and their batch statistics to
    /// `stats`, in train mode).
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        d: Dims,
        j: usize,
        p: &LayerParams<&[f32]>,
        features: &mut [f32],
        stats: &mut BatchStats,
        scratch: &mut Scratch,
    ) -> candle_core::Result<SavedLayer> {
        let spec = &self.spec;
        let c_in = d.c0 + j * spec.growth;
        let (s1, s2) = (d.planes(c_in), d.planes(spec.width));
        // Eval mode: the running statistics; train mode: the batch's, of norm1's input (cached
        // per channel in `stats`) and of the bottleneck.
        let running = |k: usize| self.stats.running(2 * j + k).cloned();
        let stats1 = running(0).unwrap_or_else(|| prefix(stats, c_in));
        let norm1 = Normaliser::new(&stats1, spec.eps);
        let y1 = &mut scratch.y1[..s1.len()];
        norm1_output(&norm1, p, &features[..s1.len()], s1, y1);

        // SAFETY: the GEMM below writes every value (it does not read its destination).
        let mut bottleneck = unsafe { for_overwrite(s2.len()) };
        let conv1 = Matrix::new(p.conv1, spec.width, c_in);
        let y1_matrix = Matrix::new(y1, c_in, d.columns());
        matmul(&mut bottleneck, conv1, y1_matrix, false, parallelism());

        let bottleneck_view = View::channel_major(&bottleneck);
        let stats2 = running(1).unwrap_or_else(|| batch_stats(bottleneck_view, s2));
        let norm2 = Normaliser::new(&stats2, spec.eps);
        if self.train() {
            self.stats.record(stats1, s1.count());
            self.stats.record(stats2, s2.count());
        }
        let y2 = &mut scratch.y2;
        norm2_output(&norm2, p, &bottleneck, s2, y2);
        let new = conv::forward(&self.conv2(d)?, y2, p.conv2, None);
        let s_new = d.planes(spec.growth);
        let slot = &mut features[s1.len()..][..s_new.len()];
        reorder(View::image_major(&new), s_new, slot, Order::ChannelMajor);
        if self.train() {
            let added = batch_stats(View::channel_major(slot), s_new);
            stats.mean.extend(added.mean);
            stats.var.extend(added.var);
        }
        Ok(SavedLayer {
            norm1,
            bottleneck,
            norm2,
        })
    }

    fn conv2(&self, d: Dims) -> candle_core::Result<Geometry> {
        let (s, k) = (self.spec, 3);
        Geometry::new(
            &[d.images, s.width, d.h, d.w],
            &[s.growth, s.width, k, k],
            1,
            1,
        )
    }

    /// Layer `j`'s backward: its parameters' gradients into `dp`, its input's gradient added to
    /// the first `c_in` channels of `grads` (channel-major, like `features`).
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        d: Dims,
        j: usize,
        p: &LayerParams<&[f32]>,
        dp: LayerParams<&mut [f32]>,
        saved: &SavedLayer,
        features: &[f32],
        grads: &mut [f32],
        scratch: &mut Scratch,
    ) -> candle_core::Result<()> {
        let spec = &self.spec;
        let c_in = d.c0 + j * spec.growth;
        let (s1, s2, s_new) = (d.planes(c_in), d.planes(spec.width), d.planes(spec.growth));
        let train = self.train();

        let d_new = &mut scratch.d_new[..s_new.len()];
        let slot = View::channel_major(&grads[s1.len()..][..s_new.len()]);
        reorder(slot, s_new, d_new, Order::ImageMajor);
        let conv2 = self.conv2(d)?;
        let d_y2 = conv::input_grad(&conv2, d_new, p.conv2);
        let y2 = &mut scratch.y2;
        norm2_output(&saved.norm2, p, &saved.bottleneck, s2, y2);
        dp.conv2
            .copy_from_slice(&conv::weight_grad(&conv2, y2, d_new));

        let d_bottleneck = &mut scratch.d_bottleneck[..s2.len()];
        let (dw, db) = saved.norm2.norm(p.norm2_weight, true, train).backward(
            View::channel_major(&saved.bottleneck),
            View::image_major(y2),
            View::image_major(&d_y2),
            s2,
            d_bottleneck,
            Order::ChannelMajor,
            false,
        );
        dp.norm2_weight.copy_from_slice(&dw);
        dp.norm2_bias.copy_from_slice(&db);

        let d_y1 = &mut scratch.d_y1[..s1.len()];
        let conv1 = Matrix::new(p.conv1, spec.width, c_in);
        let d_bottleneck = Matrix::new(d_bottleneck, spec.width, d.columns());
        matmul(d_y1, conv1.t(), d_bottleneck, false, parallelism());
        let y1 = &mut scratch.y1[..s1.len()];
        norm1_output(&saved.norm1, p, &features[..s1.len()], s1, y1);
        matmul_deep(
            dp.conv1,
            d_bottleneck,
            Matrix::new(y1, c_in, d.columns()).t(),
            false,
        );

        let (dw, db) = saved.norm1.norm(p.norm1_weight, true, train).backward(
            View::channel_major(&features[..s1.len()]),
            View::channel_major(y1),
            View::channel_major(d_y1),
            s1,
            &mut grads[..s1.len()],
            Order::ChannelMajor,
            true,
        );
        dp.norm1_weight.copy_from_slice(&dw);
        dp.norm1_bias.copy_from_slice(&db);
        Ok(())
    }
}

/// `relu(norm1(x))` of a layer's input `x` (channel-major) into `y1`.
fn norm1_output(
    norm1: &Normaliser,
    p: &LayerParams<&[f32]>,
    x: &[f32],
    planes: Planes,
    y1: &mut [f32],
) {
    let (scale, shift) = norm1.norm(p.norm1_weight, true, true).affine(p.norm1_bias);
    let x = View::channel_major(x);
    affine_into(x, planes, &scale, &shift, true, y1, Order::ChannelMajor);
}

/// `relu(norm2(bottleneck))` (channel-major) into `y2`, image-major: conv2's input.
fn norm2_output(
    norm2: &Normaliser,
    p: &LayerParams<&[f32]>,
    bottleneck: &[f32],
    planes: Planes,
    y2: &mut [f32],
) {
    let (scale, shift) = norm2.norm(p.norm2_weight, true, true).affine(p.norm2_bias);
    let x = View::channel_major(bottleneck);
    affine_into(x, planes, &scale, &shift, true, y2, Order::ImageMajor);
}

/// Buffers for one layer at a time, sized for the widest (the last): the BatchNorm-ReLU
/// outputs, and in the backward the gradients that stay inside a layer.
struct Scratch {
    y1: Vec<f32>,
    y2: Vec<f32>,
    d_y1: Vec<f32>,
    d_bottleneck: Vec<f32>,
    d_new: Vec<f32>,
}

impl Scratch {
    fn new(d: Dims, spec: &DenseBlockSpec, backward: bool) -> Self {
        let zeroed_if = |len| if backward { zeroed(len) } else { Vec::new() };
        Self {
            y1: zeroed(d.widest_input(spec)),
            y2: zeroed(d.planes(spec.width).len()),
            d_y1: zeroed_if(d.widest_input(spec)),
            d_bottleneck: zeroed_if(d.planes(spec.width).len()),
            d_new: zeroed_if(d.planes(spec.growth).len()),
        }
    }
}

/// The statistics of the first `channels` channels.
fn prefix(stats: &BatchStats, channels: usize) -> BatchStats {
    BatchStats {
        mean: stats.mean[..channels].to_vec(),
        var: stats.var[..channels].to_vec(),
    }
}

impl CustomOp2 for DenseBlockOp {
    fn name(&self) -> &'static str {
        "cxr-dense-block"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        params: &CpuStorage,
        p_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(x_layout.dims())?;
        let (x, params) = (values(x, x_layout)?, values(params, p_layout)?);
        let (offsets, len) = self.spec.param_offsets(d.c0);
        if params.len() != len {
            candle_core::bail!(
                "dense block: {} packed parameters, expected {len}",
                params.len()
            );
        }
        let total = d.c0 + self.spec.layers * self.spec.growth;
        let (s0, all) = (d.planes(d.c0), d.planes(total));
        // SAFETY: the input's channels are copied in below and every layer writes its new
        // channels before any later one reads them: each reads only the channels before its own.
        let mut features = unsafe { for_overwrite(all.len()) };
        reorder(View::image_major(x), s0, &mut features, Order::ChannelMajor);
        let mut stats = match self.train() {
            true => batch_stats(View::channel_major(&features[..s0.len()]), s0),
            false => BatchStats {
                mean: vec![],
                var: vec![],
            },
        };
        let mut layers = Vec::with_capacity(self.spec.layers);
        let mut scratch = Scratch::new(d, &self.spec, false);
        for (j, &offset) in offsets.iter().enumerate() {
            let lens = self.spec.param_lens(d.c0 + j * self.spec.growth);
            let p = LayerParams::from(split_packed(&params[offset..], lens));
            layers.push(self.layer_forward(d, j, &p, &mut features, &mut stats, &mut scratch)?);
        }
        // SAFETY: `reorder` writes every plane.
        let mut y = unsafe { for_overwrite(all.len()) };
        reorder(
            View::channel_major(&features),
            all,
            &mut y,
            Order::ImageMajor,
        );
        *lock(&self.saved) = Some(Saved { features, layers });
        Ok((CpuStorage::F32(y), Shape::from((d.images, total, d.h, d.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(x.dims())?;
        let all = Planes::of(y.dims())?;
        let saved = lock(&self.saved);
        let Some(saved) = saved.as_ref() else {
            candle_core::bail!("dense block: backward before forward")
        };
        // SAFETY: `reorder` writes every plane.
        let mut grads = unsafe { for_overwrite(all.len()) };
        with_values(dy, |dy| {
            reorder(View::image_major(dy), all, &mut grads, Order::ChannelMajor)
        })?;
        let (offsets, len) = self.spec.param_offsets(d.c0);
        let mut dparams = zeroed(len);
        let mut scratch = Scratch::new(d, &self.spec, true);
        with_values(params, |params| {
            for (j, &offset) in offsets.iter().enumerate().rev() {
                let lens = self.spec.param_lens(d.c0 + j * self.spec.growth);
                let p = LayerParams::from(split_packed(&params[offset..], lens));
                let dp = LayerParams::from(split_packed_mut(&mut dparams[offset..], lens));
                let layer = &saved.layers[j];
                let features = &saved.features;
                self.layer_backward(d, j, &p, dp, layer, features, &mut grads, &mut scratch)?;
            }
            Ok::<_, candle_core::Error>(())
        })??;
        let dx = if x.track_op() {
            let s0 = d.planes(d.c0);
            // SAFETY: `reorder` writes every plane.
            let mut dx = unsafe { for_overwrite(s0.len()) };
            reorder(View::channel_major(&grads), s0, &mut dx, Order::ImageMajor);
            Some(tensor(dx, x.shape())?)
        } else {
            None
        };
        Ok((dx, Some(tensor(dparams, len)?)))
    }
}

/// Runs a dense block on `x` (`[N, c0, H, W]`, f32 on the CPU) with `params` packed as
/// described in the module docs. `running` holds every BatchNorm's running statistics in eval
/// mode (norm1, norm2 of each layer in turn) and is `None` in train mode, where the batch
/// statistics come back in the same order, each with its values per channel.
pub(crate) fn dense_block(
    x: &Tensor,
    params: &Tensor,
    spec: DenseBlockSpec,
    running: Option<Vec<BatchStats>>,
) -> candle_core::Result<(Tensor, Vec<(BatchStats, usize)>)> {
    let stats = Statistics::new(running);
    let op = DenseBlockOp {
        spec,
        stats: Arc::clone(&stats),
        saved: Mutex::new(None),
    };
    let y = x.contiguous()?.apply_op2(&params.contiguous()?, op)?;
    Ok((y, stats.take()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::batchnorm::inverse_std;
    use crate::kernels::tests::assert_close;
    use crate::kernels::{batch_norm_eval, batch_norm_train, conv2d};
    use candle_core::{Device, Var};

    const SPEC: DenseBlockSpec = DenseBlockSpec {
        layers: 3,
        growth: 4,
        width: 8,
        eps: 1e-5,
    };

    /// One layer's parameters as variables, in packing order.
    fn layer_vars(c_in: usize) -> Vec<Var> {
        let dev = Device::Cpu;
        let (w, g) = (SPEC.width, SPEC.growth);
        let shapes: [&[usize]; 6] = [
            &[c_in],
            &[c_in],
            &[w, c_in, 1, 1],
            &[w],
            &[w],
            &[g, w, 3, 3],
        ];
        let means = [1f32, 0., 0., 1., 0., 0.];
        shapes
            .iter()
            .zip(means)
            .map(|(shape, mean)| Var::randn(mean, 0.5f32, *shape, &dev).unwrap())
            .collect()
    }

    /// Running statistics for eval mode: positive variances, non-zero means.
    fn running(channels: usize) -> BatchStats {
        BatchStats {
            mean: (0..channels).map(|c| 0.1 * c as f32 - 0.2).collect(),
            var: (0..channels).map(|c| 0.5 + 0.25 * c as f32).collect(),
        }
    }

    /// The block from the single-layer kernels and candle's concatenation.
    fn composed(
        x: &Tensor,
        vars: &[Vec<Var>],
        eval: Option<&[BatchStats]>,
    ) -> (Tensor, Vec<BatchStats>) {
        let mut x = x.clone();
        let mut stats = Vec::new();
        for (j, v) in vars.iter().enumerate() {
            let v: Vec<&Tensor> = v.iter().map(|v| v.as_tensor()).collect();
            let norm =
                |x: &Tensor, w: &Tensor, b: &Tensor, k: usize, stats: &mut Vec<BatchStats>| {
                    match eval {
                        None => {
                            let (y, s) = batch_norm_train(x, w, b, SPEC.eps, true).unwrap();
                            stats.push(s);
                            y
                        }
                        Some(running) => {
                            let r = &running[2 * j + k];
                            let n = r.mean.len();
                            let invstd =
                                Tensor::new(inverse_std(&r.var, SPEC.eps), &Device::Cpu).unwrap();
                            let alpha = w.mul(&invstd).unwrap();
                            let mean = Tensor::new(r.mean.as_slice(), &Device::Cpu).unwrap();
                            let beta = b.sub(&mean.mul(&alpha).unwrap()).unwrap();
                            assert_eq!(alpha.dims(), [n]);
                            batch_norm_eval(x, &alpha, &beta, true).unwrap()
                        }
                    }
                };
            let y1 = norm(&x, v[0], v[1], 0, &mut stats);
            let bottleneck = conv2d(&y1, v[2], 1, 0).unwrap();
            let y2 = norm(&bottleneck, v[3], v[4], 1, &mut stats);
            let new = conv2d(&y2, v[5], 1, 1).unwrap();
            x = Tensor::cat(&[&x, &new], 1).unwrap();
        }
        (x, stats)
    }

    /// Output, input gradient, every parameter gradient and the batch statistics of the fused
    /// block agree with the composed one, in train and eval mode.
    #[test]
    fn matches_the_composed_block() {
        let dev = Device::Cpu;
        let (n, c0, h, w) = (3, 5, 6, 7);
        let x = Var::randn(0.3f32, 1.5f32, (n, c0, h, w), &dev).unwrap();
        let vars: Vec<Vec<Var>> = (0..SPEC.layers)
            .map(|j| layer_vars(c0 + j * SPEC.growth))
            .collect();
        let total = c0 + SPEC.layers * SPEC.growth;
        let mix = Tensor::randn(0f32, 1f32, (n, total, h, w), &dev).unwrap();
        let running: Vec<BatchStats> = (0..SPEC.layers)
            .flat_map(|j| [running(c0 + j * SPEC.growth), running(SPEC.width)])
            .collect();
        for eval in [false, true] {
            let eval_stats = eval.then_some(running.as_slice());
            let packed = Tensor::cat(
                &vars
                    .iter()
                    .flatten()
                    .map(|v| v.as_tensor().flatten_all().unwrap())
                    .collect::<Vec<_>>(),
                0,
            )
            .unwrap();
            let (got, got_stats) =
                dense_block(x.as_tensor(), &packed, SPEC, eval_stats.map(|r| r.to_vec())).unwrap();
            let (want, want_stats) = composed(x.as_tensor(), &vars, eval_stats);
            assert_close(&got, &want, 1e-5, &format!("eval {eval}: y"));
            assert_eq!(got_stats.len(), want_stats.len());
            for ((got, count), want) in got_stats.iter().zip(&want_stats) {
                assert_eq!(
                    (&got.mean, &got.var),
                    (&want.mean, &want.var),
                    "batch statistics"
                );
                assert_eq!(*count, n * h * w, "values per channel");
            }
            let grads = |y: &Tensor| (y * &mix).unwrap().sum_all().unwrap().backward().unwrap();
            let (gg, gw) = (grads(&got), grads(&want));
            let what = |t: &Tensor, name: String| {
                assert_close(
                    gg.get(t).unwrap(),
                    gw.get(t).unwrap(),
                    1e-4,
                    &format!("eval {eval}: {name}"),
                )
            };
            what(x.as_tensor(), "dx".into());
            for (j, v) in vars.iter().enumerate() {
                for (k, v) in v.iter().enumerate() {
                    what(v.as_tensor(), format!("layer {j} parameter {k}"));
                }
            }
        }
    }
}
