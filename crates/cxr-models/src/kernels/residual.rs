//! A chain of whole ResNet blocks (basic or bottleneck; a stage of the network) as one op,
//! forward and backward.
//!
//! Built from candle ops, a bottleneck is eleven tensors, and candle's backward adds the
//! gradient of every one of them into a fresh zero tensor before using it; the residual join
//! then hands the same gradient to both branches as two more such sums. Here the block runs the
//! same kernels (convolutions, BatchNorm with its ReLU) on plain buffers: every gradient is
//! written once where it is used, the last BatchNorm, the projection's BatchNorm, the sum and
//! the ReLU are one pass forward, and the block's output gradient is masked once for both
//! branches. A whole stage is one op because candle's backward also adds the gradient of every
//! op's input into a fresh zero tensor: between blocks that was a zeroing and a sum of an
//! activation-sized buffer, about 5% of a ResNet50 training step.
//!
//! The parameters arrive packed into one tensor (a custom op has at most three inputs): block by
//! block, for each convolution of the path, then the projection if any, its weight and its
//! BatchNorm's weight and bias; their gradients leave packed the same way.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batchnorm::{affine_into, batch_stats, BatchStats, Normaliser};
use super::conv::{self, FrozenWeights, Geometry};
use super::planes::{Order, Planes, View};
use super::{
    for_overwrite, lock, split_packed, split_packed_mut, tensor, values, vectorized, with_values,
    zeroed, Statistics, MIN_PARALLEL_LEN,
};
use crate::layers::ConvSpec;

/// A residual block: `path` convolutions, each followed by BatchNorm and (except the last) a
/// ReLU, added to the input or to its projection (`downsample`), then a ReLU.
#[derive(Clone, Debug)]
pub(crate) struct ResidualSpec {
    pub(crate) path: Vec<ConvSpec>,
    pub(crate) downsample: Option<ConvSpec>,
    pub(crate) eps: f64,
}

impl ResidualSpec {
    /// Every convolution: the path's, then the projection.
    fn convs(&self) -> impl Iterator<Item = &ConvSpec> {
        self.path.iter().chain(&self.downsample)
    }

    /// The packed parameters of each convolution: where they start, and (weight, BatchNorm)
    /// lengths.
    fn param_offsets(&self) -> (Vec<usize>, usize) {
        let mut offsets = Vec::new();
        let mut end = 0;
        for c in self.convs() {
            offsets.push(end);
            end += param_lens(c).iter().sum::<usize>();
        }
        (offsets, end)
    }
}

/// One convolution's parameters (or their gradients): weight, BatchNorm weight and bias.
struct ConvParams<T> {
    conv: T,
    bn_weight: T,
    bn_bias: T,
}

impl<T> From<[T; 3]> for ConvParams<T> {
    fn from([conv, bn_weight, bn_bias]: [T; 3]) -> Self {
        Self {
            conv,
            bn_weight,
            bn_bias,
        }
    }
}

/// The packed lengths of a convolution's weight and its BatchNorm's weight and bias.
fn param_lens(c: &ConvSpec) -> [usize; 3] {
    [c.c_out * c.c_in * c.kernel * c.kernel, c.c_out, c.c_out]
}

/// One convolution's geometry, output planes, and what its backward needs. Not its
/// activation `relu(norm(conv))` (the next convolution's input): the backward recomputes it, one
/// pass, from the kept output. Kept, the activations were 100 MB of ResNet50's 1.35 GB peak at
/// batch 8.
struct SavedConv {
    geometry: Geometry,
    planes: Planes,
    /// The convolution's output (its BatchNorm's input).
    conv: Vec<f32>,
    norm: Normaliser,
}

impl SavedConv {
    /// `relu(norm(conv))` with the BatchNorm's parameters `p`.
    fn activation(&self, p: &ConvParams<&[f32]>) -> Vec<f32> {
        let (scale, shift) = self.norm.norm(p.bn_weight, true, true).affine(p.bn_bias);
        // SAFETY: `affine_into` writes every plane of `y`.
        let mut y = unsafe { for_overwrite(self.conv.len()) };
        let conv = View::image_major(&self.conv);
        let order = Order::ImageMajor;
        affine_into(conv, self.planes, &scale, &shift, true, &mut y, order);
        y
    }
}

