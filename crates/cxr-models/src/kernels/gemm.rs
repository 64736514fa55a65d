//! A row-major view of the `gemm` crate: `dst = [dst +] lhs * rhs` on f32 matrices given by their
//! row and column strides (a transposed operand is the same slice with the strides swapped).
//!
//! The crate copies ("packs") a block of its left operand into a contiguous panel before the
//! microkernels read it, except when that operand is column-major in its own (column-major) view
//! and the product has at most `8 * 6` columns (`16 * 6` with several threads): then it reads the
//! operand in place. A row-major `dst` makes the crate compute the transpose, so that in-place
//! read is exactly our convolution forward with few output channels: `y = W cols` becomes
//! `yᵀ = colsᵀ Wᵀ`, whose left operand is the im2col matrix with one row (`h * w` floats, 12 KB at
//! 56x56) between consecutive depth steps, so every step touches a new page. DenseNet's growth
//! convolutions (3x3, 32 output channels) ran at a third of the rate of the other convolutions
//! that way (15 against 40-60 GFLOP/s, two loaded cores); packed, their GEMM alone runs about
//! twice as fast. [`matmul`] therefore lowers the crate's thresholds to 0 once, so the left operand
//! is always packed: one pass over it per block, paid back by every output column read from the
//! packed panel. The thresholds are process-wide: candle's own matmuls pack the same way.

use std::sync::Once;

use gemm::Parallelism;

/// An `rows x cols` matrix inside a slice: element `(i, j)` is at `i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A contiguous row-major matrix.
    pub(super) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same elements read as the transpose.
    pub(super) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst (lhs.rows x rhs.cols, row-major) = lhs * rhs`, or `dst += lhs * rhs` with `accumulate`.
pub(super) fn matmul(
    dst: &mut [f32],
    lhs: Matrix,
    rhs: Matrix,
    accumulate: bool,
    parallelism: Parallelism,
) {
    static ALWAYS_PACK_LHS: Once = Once::new();
    ALWAYS_PACK_LHS.call_once(|| {
        gemm::set_lhs_packing_threshold_single_thread(0);
        gemm::set_lhs_packing_threshold_multi_thread(0);
    });
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && dst.len() == m * n && lhs.fits() && rhs.fits());
    // SAFETY: the assertion above keeps every index the strides produce inside the slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
