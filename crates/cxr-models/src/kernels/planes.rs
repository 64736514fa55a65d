//! `[N, C, P]` tensors whose `(image, channel)` planes lie image-major (candle's NCHW) or
//! channel-major (`[C, N, P]`). The dense block ([`super::dense_block`]) keeps its buffers
//! channel-major: a layer's input is then a prefix of the block's channels, each channel's
//! BatchNorm statistics one contiguous run, and a 1x1 convolution one GEMM over all images.

use rayon::prelude::*;

use super::MIN_PARALLEL_LEN;

/// How the `(image, channel)` planes of a `[N, C, P]` tensor are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// `[N, C, P]`: candle's NCHW.
    ImageMajor,
    /// `[C, N, P]`: each channel's planes, of every image, in one run.
    ChannelMajor,
}

/// `[N, C, H, W]` as images, channels and positions per plane.
#[derive(Clone, Copy, Debug)]
pub(super) struct Planes {
    pub(super) images: usize,
    pub(super) channels: usize,
    pub(super) positions: usize,
}

impl Planes {
    pub(super) fn of(dims: &[usize]) -> candle_core::Result<Self> {
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
    pub(super) fn count(&self) -> usize {
        self.images * self.positions
    }

    pub(super) fn len(&self) -> usize {
        self.channels * self.count()
    }

    /// Where plane `(image, channel)` starts in a tensor laid out in `order`.
    fn start(&self, order: Order, image: usize, channel: usize) -> usize {
        let plane = match order {
            Order::ImageMajor => image * self.channels + channel,
            Order::ChannelMajor => channel * self.images + image,
        };
        plane * self.positions
    }

    /// The `(image, channel)` of the `index`th plane in `order`.
    fn plane(&self, order: Order, index: usize) -> (usize, usize) {
        match order {
            Order::ImageMajor => (index / self.channels, index % self.channels),
            Order::ChannelMajor => (index % self.images, index / self.images),
        }
    }

    /// Applies `f(image, channel, plane)` to every plane of `out` (laid out in `order`), in
    /// parallel.
    pub(super) fn map(
        &self,
        out: &mut [f32],
        order: Order,
        f: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        let p = self.positions;
        out[..self.len()]
            .par_chunks_mut(p)
            .enumerate()
            .with_min_len(MIN_PARALLEL_LEN.div_ceil(p))
            .for_each(|(index, o)| {
                let (image, channel) = self.plane(order, index);
                f(image, channel, o)
            });
    }

    /// `f(channel)` for every channel, in parallel.
    pub(super) fn per_channel<R: Send>(&self, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
        (0..self.channels).into_par_iter().map(f).collect()
    }
}

/// A tensor's values and the order of its planes.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) data: &'a [f32],
    pub(super) order: Order,
}

impl<'a> View<'a> {
    pub(super) fn image_major(data: &'a [f32]) -> Self {
        Self {
            data,
            order: Order::ImageMajor,
        }
    }

    pub(super) fn channel_major(data: &'a [f32]) -> Self {
        Self {
            data,
            order: Order::ChannelMajor,
        }
    }

    pub(super) fn plane(&self, s: Planes, image: usize, channel: usize) -> &'a [f32] {
        &self.data[s.start(self.order, image, channel)..][..s.positions]
    }

    /// Channel `c`'s planes, one per image.
    pub(super) fn channel(&self, s: Planes, c: usize) -> impl Iterator<Item = &'a [f32]> + '_ {
        (0..s.images).map(move |i| self.plane(s, i, c))
    }
}

/// Copies `src` into `dst` laid out in `order`.
pub(super) fn reorder(src: View, s: Planes, dst: &mut [f32], order: Order) {
    s.map(dst, order, |image, c, out| {
        out.copy_from_slice(src.plane(s, image, c))
    });
}
