//! Max pool with -inf padding (PyTorch's `max_pool2d`, floor mode) in one pass per direction.
//!
//! The composed version in `layers.rs` needs two padded copies, six elementwise maxima and
//! candle's backward of each; here the forward is one pass over the output and the backward
//! finds each window's first maximum again and adds the gradient there, as PyTorch does.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{tensor, values, with_values, MIN_PARALLEL_LEN};

#[derive(Clone, Copy)]
struct MaxPoolOp {
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Plane sizes: input `h x w`, output `h_out x w_out`.
#[derive(Clone, Copy)]
struct Sizes {
    h: usize,
    w: usize,
    h_out: usize,
    w_out: usize,
}

impl MaxPoolOp {
    fn sizes(&self, dims: &[usize]) -> candle_core::Result<(usize, Sizes)> {
        let &[n, c, h, w] = dims else {
            candle_core::bail!("max_pool2d expects [N, C, H, W], got {dims:?}")
        };
        let out = |len: usize| (len + 2 * self.padding - self.kernel) / self.stride + 1;
        Ok((
            n * c,
            Sizes {
                h,
                w,
                h_out: out(h),
                w_out: out(w),
            },
        ))
    }

    /// Input rows (or columns) of window `i`, clipped to the plane.
    fn window(&self, i: usize, len: usize) -> std::ops::Range<usize> {
        let start = (i * self.stride).saturating_sub(self.padding);
        let end = (i * self.stride + self.kernel - self.padding).min(len);
        start..end
    }

    /// Flat index (within the plane) of the first maximum of output position `(i, j)`.
    fn argmax(&self, plane: &[f32], s: Sizes, i: usize, j: usize) -> usize {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for r in self.window(i, s.h) {
            for c in self.window(j, s.w) {
                let v = plane[r * s.w + c];
                if v > best.0 || best.1 == usize::MAX || v.is_nan() {
                    best = (v, r * s.w + c);
                }
            }
        }
        best.1
    }
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "cxr-max-pool2d"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (planes, s) = self.sizes(layout.dims())?;
        let x = values(x, layout)?;
        let mut y = vec![0f32; planes * s.h_out * s.w_out];
        y.par_chunks_mut(s.h_out * s.w_out)
            .zip(x.par_chunks(s.h * s.w))
            .with_min_len(MIN_PARALLEL_LEN.div_ceil(s.h * s.w))
            .for_each(|(out, plane)| {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = plane[self.argmax(plane, s, k / s.w_out, k % s.w_out)];
                }
            });
        let dims = layout.dims();
        Ok((
            CpuStorage::F32(y),
            Shape::from((dims[0], dims[1], s.h_out, s.w_out)),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (planes, s) = self.sizes(x.dims())?;
        let dx = with_values(x, |x| {
            with_values(dy, |dy| {
                let mut dx = vec![0f32; planes * s.h * s.w];
                dx.par_chunks_mut(s.h * s.w)
                    .zip(
                        x.par_chunks(s.h * s.w)
                            .zip(dy.par_chunks(s.h_out * s.w_out)),
                    )
                    .with_min_len(MIN_PARALLEL_LEN.div_ceil(s.h * s.w))
                    .for_each(|(dx, (plane, dy))| {
                        for (k, g) in dy.iter().enumerate() {
                            dx[self.argmax(plane, s, k / s.w_out, k % s.w_out)] += g;
                        }
                    });
                dx
            })
        })??;
        Ok(Some(tensor(dx, x.shape())?))
    }
}

/// PyTorch's `max_pool2d(x, kernel, stride, padding)` for f32 CPU tensors; the caller has
/// checked that the window fits (`padding * 2 <= kernel <= H + 2 * padding`, same for W).
pub(crate) fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPoolOp {
        kernel,
        stride,
        padding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::assert_close;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_composed_pool_in_values_and_gradients() {
        for (shape, k, s, p) in [
            ((2, 3, 9, 8), 3, 2, 1),
            ((1, 2, 7, 5), 2, 2, 0),
            ((2, 1, 6, 6), 3, 1, 1),
        ] {
            let x = Var::randn(0f32, 1f32, shape, &Device::Cpu).unwrap();
            let run = |y: Tensor| {
                let mix = Tensor::randn(0f32, 1f32, y.shape(), &Device::Cpu).unwrap();
                let grads = (&y * &mix).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(x.as_tensor()).unwrap().clone(), mix)
            };
            let got = max_pool2d(x.as_tensor(), k, s, p).unwrap();
            let want = crate::layers::max_pool2d_composed(x.as_tensor(), k, s, p).unwrap();
            assert_close(&got, &want, 0.0, &format!("{shape:?} k{k} s{s} p{p}: y"));
            // The same upstream gradient for both.
            let (_, dx_got, mix) = run(got);
            let grads = (&want * &mix)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let dx_want = grads.get(x.as_tensor()).unwrap();
            // Overlapping windows add in another order: equal up to rounding.
            assert_close(
                &dx_got,
                dx_want,
                1e-6,
                &format!("{shape:?} k{k} s{s} p{p}: dx"),
            );
        }
    }
}