/// Block `k` of a chain: its spec, where its convolutions (their statistics and frozen weights)
/// start among the chain's, and which of the chain's packed parameters are its.
#[derive(Clone)]
struct Placed<'a> {
    spec: &'a ResidualSpec,
    first_conv: usize,
    params: std::ops::Range<usize>,
}

/// What the backward of one block keeps: its convolutions, and its input unless that is the
/// chain's (which candle keeps).
struct SavedBlock {
    convs: Vec<SavedConv>,
    input: Option<Vec<f32>>,
}

struct ResidualOp {
    blocks: Vec<ResidualSpec>,
    /// In the order of the convolutions, block by block.
    stats: Arc<Statistics>,
    saved: Mutex<Vec<SavedBlock>>,
    /// Per convolution, its weights kept across calls while they are frozen.
    frozen: Option<Arc<[FrozenWeights]>>,
}

impl ResidualOp {
    fn train(&self) -> bool {
        self.stats.train()
    }

    /// The blocks in order, and the length of the chain's packed parameters.
    fn placed(&self) -> (Vec<Placed<'_>>, usize) {
        let (mut first_conv, mut end) = (0, 0);
        let mut placed = Vec::with_capacity(self.blocks.len());
        for spec in &self.blocks {
            let start = end;
            end += spec.param_offsets().1;
            placed.push(Placed {
                spec,
                first_conv,
                params: start..end,
            });
            first_conv += spec.convs().count();
        }
        (placed, end)
    }

    /// Convolution `i` of block `b` and its BatchNorm statistics.
    fn conv_bn(
        &self,
        b: &Placed,
        i: usize,
        x: &[f32],
        x_dims: [usize; 4],
        p: &ConvParams<&[f32]>,
    ) -> candle_core::Result<SavedConv> {
        let spec = b.spec.convs().nth(i).expect("convolution index");
        let k = spec.kernel;
        let weight_dims = [spec.c_out, spec.c_in, k, k];
        let geometry = Geometry::new(&x_dims, &weight_dims, spec.stride, spec.padding)?;
        let i = b.first_conv + i;
        let frozen = self.frozen.as_deref().map(|f| &f[i]);
        let conv = conv::forward(&geometry, x, p.conv, frozen);
        let planes = Planes {
            images: x_dims[0],
            channels: spec.c_out,
            positions: geometry.positions(),
        };
        let norm = match self.stats.running(i) {
            Some(running) => Normaliser::new(running, b.spec.eps),
            None => {
                let stats = batch_stats(View::image_major(&conv), planes);
                let norm = Normaliser::new(&stats, b.spec.eps);
                self.stats.record(stats, planes.count());
                norm
            }
        };
        Ok(SavedConv {
            geometry,
            planes,
            conv,
            norm,
        })
    }

    /// Block `b` on `x`: its output, the output's dimensions, and what its backward needs.
    fn block_forward(
        &self,
        b: &Placed,
        params: &[f32],
        x: &[f32],
        x_dims: [usize; 4],
    ) -> candle_core::Result<(Vec<f32>, [usize; 4], Vec<SavedConv>)> {
        let (offsets, _) = b.spec.param_offsets();
        let specs: Vec<&ConvSpec> = b.spec.convs().collect();
        let p =
            |i: usize| ConvParams::from(split_packed(&params[offsets[i]..], param_lens(specs[i])));
        let last = b.spec.path.len() - 1;
        let mut saved: Vec<SavedConv> = Vec::with_capacity(specs.len());
        let mut dims = x_dims;
        let mut activation: Option<Vec<f32>> = None;
        for i in 0..=last {
            let input = activation.as_deref().unwrap_or(x);
            let conv = self.conv_bn(b, i, input, dims, &p(i))?;
            let g = &conv.geometry;
            dims = [x_dims[0], conv.planes.channels, g.h_out, g.w_out];
            activation = (i < last).then(|| conv.activation(&p(i)));
            saved.push(conv);
        }
        if b.spec.downsample.is_some() {
            saved.push(self.conv_bn(b, last + 1, x, x_dims, &p(last + 1))?);
        }
        let affine = |i: usize| {
            saved[i]
                .norm
                .norm(p(i).bn_weight, false, true)
                .affine(p(i).bn_bias)
        };
        let (scale, shift) = affine(last);
        let projection = saved.get(last + 1).map(|s| (&s.conv, affine(last + 1)));
        let identity = match &projection {
            Some((conv, (scale, shift))) => Identity::Projected(conv, scale, shift),
            None => Identity::Input(x),
        };
        // SAFETY: `join` writes every plane of `out`.
        let mut out = unsafe { for_overwrite(saved[last].conv.len()) };
        join(&saved[last], (&scale, &shift), identity, &mut out);
        Ok((out, dims, saved))
    }
}

