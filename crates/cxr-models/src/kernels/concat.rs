//! DenseNet's channel concatenation, `[N, Ca, H, W] ++ [N, Cb, H, W]`, copied in parallel per
//! image; its backward hands each input a contiguous slice of the gradient (candle's narrows
//! would leave strided views for the gradient sums that follow to walk).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{tensor, values, with_values};

struct ConcatOp;

/// Per image: the lengths of the two parts.
fn parts(a: &[usize], b: &[usize]) -> candle_core::Result<(usize, usize)> {
    let same_rest = a.len() == 4 && b.len() == 4 && a[0] == b[0] && a[2..] == b[2..];
    if !same_rest {
        candle_core::bail!("concat_channels: cannot join {a:?} and {b:?} along channels");
    }
    let per_channel = a[2] * a[3];
    Ok((a[1] * per_channel, b[1] * per_channel))
}

impl CustomOp2 for ConcatOp {
    fn name(&self) -> &'static str {
        "cxr-concat-channels"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (la, lb) = parts(a_layout.dims(), b_layout.dims())?;
        let (a, b) = (values(a, a_layout)?, values(b, b_layout)?);
        let mut y = vec![0f32; a.len() + b.len()];
        y.par_chunks_mut(la + lb)
            .zip(a.par_chunks(la.max(1)).zip(b.par_chunks(lb.max(1))))
            .for_each(|(y, (a, b))| {
                y[..la].copy_from_slice(a);
                y[la..].copy_from_slice(b);
            });
        let mut dims = a_layout.dims().to_vec();
        dims[1] += b_layout.dims()[1];
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (la, lb) = parts(a.dims(), b.dims())?;
        let (da, db) = with_values(dy, |dy| {
            let mut da = vec![0f32; a.elem_count()];
            let mut db = vec![0f32; b.elem_count()];
            dy.par_chunks(la + lb)
                .zip(
                    da.par_chunks_mut(la.max(1))
                        .zip(db.par_chunks_mut(lb.max(1))),
                )
                .for_each(|(dy, (da, db))| {
                    da.copy_from_slice(&dy[..la]);
                    db.copy_from_slice(&dy[la..]);
                });
            (da, db)
        })?;
        Ok((Some(tensor(da, a.shape())?), Some(tensor(db, b.shape())?)))
    }
}

/// `Tensor::cat(&[a, b], 1)` for f32 CPU tensors `[N, C, H, W]` with equal N, H and W.
pub(crate) fn concat_channels(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, ConcatOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::assert_binary_op_matches;

    #[test]
    fn matches_candle_cat_in_values_and_gradients() {
        assert_binary_op_matches(
            [&[3, 4, 5, 2], &[3, 2, 5, 2], &[3, 6, 5, 2]],
            |a, b| concat_channels(a, b).unwrap(),
            |a, b| Tensor::cat(&[a, b], 1).unwrap(),
        );
    }
}
