//! Convolution as im2col + GEMM, and its backward as GEMMs + col2im.
//!
//! Per image, with `cols` the `[c_in * k * k, h_out * w_out]` patch matrix:
//! `y = W cols`, `dW += dy colsᵀ`, `dx = col2im(Wᵀ dy)` (for stride 1, `dx` is rather the
//! convolution of `dy` with the flipped kernels: see [`input_grad`]). A 1x1 stride-1 convolution
//! needs no patch matrix (the image is its own). With at least as many images as threads, the images
//! are spread over the threads and each GEMM runs single-threaded (small late-stage matrices
//! scale badly inside a GEMM); otherwise the GEMMs themselves are parallel. Small images go into
//! the GEMMs a group at a time, side by side (see [`GROUP_BELOW`]). 3x3 stride-1 convolutions
//! run instead as a direct convolution (few output channels) or as Winograd F(2x2, 3x3) (64
//! channels or more), where those pay: see [`Geometry::direct`] and [`Geometry::winograd`].

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::gemm::{matmul, Matrix};
use super::winograd::Winograd;
use super::{for_overwrite, tensor, values, with_values, zeroed};

/// Shapes of one convolution (square kernel, no bias, no dilation or groups).
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    images: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    pub(super) h_out: usize,
    pub(super) w_out: usize,
}

impl Geometry {
    pub(super) fn new(
        x: &[usize],
        weight: &[usize],
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        let (&[images, c_in, h, w], &[c_out, c_in_w, kh, kw]) = (x, weight) else {
            candle_core::bail!("conv2d expects 4-d input and weight, got {x:?} and {weight:?}")
        };
        if c_in != c_in_w || kh != kw || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw
        {
            candle_core::bail!("conv2d: input {x:?} does not fit weight {weight:?}, stride {stride}, padding {padding}");
        }
        Ok(Self {
            images,
            c_in,
            h,
            w,
            c_out,
            kernel: kh,
            stride,
            padding,
            h_out: (h + 2 * padding - kh) / stride + 1,
            w_out: (w + 2 * padding - kw) / stride + 1,
        })
    }

    fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    pub(super) fn positions(&self) -> usize {
        self.h_out * self.w_out
    }

    /// Rows of the patch matrix (columns of the weight matrix).
    fn patch_len(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }

    fn output_len(&self) -> usize {
        self.c_out * self.positions()
    }

    /// A 1x1 stride-1 unpadded convolution: the image is its own patch matrix.
    fn is_pointwise(&self) -> bool {
        (self.kernel, self.stride, self.padding) == (1, 1, 0)
    }