/// `out = relu(last * scale + shift + identity)`, with `identity` the input or, projected,
/// `projection * p_scale + p_shift`.
fn join(last: &SavedConv, bn: (&[f32], &[f32]), identity: Identity, out: &mut [f32]) {
    let s = last.planes;
    let last_view = View::image_major(&last.conv);
    s.map(out, Order::ImageMajor, |image, c, out| {
        let (a, b) = (bn.0[c], bn.1[c]);
        let path = last_view.plane(s, image, c);
        match identity {
            Identity::Input(x) => {
                join_plane(out, path, (a, b), View::image_major(x).plane(s, image, c))
            }
            Identity::Projected(proj, scale, shift) => {
                let proj = View::image_major(proj).plane(s, image, c);
                join_projected_plane(out, path, (a, b), proj, (scale[c], shift[c]))
            }
        }
    });
}

vectorized! {
    /// One plane of [`join`] with the block's input `x`; `(a, b)`: the last BatchNorm's scale
    /// and shift.
    fn join_plane(out: &mut [f32], path: &[f32], bn: (f32, f32), x: &[f32]) {
        let (a, b) = bn;
        for ((o, &v), &x) in out.iter_mut().zip(path).zip(x) {
            *o = (v * a + b + x).max(0.0);
        }
    }
}

vectorized! {
    /// One plane of [`join`] with the projection `proj` and its BatchNorm's `(pa, pb)`.
    fn join_projected_plane(
        out: &mut [f32],
        path: &[f32],
        bn: (f32, f32),
        proj: &[f32],
        projection_bn: (f32, f32),
    ) {
        let ((a, b), (pa, pb)) = (bn, projection_bn);
        for ((o, &v), &p) in out.iter_mut().zip(path).zip(proj) {
            *o = (v * a + b + p * pa + pb).max(0.0);
        }
    }
}

vectorized! {
    /// `d += dy` where the block's ReLU passed it (`out > 0`): the identity's gradient.
    fn add_passed(d: &mut [f32], out: &[f32], dy: &[f32]) {
        for ((d, &o), &g) in d.iter_mut().zip(out).zip(dy) {
            *d += if o > 0.0 { g } else { 0.0 };
        }
    }
}

