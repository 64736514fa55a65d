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

use std::ops::Range;
use std::sync::Once;

use rayon::prelude::*;

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

    /// Columns `range` of this matrix.
    fn columns(self, range: Range<usize>) -> Self {
        let start = (range.start * self.col_stride).min(self.data.len());
        Self {
            data: &self.data[start..],
            cols: range.len(),
            ..self
        }
    }

    /// Rows `range` of this matrix.
    fn rows(self, range: Range<usize>) -> Self {
        self.t().columns(range).t()
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

/// Depth per thread below which [`matmul_deep`] leaves the splitting to the `gemm` crate.
const MIN_SPLIT: usize = 1024;

/// [`matmul`] for products with a long depth (weight gradients over all images' positions): the
/// depth split into one block per thread, each a single-threaded GEMM into its own partial sum,
/// added at the end. The `gemm` crate's own split of such products kept one thread mostly idle
/// (measured on 2 threads, `128 x (8 * 56 * 56) x 160`: 39 against 81 GFLOP/s split here; in
/// DenseNet121's dense blocks 0.24 against 0.20 s per training step).
pub(super) fn matmul_deep(dst: &mut [f32], lhs: Matrix, rhs: Matrix, accumulate: bool) {
    let threads = rayon::current_num_threads();
    let k = lhs.cols;
    if threads == 1 || k < threads * MIN_SPLIT {
        return matmul(dst, lhs, rhs, accumulate, parallelism());
    }
    let block = k.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..k.div_ceil(block))
        .into_par_iter()
        .map(|t| {
            let depth = t * block..((t + 1) * block).min(k);
            let mut part = vec![0f32; dst.len()];
            let (lhs, rhs) = (lhs.columns(depth.clone()), rhs.rows(depth));
            matmul(&mut part, lhs, rhs, false, Parallelism::None);
            part
        })
        .collect();
    if !accumulate {
        dst.fill(0.0);
    }
    for (i, d) in dst.iter_mut().enumerate() {
        *d += partials.iter().map(|p| p[i]).sum::<f32>();
    }
}

/// The `gemm` crate's own threading over the current pool's threads.
pub(super) fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        1 => Parallelism::None,
        threads => Parallelism::Rayon(threads),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split product equals the plain one (to rounding), transposed operands included, with
    /// and without accumulation.
    #[test]
    fn deep_product_matches_the_plain_one() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (m, k, n) = (5, 3 * MIN_SPLIT + 7, 6);
        let value = |i: usize| ((i * 7919) % 13) as f32 / 13.0 - 0.5;
        let a: Vec<f32> = (0..m * k).map(value).collect();
        let b: Vec<f32> = (0..n * k).map(|i| value(i + 3)).collect();
        // a is m x k row-major; b is stored n x k and read transposed, as y1ᵀ is.
        let (lhs, rhs) = (Matrix::new(&a, m, k), Matrix::new(&b, n, k).t());
        for accumulate in [false, true] {
            let mut want = vec![1f32; m * n];
            matmul(&mut want, lhs, rhs, accumulate, Parallelism::None);
            let mut got = vec![1f32; m * n];
            pool.install(|| matmul_deep(&mut got, lhs, rhs, accumulate));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
    }
}