    fn weight_matrix<'a>(&self, weight: &'a [f32]) -> Matrix<'a> {
        Matrix::new(weight, self.c_out, self.patch_len())
    }

    /// Output columns `[first, end)` whose input column `j * stride + kj - padding` exists.
    fn valid_columns(&self, kj: usize) -> (usize, usize) {
        let first = self.padding.saturating_sub(kj).div_ceil(self.stride);
        let end = (self.w + self.padding)
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.w_out);
        (first.min(end), end)
    }

    /// The input row `i * stride + ki - padding` feeding output row `i`, if inside the image.
    fn input_row(&self, i: usize, ki: usize) -> Option<usize> {
        (i * self.stride + ki)
            .checked_sub(self.padding)
            .filter(|&r| r < self.h)
    }

    /// How the work is split: over images (single-threaded GEMMs) or inside each GEMM.
    fn parallel_images(&self) -> bool {
        let threads = rayon::current_num_threads();
        threads > 1 && self.images >= threads
    }

    /// The direct convolution, where it applies and pays: stride 1 with a window (a 1x1
    /// convolution is a plain GEMM already), on a CPU with AVX2 or AVX-512, one image per thread
    /// (it does not split an image over threads), and few output channels or wide images.
    /// Measured on one core: DenseNet's 128 -> 32 convolutions ran 43-70 GFLOP/s direct against
    /// 30-46 as GEMMs, at every size; ResNet's 64 and 128 channels at 56x56 and 28x28 69-73
    /// against 47-65; but at 256 channels 14x14 and 512 at 7x7 the GEMM wins (74 and 54 against
    /// 66 and 44): there the direct kernel also computes 13-29% dropped columns.
    #[cfg(target_arch = "x86_64")]
    fn direct(&self) -> Option<super::direct::Direct> {
        let one_per_thread = self.parallel_images() || rayon::current_num_threads() == 1;
        let pays = self.c_out <= 64 || self.w_out >= 28;
        let simd = super::simd::Simd::best()?;
        (self.stride == 1 && !self.is_pointwise() && pays && one_per_thread)
            .then_some(super::direct::Direct {
                simd,
                c_in: self.c_in,
                c_out: self.c_out,
                h: self.h,
                w: self.w,
                kernel: self.kernel,
                padding: self.padding,
            })
            .filter(super::direct::Direct::offsets_fit)
    }

    /// Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions with at least 64 channels on both
    /// sides (ResNet's), where it ran 1.3-1.6 times as fast as the direct kernel or im2col +
    /// GEMM on one core (56x56 to 14x14, 4 images). With fewer channels (DenseNet's growth
    /// convolutions: 128 -> 32, and 32 -> 128 for the input gradient) its 16 thin products and
    /// its transforms cost more than they save. The weights' transform (16/9 of their size, one
    /// pass through memory per call) must also be paid back: at least one tile of the batch per
    /// 1024 weight pairs, which leaves out 512-channel 7x7 convolutions below 16 images, unless
    /// the transform is kept across calls ([`FrozenWeights`]).
    fn winograd(&self) -> Option<Winograd> {
        self.winograd_shape()
            .filter(|w| self.images * w.tiles() * 1024 >= self.c_in * self.c_out)
    }

    /// [`Geometry::winograd`] when the weights' transform costs nothing.
    fn winograd_shape(&self) -> Option<Winograd> {
        ((self.kernel, self.stride, self.padding) == (3, 1, 1) && self.c_in.min(self.c_out) >= 64)
            .then_some(Winograd {
                c_in: self.c_in,
                c_out: self.c_out,
                h: self.h,
                w: self.w,
            })
    }

    /// Images per product: a thread's share of the batch (all of it when the products are split
    /// over threads instead) for images below [`GROUP_BELOW`] positions, else one; at most
    /// [`GROUP_COLUMNS`] columns.
    fn group(&self) -> usize {
        let share = match rayon::current_num_threads() {
            _ if self.positions() >= GROUP_BELOW => 1,
            threads if self.parallel_images() => self.images.div_ceil(threads),
            _ => self.images.max(1),
        };
        // A share too wide for one product splits into equal groups.
        let most = (GROUP_COLUMNS / self.positions().max(1)).max(1);
        share.div_ceil(share.div_ceil(most))
    }

    /// `images` cut into groups of [`Geometry::group`] images.
    fn groups(&self, images: Range<usize>) -> impl Iterator<Item = Range<usize>> {
        let (group, end) = (self.group(), images.end);
        images
            .step_by(group)
            .map(move |start| start..(start + group).min(end))
    }

    fn gemm_parallelism(&self) -> Parallelism {
        match rayon::current_num_threads() {
            threads if threads > 1 && !self.parallel_images() => Parallelism::Rayon(threads),
            _ => Parallelism::None,
        }
    }
}

