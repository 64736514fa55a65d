//! ResNet's residual join, `relu(a + b)`, as one parallel pass (candle: an add, a ReLU, and
//! three passes more for the ReLU's backward).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{tensor, values, with_values, MIN_PARALLEL_LEN};

struct AddReluOp;

impl CustomOp2 for AddReluOp {
    fn name(&self) -> &'static str {
        "cxr-add-relu"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if a_layout.shape() != b_layout.shape() {
            candle_core::bail!(
                "add_relu: shapes {:?} and {:?} differ",
                a_layout.dims(),
                b_layout.dims()
            );
        }
        let (a, b) = (values(a, a_layout)?, values(b, b_layout)?);
        let mut y = vec![0f32; a.len()];
        y.par_iter_mut()
            .zip(a.par_iter().zip(b))
            .with_min_len(MIN_PARALLEL_LEN)
            .for_each(|(y, (a, b))| *y = (a + b).max(0.0));
        Ok((CpuStorage::F32(y), a_layout.shape().clone()))
    }

    /// Both inputs get the output gradient where the sum was positive.
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = with_values(y, |y| {
            with_values(dy, |dy| {
                let mut g = vec![0f32; y.len()];
                g.par_iter_mut()
                    .zip(y.par_iter().zip(dy))
                    .with_min_len(MIN_PARALLEL_LEN)
                    .for_each(|(g, (&y, &dy))| *g = if y > 0.0 { dy } else { 0.0 });
                g
            })
        })??;
        let g = tensor(g, y.shape())?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `relu(a + b)` for two f32 CPU tensors of the same shape.
pub(crate) fn add_relu(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddReluOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::assert_binary_op_matches;

    #[test]
    fn add_relu_matches_candle_values_and_gradients() {
        // Large enough to take the parallel path.
        let shape: &[usize] = &[3, 5, 40, 37];
        assert_binary_op_matches(
            [shape, shape, shape],
            |a, b| add_relu(a, b).unwrap(),
            |a, b| (a + b).unwrap().relu().unwrap(),
        );
    }
}