#[derive(Clone, Copy)]
enum Identity<'a> {
    Input(&'a [f32]),
    /// The projection's convolution output and its BatchNorm's scale and shift.
    Projected(&'a [f32], &'a [f32], &'a [f32]),
}

impl CustomOp2 for ResidualOp {
    fn name(&self) -> &'static str {
        "cxr-residual-blocks"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        params: &CpuStorage,
        p_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x_dims: [usize; 4] = x_layout.dims().try_into().map_err(|_| {
            candle_core::Error::Msg(format!("residual blocks: input {:?}", x_layout.dims()))
        })?;
        let (x, params) = (values(x, x_layout)?, values(params, p_layout)?);
        let (placed, len) = self.placed();
        if params.len() != len {
            candle_core::bail!(
                "residual blocks: {} packed parameters, expected {len}",
                params.len()
            );
        }
        let mut saved = Vec::with_capacity(self.blocks.len());
        let (mut input, mut dims): (Option<Vec<f32>>, _) = (None, x_dims);
        for b in &placed {
            let x = input.as_deref().unwrap_or(x);
            let (out, out_dims, convs) =
                self.block_forward(b, &params[b.params.clone()], x, dims)?;
            saved.push(SavedBlock { convs, input });
            (input, dims) = (Some(out), out_dims);
        }
        *lock(&self.saved) = saved;
        let out = input.expect("a chain has blocks");
        Ok((CpuStorage::F32(out), Shape::from(&dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = lock(&self.saved);
        if saved.is_empty() {
            candle_core::bail!("residual blocks: backward before forward")
        }
        let (_, len) = self.placed();
        let mut dparams = zeroed(len);
        let dx = with_values(x, |x| {
            with_values(params, |params| {
                with_values(y, |y| {
                    with_values(dy, |dy| {
                        self.backward(x, params, y, dy, &saved, &mut dparams)
                    })
                })
            })
        })????;
        let dx = match x.track_op() {
            true => Some(tensor(dx, x.shape())?),
            false => None,
        };
        Ok((dx, Some(tensor(dparams, len)?)))
    }
}

/// A block's output and its gradient.
#[derive(Clone, Copy)]
struct Output<'a> {
    out: &'a [f32],
    dy: &'a [f32],
}

impl ResidualOp {
    /// The chain's backward from its input `x`, output `y` and the output's gradient `dy`: the
    /// parameters' gradients into `dparams`, and the input's.
    fn backward(
        &self,
        x: &[f32],
        params: &[f32],
        y: &[f32],
        dy: &[f32],
        saved: &[SavedBlock],
        dparams: &mut [f32],
    ) -> Vec<f32> {
        let (placed, _) = self.placed();
        let mut d: Option<Vec<f32>> = None;
        for (k, b) in placed.iter().enumerate().rev() {
            let input = saved[k].input.as_deref().unwrap_or(x);
            let out = saved.get(k + 1).and_then(|s| s.input.as_deref());
            let output = Output {
                out: out.unwrap_or(y),
                dy: d.as_deref().unwrap_or(dy),
            };
            let convs = &saved[k].convs;
            let (params, dparams) = (&params[b.params.clone()], &mut dparams[b.params.clone()]);
            d = Some(self.block_backward(b, input, params, convs, output, dparams));
        }
        d.expect("a chain has blocks")
    }

    /// Block `b`'s backward: its parameters' gradients into `dparams`, and its input's.
    fn block_backward(
        &self,
        b: &Placed,
        x: &[f32],
        params: &[f32],
        saved: &[SavedConv],
        output: Output,
        dparams: &mut [f32],
    ) -> Vec<f32> {
        let (offsets, _) = b.spec.param_offsets();
        let specs: Vec<&ConvSpec> = b.spec.convs().collect();
        let train = self.train();
        let last = b.spec.path.len() - 1;
        // Split the packed gradients per convolution, from the back.
        let mut grads: Vec<ConvParams<&mut [f32]>> = Vec::with_capacity(specs.len());
        let mut rest = dparams;
        for (i, spec) in specs.iter().enumerate() {
            let len = offsets.get(i + 1).map_or(rest.len(), |&o| o - offsets[i]);
            let (head, tail) = rest.split_at_mut(len);
            grads.push(ConvParams::from(split_packed_mut(head, param_lens(spec))));
            rest = tail;
        }
        let params_of =
            |i: usize| ConvParams::from(split_packed(&params[offsets[i]..], param_lens(specs[i])));
        // Convolution i's backward from the gradient `d_out` of the ReLU that follows its
        // BatchNorm (its own, or the block's for the last and the projection: `relu_out` is that
        // ReLU's output): its weight's and its BatchNorm's gradients, and its input's.
        let mut conv_backward = |i: usize, d_out: &[f32], relu_out: &[f32], input: &[f32]| {
            let s = &saved[i];
            let p = params_of(i);
            // SAFETY: the BatchNorm backward writes every plane (it does not accumulate).
            let mut d_conv = unsafe { for_overwrite(s.conv.len()) };
            let (dw, db) = s.norm.norm(p.bn_weight, true, train).backward(
                View::image_major(&s.conv),
                View::image_major(relu_out),
                View::image_major(d_out),
                s.planes,
                &mut d_conv,
                Order::ImageMajor,
                false,
            );
            grads[i].bn_weight.copy_from_slice(&dw);
            grads[i].bn_bias.copy_from_slice(&db);
            let dw = conv::weight_grad(&s.geometry, input, &d_conv);
            grads[i].conv.copy_from_slice(&dw);
            conv::input_grad(&s.geometry, &d_conv, p.conv)
        };
        // Convolution i's input: the block's, or the activation of convolution i - 1, recomputed
        // (once: it is then convolution i - 1's ReLU output).
        let input = |i: usize| match i {
            0 => Cow::Borrowed(x),
            _ => Cow::Owned(saved[i - 1].activation(&params_of(i - 1))),
        };
        let Output { out, dy } = output;
        let mut relu_out = input(last);
        let mut d = conv_backward(last, dy, out, &relu_out);
        for i in (0..last).rev() {
            let input = input(i);
            d = conv_backward(i, &d, &relu_out, &input);
            relu_out = input;
        }
        assert_eq!(d.len(), x.len());
        match b.spec.downsample {
            Some(_) => {
                let projected = conv_backward(last + 1, dy, out, x);
                let sum = d.par_iter_mut().zip(&projected);
                sum.with_min_len(MIN_PARALLEL_LEN)
                    .for_each(|(d, p)| *d += p);
            }
            None => {
                // The identity's gradient: the output's, where the block's ReLU passed it.
                let pieces = out
                    .par_chunks(MIN_PARALLEL_LEN)
                    .zip(dy.par_chunks(MIN_PARALLEL_LEN));
                let sum = d.par_chunks_mut(MIN_PARALLEL_LEN).zip(pieces);
                sum.for_each(|(d, (out, dy))| add_passed(d, out, dy));
            }
        }
        d
    }
}

/// Runs a chain of residual blocks on `x` (`[N, C, H, W]`, f32 on the CPU) with `params` packed
/// as the module docs say. `running` holds every BatchNorm's running statistics in eval mode (in
/// the order of the convolutions, block by block) and is `None` in train mode, where the batch
/// statistics come back in the same order, each with its number of values per channel. `frozen`,
/// one per convolution, keeps their weights' transforms across calls while the weights do not
/// change.
pub(crate) fn residual_blocks(
    x: &Tensor,
    params: &Tensor,
    blocks: Vec<ResidualSpec>,
    running: Option<Vec<BatchStats>>,
    frozen: Option<Arc<[FrozenWeights]>>,
) -> candle_core::Result<(Tensor, Vec<(BatchStats, usize)>)> {
    if blocks.is_empty() {
        candle_core::bail!("residual blocks: an empty chain")
    }
    let stats = Statistics::new(running);
    let op = ResidualOp {
        blocks,
        stats: Arc::clone(&stats),
        saved: Mutex::new(Vec::new()),
        frozen,
    };
    let y = x.contiguous()?.apply_op2(&params.contiguous()?, op)?;
    Ok((y, stats.take()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::assert_close;
    use crate::kernels::{batch_norm_eval, batch_norm_train, conv2d, BatchStats};
    use candle_core::{Device, Var};

    /// Weight, BatchNorm weight and bias of each convolution, as variables.
    fn vars(spec: &ResidualSpec) -> Vec<[Var; 3]> {
        let dev = Device::Cpu;
        spec.convs()
            .map(|c| {
                let shape = (c.c_out, c.c_in, c.kernel, c.kernel);
                [
                    Var::randn(0f32, 0.4f32, shape, &dev).unwrap(),
                    Var::randn(1f32, 0.3f32, c.c_out, &dev).unwrap(),
                    Var::randn(0f32, 0.3f32, c.c_out, &dev).unwrap(),
                ]
            })
            .collect()
    }

    /// The block from the single-layer kernels and candle's sum and ReLU.
    fn composed(
        x: &Tensor,
        spec: &ResidualSpec,
        vars: &[[Var; 3]],
        eval: Option<&[BatchStats]>,
    ) -> (Tensor, Vec<(BatchStats, usize)>) {
        let stats = std::cell::RefCell::new(Vec::new());
        let conv_bn = |i: usize, x: &Tensor, relu: bool| {
            let c = spec.convs().nth(i).unwrap();
            let [w, bn_w, bn_b] = vars[i].each_ref().map(|v| v.as_tensor());
            let y = conv2d(x, w, c.stride, c.padding).unwrap();
            match eval {
                None => {
                    let (y_bn, batch) = batch_norm_train(&y, bn_w, bn_b, spec.eps, relu).unwrap();
                    let (n, _, h, w) = y.dims4().unwrap();
                    stats.borrow_mut().push((i, batch, n * h * w));
                    y_bn
                }
                Some(running) => {
                    let r = &running[i];
                    let dev = Device::Cpu;
                    let var = Tensor::new(r.var.as_slice(), &dev).unwrap();
                    let alpha = bn_w
                        .div(&(var + spec.eps).unwrap().sqrt().unwrap())
                        .unwrap();
                    let mean = Tensor::new(r.mean.as_slice(), &dev).unwrap();
                    let beta = bn_b.sub(&mean.mul(&alpha).unwrap()).unwrap();
                    batch_norm_eval(&y, &alpha, &beta, relu).unwrap()
                }
            }
        };
        let last = spec.path.len() - 1;
        let mut out = x.clone();
        for i in 0..last {
            out = conv_bn(i, &out, true);
        }
        let out = conv_bn(last, &out, false);
        let identity = match spec.downsample {
            Some(_) => conv_bn(last + 1, x, false),
            None => x.clone(),
        };
        let mut stats = stats.into_inner();
        stats.sort_by_key(|(i, ..)| *i);
        let stats = stats.into_iter().map(|(_, s, n)| (s, n)).collect();
        ((out + identity).unwrap().relu().unwrap(), stats)
    }

    /// The chain against its blocks composed of single-layer kernels, in train and eval mode:
    /// output, batch statistics, and the gradients of the input and of every parameter.
    fn check(chain: Vec<ResidualSpec>, x_dims: (usize, usize, usize, usize)) {
        let dev = Device::Cpu;
        let x = Var::randn(0.2f32, 1f32, x_dims, &dev).unwrap();
        let vars: Vec<Vec<[Var; 3]>> = chain.iter().map(vars).collect();
        let running: Vec<Vec<BatchStats>> = chain
            .iter()
            .map(|spec| {
                spec.convs()
                    .map(|c| BatchStats {
                        mean: (0..c.c_out).map(|i| 0.05 * i as f32 - 0.1).collect(),
                        var: (0..c.c_out).map(|i| 0.6 + 0.1 * i as f32).collect(),
                    })
                    .collect()
            })
            .collect();
        let all_vars = || vars.iter().flatten().flatten();
        for eval in [false, true] {
            let packed: Vec<Tensor> = all_vars()
                .map(|v| v.as_tensor().flatten_all().unwrap())
                .collect();
            let packed = Tensor::cat(&packed, 0).unwrap();
            let all_running = eval.then(|| running.iter().flatten().cloned().collect());
            let (got, stats) =
                residual_blocks(x.as_tensor(), &packed, chain.clone(), all_running, None).unwrap();
            let (mut want, mut want_stats) = (x.as_tensor().clone(), Vec::new());
            for ((spec, vars), running) in chain.iter().zip(&vars).zip(&running) {
                let (y, stats) = composed(&want, spec, vars, eval.then_some(running.as_slice()));
                want = y;
                want_stats.extend(stats);
            }
            let case = format!("{chain:?} eval {eval}");
            assert_close(&got, &want, 1e-5, &format!("{case}: y"));
            let convs: usize = chain.iter().map(|spec| spec.convs().count()).sum();
            assert_eq!(stats.len(), if eval { 0 } else { convs });
            assert_eq!(stats.len(), want_stats.len());
            // The first block sees the same input either way, and gives the same bits; later
            // blocks see outputs rounded differently (the fused join sums in another order).
            let first = chain[0].convs().count();
            for (i, ((g, g_count), (w, w_count))) in stats.iter().zip(&want_stats).enumerate() {
                let what = format!("{case}: batch statistics {i}");
                assert_eq!(g_count, w_count, "{what}");
                if i < first {
                    assert_eq!((&g.mean, &g.var), (&w.mean, &w.var), "{what}");
                } else {
                    let t = |v: &[f32]| Tensor::new(v, &dev).unwrap();
                    assert_close(&t(&g.mean), &t(&w.mean), 1e-5, &what);
                    assert_close(&t(&g.var), &t(&w.var), 1e-5, &what);
                }
            }
            let mix = Tensor::randn(0f32, 1f32, got.dims(), &dev).unwrap();
            let grads = |y: &Tensor| (y * &mix).unwrap().sum_all().unwrap().backward().unwrap();
            let (gg, gw) = (grads(&got), grads(&want));
            let t = x.as_tensor();
            assert_close(
                gg.get(t).unwrap(),
                gw.get(t).unwrap(),
                1e-4,
                &format!("{case}: dx"),
            );
            for (i, v) in all_vars().enumerate() {
                let t = v.as_tensor();
                let what = format!("{case}: parameter {i}");
                assert_close(gg.get(t).unwrap(), gw.get(t).unwrap(), 1e-4, &what);
            }
        }
    }

    #[test]
    fn bottleneck_with_projection_matches_the_composed_block() {
        let path = vec![
            ConvSpec::same(6, 4, 1, 1),
            ConvSpec::same(4, 4, 3, 2),
            ConvSpec::same(4, 8, 1, 1),
        ];
        let spec = ResidualSpec {
            path,
            downsample: Some(ConvSpec::same(6, 8, 1, 2)),
            eps: 1e-5,
        };
        check(vec![spec], (3, 6, 9, 8));
    }

    #[test]
    fn basic_block_matches_the_composed_block() {
        let spec = ResidualSpec {
            path: vec![ConvSpec::same(5, 5, 3, 1), ConvSpec::same(5, 5, 3, 1)],
            downsample: None,
            eps: 1e-5,
        };
        check(vec![spec], (2, 5, 7, 6));
    }

    /// A stage: a projecting bottleneck, then two that keep the shape (the gradient of each
    /// block's input flows through the next one's backward without leaving the op).
    #[test]
    fn a_chain_of_blocks_matches_the_composed_blocks() {
        let bottleneck = |c_in: usize, stride: usize| ResidualSpec {
            path: vec![
                ConvSpec::same(c_in, 4, 1, 1),
                ConvSpec::same(4, 4, 3, stride),
                ConvSpec::same(4, 8, 1, 1),
            ],
            downsample: (c_in != 8 || stride != 1).then(|| ConvSpec::same(c_in, 8, 1, stride)),
            eps: 1e-5,
        };
        check(
            vec![bottleneck(6, 2), bottleneck(8, 1), bottleneck(8, 1)],
            (2, 6, 9, 8),
        );
    }

    /// The vectorised passes give the baseline's bits in every variant the CPU runs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_vector_variant_gives_the_same_bits() {
        use crate::kernels::simd::{assert_same_in_every_variant as same, bits};
        let [path, x, dy] = crate::kernels::simd::test_planes();
        same("join_plane", || {
            let mut out = vec![0f32; x.len()];
            join_plane(&mut out, &path, (1.5, -0.2), &x);
            bits(&out)
        });
        same("join_projected_plane", || {
            let mut out = vec![0f32; x.len()];
            join_projected_plane(&mut out, &path, (1.5, -0.2), &x, (0.7, 0.1));
            bits(&out)
        });
        same("add_passed", || {
            let mut d = dy.clone();
            add_passed(&mut d, &x, &path);
            bits(&d)
        });
    }
}