/// Fills columns `[0, positions)` of each row of a patch matrix whose rows are `row_stride`
/// apart (a group's matrix holds its images side by side).
fn im2col(g: &Geometry, image: &[f32], cols: &mut [f32], row_stride: usize) {
    let (k, positions) = (g.kernel, g.positions());
    for row in 0..g.patch_len() {
        let patch_row = &mut cols[row * row_stride..][..positions];
        let (c, ki, kj) = (row / (k * k), row / k % k, row % k);
        let plane = &image[c * g.h * g.w..][..g.h * g.w];
        let (first, end) = g.valid_columns(kj);
        for (i, out) in patch_row.chunks_exact_mut(g.w_out).enumerate() {
            let Some(r) = g.input_row(i, ki) else {
                out.fill(0.0);
                continue;
            };
            let src = &plane[r * g.w..][..g.w];
            out[..first].fill(0.0);
            out[end..].fill(0.0);
            let start = first * g.stride + kj - g.padding;
            if g.stride == 1 {
                out[first..end].copy_from_slice(&src[start..][..end - first]);
            } else {
                let taken = src[start..].iter().step_by(g.stride);
                out[first..end]
                    .iter_mut()
                    .zip(taken)
                    .for_each(|(o, &v)| *o = v);
            }
        }
    }
}

/// Adds each patch-matrix entry (rows `row_stride` apart, as in [`im2col`]) back onto the input
/// pixel it was read from.
fn col2im(g: &Geometry, cols: &[f32], row_stride: usize, image: &mut [f32]) {
    let k = g.kernel;
    image.fill(0.0);
    for row in 0..g.patch_len() {
        let patch_row = &cols[row * row_stride..][..g.positions()];
        let (c, ki, kj) = (row / (k * k), row / k % k, row % k);
        let plane = &mut image[c * g.h * g.w..][..g.h * g.w];
        let (first, end) = g.valid_columns(kj);
        for (i, grads) in patch_row.chunks_exact(g.w_out).enumerate() {
            let Some(r) = g.input_row(i, ki) else {
                continue;
            };
            let dst = &mut plane[r * g.w..][..g.w];
            let start = first * g.stride + kj - g.padding;
            let targets = dst[start..].iter_mut().step_by(g.stride);
            targets.zip(&grads[first..end]).for_each(|(d, v)| *d += v);
        }
    }
}

/// Below this many output positions per image, a thread's images are gathered side by side
/// into one product. At 7x7 a product per image has 49 columns, which the `gemm` crate's
/// 16-wide tiles cover with 15% waste, and every image repacks the whole weight matrix (9 MB
/// for ResNet50's last 3x3 convolution): ResNet50's 7x7 stage ran at 27-46 GFLOP/s per core.
const GROUP_BELOW: usize = 28 * 28;

/// The widest group: this bounds the threads' scratch buffers for large batches (a group's patch
/// matrix at ResNet50's 14x14 3x3 convolutions is 9 KB per column) while keeping the products
/// wide.
const GROUP_COLUMNS: usize = 1024;

/// The images `range` of `data` (each `rows x positions`, one after the other) as one
/// `rows x (images * positions)` matrix, image `j` in columns `j * positions..`: the data itself
/// for a single image, else a copy in `buffer`.
fn side_by_side<'a>(
    data: &'a [f32],
    rows: usize,
    positions: usize,
    range: Range<usize>,
    buffer: &'a mut Vec<f32>,
) -> Matrix<'a> {
    let image_len = rows * positions;
    let images = &data[range.start * image_len..range.end * image_len];
    if range.len() == 1 {
        return Matrix::new(images, rows, positions);
    }
    let width = range.len() * positions;
    buffer.resize(rows * width, 0.0);
    for (j, image) in images.chunks_exact(image_len).enumerate() {
        for (src, dst) in image
            .chunks_exact(positions)
            .zip(buffer.chunks_exact_mut(width))
        {
            dst[j * positions..][..positions].copy_from_slice(src);
        }
    }
    Matrix::new(buffer, rows, width)
}

/// The inverse of [`side_by_side`]: a `rows x (images * positions)` matrix back to one
/// `rows x positions` block per image.
fn split_side_by_side(matrix: &[f32], rows: usize, positions: usize, images: &mut [f32]) {
    let width = images.len() / rows;
    for (j, image) in images.chunks_exact_mut(rows * positions).enumerate() {
        for (dst, src) in image
            .chunks_exact_mut(positions)
            .zip(matrix.chunks_exact(width))
        {
            dst.copy_from_slice(&src[j * positions..][..positions]);
        }
    }
}

/// The patch matrix of images `range` of `x`, side by side: the images themselves for
/// pointwise convolutions, else built in `buffer`.
fn patches<'a>(
    g: &Geometry,
    x: &'a [f32],
    range: Range<usize>,
    buffer: &'a mut Vec<f32>,
) -> Matrix<'a> {
    if g.is_pointwise() {
        return side_by_side(x, g.c_in, g.positions(), range, buffer);
    }
    let width = range.len() * g.positions();
    buffer.resize(g.patch_len() * width, 0.0);
    for (j, i) in range.enumerate() {
        let image = &x[i * g.image_len()..][..g.image_len()];
        im2col(g, image, &mut buffer[j * g.positions()..], width);
    }
    Matrix::new(buffer, g.patch_len(), width)
}

/// A thread's buffers, kept between calls: fresh ones (up to 14 MB in DenseNet's first block)
/// would be page-faulted in for every image of every convolution.
#[derive(Default)]
struct Scratch {
    /// Patch matrices (and the direct convolution's padded planes).
    cols: Vec<f32>,
    /// Output-gradient images side by side.
    rows: Vec<f32>,
    /// A group's product before it is split back into images.
    product: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if a caller up the stack holds them).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Calls `f(images, their output chunks, scratch buffers, GEMM parallelism)` for every group of
/// images (see [`Geometry::group`]); `chunk` is one image's share of `out`.
fn for_each_group(
    g: &Geometry,
    out: &mut [f32],
    chunk: usize,
    f: impl Fn(Range<usize>, &mut [f32], &mut Scratch, Parallelism) + Sync,
) {
    let group = g.group();
    let range = |t: usize| t * group..((t + 1) * group).min(g.images);
    if g.parallel_images() {
        out.par_chunks_mut(chunk * group)
            .enumerate()
            .for_each(|(t, o)| with_scratch(|s| f(range(t), o, s, Parallelism::None)));
    } else {
        let par = g.gemm_parallelism();
        with_scratch(|s| {
            for (t, o) in out.chunks_mut(chunk * group).enumerate() {
                f(range(t), o, s, par);
            }
        });
    }
}

/// A convolution's weights in the form its forward reads, made by the first forward and kept
/// while the weights are frozen (`crate::model::Inference`). Only Winograd convolutions keep
/// one: their transform is a pass over 16/9 of the weights per call otherwise, and kept it also
/// pays at any batch size.
#[derive(Debug, Default)]
pub(crate) struct FrozenWeights(OnceLock<Vec<f32>>);

/// `y`: the convolution of `x` with `weight`, or with its kept form in `frozen`.
pub(super) fn forward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    frozen: Option<&FrozenWeights>,
) -> Vec<f32> {
    // SAFETY: every path below writes each output value: a GEMM that does not read its
    // destination, Winograd's output transform (cropped tiles included), the direct kernel's
    // copy out of its flat rows, or a group's copy back into images.
    let mut y = unsafe { for_overwrite(g.images * g.output_len()) };
    let winograd = match frozen {
        Some(FrozenWeights(kept)) => g.winograd_shape().map(|w| {
            let u = kept.get_or_init(|| w.transform_weights(weight));
            (w, Cow::Borrowed(u.as_slice()))
        }),
        None => g
            .winograd()
            .map(|w| (w, Cow::Owned(w.transform_weights(weight)))),
    };
    #[cfg(target_arch = "x86_64")]
    let direct = winograd
        .is_none()
        .then(|| g.direct().map(|d| (d, d.pack_weights(weight))))
        .flatten();
    for_each_group(g, &mut y, g.output_len(), |range, out, s, par| {
        #[cfg(target_arch = "x86_64")]
        if let Some((direct, packed)) = &direct {
            for (i, out) in range.zip(out.chunks_exact_mut(g.output_len())) {
                let image = &x[i * g.image_len()..][..g.image_len()];
                direct.image(image, packed, out, &mut s.cols);
            }
            return;
        }
        if let Some((winograd, u)) = &winograd {
            let images = &x[range.start * g.image_len()..range.end * g.image_len()];
            return winograd.images(images, u, out, (&mut s.cols, &mut s.product), par);
        }
        let images = range.len();
        let cols = patches(g, x, range, &mut s.cols);
        if images == 1 {
            return matmul(out, g.weight_matrix(weight), cols, false, par);
        }
        s.product.resize(out.len(), 0.0);
        matmul(&mut s.product, g.weight_matrix(weight), cols, false, par);
        split_side_by_side(&s.product, g.c_out, g.positions(), out);
    });
    y
}

/// `dx`: for stride 1, the convolution of `dy` with the weights flipped in space and
/// transposed in channels (padding `k - 1 - p`), which reads `dy` through a small patch matrix
/// instead of scattering a large one (`c_in k² x positions`) back with col2im.
pub(super) fn input_grad(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    if g.stride == 1 && !g.is_pointwise() && g.padding < g.kernel {
        let flipped = Geometry {
            c_in: g.c_out,
            h: g.h_out,
            w: g.w_out,
            c_out: g.c_in,
            padding: g.kernel - 1 - g.padding,
            h_out: g.h,
            w_out: g.w,
            ..*g
        };
        return forward(&flipped, dy, &flip(g, weight), None);
    }
    input_grad_col2im(g, dy, weight)
}

/// `[c_out, c_in, k, k] -> [c_in, c_out, k, k]`, each kernel rotated by 180 degrees.
fn flip(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let kk = g.kernel * g.kernel;
    let mut flipped = vec![0f32; weight.len()];
    for (o, kernels) in weight.chunks_exact(g.c_in * kk).enumerate() {
        for (i, kernel) in kernels.chunks_exact(kk).enumerate() {
            let dst = &mut flipped[(i * g.c_out + o) * kk..][..kk];
            dst.iter_mut()
                .zip(kernel.iter().rev())
                .for_each(|(d, &v)| *d = v);
        }
    }
    flipped
}

/// `dx = col2im(Wᵀ dy)`, or for a pointwise convolution just `Wᵀ dy`.
fn input_grad_col2im(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    // SAFETY: every image of `dx` is written whole: by a GEMM that does not read its
    // destination, a group's copy back into images, or col2im, which zeroes it first.
    let mut dx = unsafe { for_overwrite(g.images * g.image_len()) };
    for_each_group(g, &mut dx, g.image_len(), |range, dx, s, par| {
        let images = range.len();
        let dy = side_by_side(dy, g.c_out, g.positions(), range, &mut s.rows);
        let w_t = g.weight_matrix(weight).t();
        if g.is_pointwise() && images == 1 {
            return matmul(dx, w_t, dy, false, par);
        }
        let product = if g.is_pointwise() {
            &mut s.product
        } else {
            &mut s.cols
        };
        product.resize(w_t.rows * dy.cols, 0.0);
        matmul(product, w_t, dy, false, par);
        if g.is_pointwise() {
            return split_side_by_side(product, g.c_in, g.positions(), dx);
        }
        for (j, dx) in dx.chunks_exact_mut(g.image_len()).enumerate() {
            col2im(g, &product[j * g.positions()..], dy.cols, dx);
        }
    });
    dx
}

/// `dW`: as Winograd F(2x2, 3x3) where the forward is (on one core, 4 images, 1.2-1.7 times as
/// fast as im2col + GEMM from 56x56 to 14x14, and slightly faster than the direct kernel at
/// 56x56), else by the direct kernel or im2col + GEMM.
pub(super) fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(winograd) = g.winograd() {
        // dU[e] += dM[e] V[e]ᵀ over images `range`, into `du`, one group at a time.
        let du = sum_over_images(g, winograd.transformed_len(), |range, du, s, par| {
            for images in g.groups(range) {
                let x = &x[images.start * g.image_len()..images.end * g.image_len()];
                let dy = &dy[images.start * g.output_len()..images.end * g.output_len()];
                let scratch = (&mut s.cols, &mut s.product);
                winograd.accumulate_weight_grad(x, dy, du, scratch, par);
            }
        });
        return winograd.weight_grad(&du);
    }
    // dW += dy_i cols_iᵀ over images `range`, into `dw`, one group at a time.
    #[cfg(target_arch = "x86_64")]
    let direct = g.direct().filter(|d| d.weight_grad_pays());
    sum_over_images(g, g.c_out * g.patch_len(), |range, dw, s, par| {
        #[cfg(target_arch = "x86_64")]
        if let Some(direct) = &direct {
            for i in range {
                let x_i = &x[i * g.image_len()..][..g.image_len()];
                let dy_i = &dy[i * g.output_len()..][..g.output_len()];
                direct.weight_grad_image(x_i, dy_i, dw, &mut s.cols);
            }
            return;
        }
        for images in g.groups(range) {
            let cols = patches(g, x, images.clone(), &mut s.cols);
            let dy = side_by_side(dy, g.c_out, g.positions(), images, &mut s.rows);
            matmul(dw, dy, cols.t(), true, par);
        }
    })
}

/// `accumulate(images, sum, scratch, parallelism)` over all images into one sum of `len`
/// values: with the images spread over threads, one partial sum per thread, added at the end.
fn sum_over_images(
    g: &Geometry,
    len: usize,
    accumulate: impl Fn(Range<usize>, &mut Vec<f32>, &mut Scratch, Parallelism) + Sync,
) -> Vec<f32> {
    if !g.parallel_images() {
        let mut sum = zeroed(len);
        with_scratch(|s| accumulate(0..g.images, &mut sum, s, g.gemm_parallelism()));
        return sum;
    }
    let per_thread = g.images.div_ceil(rayon::current_num_threads());
    (0..g.images.div_ceil(per_thread))
        .into_par_iter()
        .map(|t| {
            let mut sum = zeroed(len);
            let range = t * per_thread..((t + 1) * per_thread).min(g.images);
            with_scratch(|s| accumulate(range, &mut sum, s, Parallelism::None));
            sum
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| zeroed(len))
}

/// The forward op; its `bwd` computes both gradients with the functions above.
struct Conv2dOp {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "cxr-conv2d"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(x_layout.dims(), w_layout.dims(), self.stride, self.padding)?;
        let y = forward(&g, values(x, x_layout)?, values(weight, w_layout)?, None);
        let shape = Shape::from((g.images, g.c_out, g.h_out, g.w_out));
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), weight.dims(), self.stride, self.padding)?;
        let dy = dy.contiguous()?;
        // The network input needs no gradient: skip the (large) stem col2im.
        let dx = if x.track_op() {
            let dx = with_values(&dy, |dy| with_values(weight, |w| input_grad(&g, dy, w)))??;
            Some(tensor(dx, x.shape())?)
        } else {
            None
        };
        let dw = with_values(x, |x| with_values(&dy, |dy| weight_grad(&g, x, dy)))??;
        Ok((dx, Some(tensor(dw, weight.shape())?)))
    }
}

/// `[N, c_in, H, W] * [c_out, c_in, k, k] -> [N, c_out, H', W']`, PyTorch's `conv2d` without
/// bias, dilation or groups, for f32 CPU tensors.
pub(crate) fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Conv2dOp { stride, padding })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Values and both gradients against candle's own conv2d, on random data.
    fn check(
        images: usize,
        c_in: usize,
        hw: (usize, usize),
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1f32, (images, c_in, hw.0, hw.1), &dev).unwrap();
        let w = Var::randn(0f32, 0.3f32, (c_out, c_in, k, k), &dev).unwrap();
        let mix = Tensor::randn(
            0f32,
            1f32,
            (
                images,
                c_out,
                (hw.0 + 2 * padding - k) / stride + 1,
                (hw.1 + 2 * padding - k) / stride + 1,
            ),
            &dev,
        )
        .unwrap();
        let run = |fast: bool| {
            let y = if fast {
                conv2d(x.as_tensor(), w.as_tensor(), stride, padding).unwrap()
            } else {
                x.as_tensor()
                    .conv2d(w.as_tensor(), padding, stride, 1, 1)
                    .unwrap()
            };
            let grads = (&y * &mix).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = grads.get(x.as_tensor()).unwrap().clone();
            let dw = grads.get(w.as_tensor()).unwrap().clone();
            (y, dx, dw)
        };
        let (got, want) = (run(true), run(false));
        let case = format!("{images}x{c_in}x{hw:?} -> {c_out}, k{k} s{stride} p{padding}");
        crate::kernels::tests::assert_close(&got.0, &want.0, 1e-5, &format!("{case}: y"));
        crate::kernels::tests::assert_close(&got.1, &want.1, 1e-5, &format!("{case}: dx"));
        crate::kernels::tests::assert_close(&got.2, &want.2, 1e-5, &format!("{case}: dw"));
    }

    /// In a pool of 2 threads, whatever the machine: the batch-1 cases then split their GEMMs
    /// over threads and the others give each thread whole images, the only way the direct
    /// convolution runs (on CPUs with AVX2 and FMA). These images are small, so each thread's
    /// images go side by side into products (5 images: groups of 3 and 2, or of at most 2 where
    /// 3 would pass `GROUP_COLUMNS`).
    #[test]
    fn matches_candle_on_odd_shapes() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(check_odd_shapes);
    }

    /// On one thread every product takes the whole batch side by side.
    #[test]
    fn matches_candle_on_one_thread() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(check_odd_shapes);
    }

    fn check_odd_shapes() {
        check(2, 3, (11, 9), 5, 7, 2, 3); // stem-like, non-square
        check(1, 4, (6, 7), 3, 3, 1, 1); // batch 1
        check(3, 5, (8, 8), 6, 1, 1, 0); // pointwise
        check(2, 4, (9, 7), 8, 1, 2, 0); // strided 1x1 (ResNet downsample)
        check(4, 2, (5, 7), 3, 3, 2, 1); // strided 3x3 (candle's own backward, the reference,
                                         // fails when a stride leaves input columns unused, e.g. width 6 here)
        check(2, 3, (4, 4), 2, 3, 1, 0); // no padding
        check(2, 3, (7, 5), 4, 5, 1, 2); // 5x5, stride 1: the flipped-kernel input gradient
        check(2, 3, (46, 47), 5, 3, 1, 1); // large enough for the direct weight gradient
        check(5, 6, (6, 5), 7, 3, 1, 1); // uneven groups, flipped-kernel input gradient
        check(5, 4, (7, 5), 9, 3, 2, 1); // uneven groups, col2im input gradient
        check(5, 8, (5, 5), 12, 1, 1, 0); // uneven groups, pointwise
        check(5, 3, (20, 20), 4, 1, 1, 0); // 400 positions: groups of at most 2, pointwise
        check(5, 3, (39, 39), 4, 3, 2, 1); // 400 positions: groups of at most 2, col2im
        check(3, 2, (30, 30), 72, 3, 2, 1); // too large to group (900 positions), GEMM path
        check(3, 66, (7, 6), 70, 3, 1, 1); // Winograd forward and input gradient, cropped tiles
        check(1, 65, (8, 9), 67, 3, 1, 1); // Winograd, batch 1: GEMMs split over threads
    }
}
