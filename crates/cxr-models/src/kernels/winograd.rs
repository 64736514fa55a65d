//! 3x3 stride-1 convolution as Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016).
//!
//! A 2x2 block of outputs of a 3x3 correlation needs 36 multiply-adds per pair of channels
//! done directly, and 16 done in the Winograd domain: the 4x4 input tile `d` under the block and
//! the kernel `g` are transformed (`V = Bᵀ d B`, `U = G g Gᵀ`), multiplied element by element,
//! and transformed back (`Y = Aᵀ (U ⊙ V) A`). Summed over input channels, the element-wise
//! products become 16 independent GEMMs, `M[e] = U[e] V[e]` with `U[e]` of `c_out x c_in` and
//! `V[e]` of `c_in x tiles`: 2.25 times fewer multiply-adds than the im2col GEMM, and no patch
//! matrix nine times the input. The transforms only add and halve, so the result differs from the
//! direct sum by rounding alone (relative 1e-6 here).
//!
//! It serves ResNet's 3x3 stride-1 convolutions, 64 channels or more (56x56 to 14x14; 7x7 from 16
//! images on: see `Geometry::winograd`), forward and, as the convolution with flipped kernels,
//! the input gradient, and the weight gradient: the forward read backwards, `dU[e] = dM[e] V[e]ᵀ`
//! summed over tiles with `dM = A dY Aᵀ`, then `dW = Gᵀ dU G`.

use rayon::prelude::*;

use super::gemm::{matmul, Matrix};
use gemm::Parallelism;

/// Elements of a transformed tile.
const ELEMENTS: usize = 16;

/// Floats between consecutive elements' matrices beyond their length. The transforms read or
/// write all 16 matrices at once; at a power-of-two distance (512 x 512 weights are 1 MB) those
/// 16 streams fall into the same cache sets and evict each other: ResNet's 512-channel weights
/// took 15 ms to transform, 4 ms with this gap.
const GAP: usize = 32;

/// Where element `e`'s matrix of `len` floats starts.
fn element(e: usize, len: usize) -> usize {
    e * (len + GAP)
}

/// A 3x3 convolution with stride 1 and padding 1: the output has the input's size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Winograd {
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) h: usize,
    pub(super) w: usize,
}

impl Winograd {
    /// Tile rows and columns per image (each tile is 2x2 outputs).
    fn tile_grid(&self) -> (usize, usize) {
        (self.h.div_ceil(2), self.w.div_ceil(2))
    }

    pub(super) fn tiles(&self) -> usize {
        let (rows, cols) = self.tile_grid();
        rows * cols
    }

    /// `U[e]` for every element `e` of `G g Gᵀ`: `[16][c_out][c_in]`, from `[c_out, c_in, 3, 3]`.
    /// Element-major, so that each element's matrix is contiguous; the kernels of one output
    /// channel are transformed on one thread, into one row of each element's matrix. (Passes
    /// over all input channels at once, from the taps gathered tap-major, took as long: 1.3-1.4
    /// ms for 256 x 256 kernels, 5.4-6.2 for 512 x 512, on one core.)
    pub(super) fn transform_weights(&self, weight: &[f32]) -> Vec<f32> {
        let pairs = self.c_out * self.c_in;
        let mut u = vec![0f32; element(ELEMENTS, pairs)];
        let mut rows: Vec<Vec<&mut [f32]>> = (0..self.c_out).map(|_| Vec::new()).collect();
        for u_e in u.chunks_exact_mut(pairs + GAP) {
            for (o, row) in u_e[..pairs].chunks_exact_mut(self.c_in).enumerate() {
                rows[o].push(row);
            }
        }
        rows.into_par_iter()
            .zip(weight.par_chunks_exact(self.c_in * 9))
            .for_each(|(mut rows, kernels)| {
                for (i, g) in kernels.chunks_exact(9).enumerate() {
                    for (row, value) in rows.iter_mut().zip(kernel_transform(g)) {
                        row[i] = value;
                    }
                }
            });
        u
    }

    /// The convolution of `images` (`n` images of `[c_in, h, w]`) into `out` (`n` of
    /// `[c_out, h, w]`), with the weights from [`Winograd::transform_weights`]; `v` and `m` are
    /// scratch buffers.
    pub(super) fn images(
        &self,
        images: &[f32],
        u: &[f32],
        out: &mut [f32],
        (v, m): (&mut Vec<f32>, &mut Vec<f32>),
        parallelism: Parallelism,
    ) {
        let columns = self.prepare(images, v, m);
        let pairs = self.c_out * self.c_in;
        for e in 0..ELEMENTS {
            let u_e = Matrix::new(&u[element(e, pairs)..][..pairs], self.c_out, self.c_in);
            let (v_len, m_len) = (self.c_in * columns, self.c_out * columns);
            let v_e = Matrix::new(&v[element(e, v_len)..][..v_len], self.c_in, columns);
            let m_e = &mut m[element(e, m_len)..][..m_len];
            matmul(m_e, u_e, v_e, false, parallelism);
        }
        let out_len = self.c_out * self.h * self.w;
        for (i, out) in out.chunks_exact_mut(out_len).enumerate() {
            self.transform_output(m, i * self.tiles(), columns, out);
        }
    }

    /// Sizes the scratch buffers for `images` (`n` of `[c_in, h, w]`) and fills `v` with their
    /// transformed tiles (`[16][c_in][columns]`); returns `columns`, the tiles of all images.
    fn prepare(&self, images: &[f32], v: &mut Vec<f32>, m: &mut Vec<f32>) -> usize {
        let image_len = self.c_in * self.h * self.w;
        let columns = images.len() / image_len * self.tiles();
        v.resize(element(ELEMENTS, self.c_in * columns), 0.0);
        m.resize(element(ELEMENTS, self.c_out * columns), 0.0);
        for (i, image) in images.chunks_exact(image_len).enumerate() {
            self.transform_input(image, i * self.tiles(), columns, v);
        }
        columns
    }

    /// Length of the transformed weights (and of their gradient, [`Winograd::weight_grad`]).
    pub(super) fn transformed_len(&self) -> usize {
        element(ELEMENTS, self.c_out * self.c_in)
    }

    /// Adds the gradient of the transformed weights, `dU[e] += dM[e] V[e]ᵀ` with
    /// `dM = A dY Aᵀ` per output tile, over `images` and their output gradients `dy` into `du`
    /// (the forward's `Y = Aᵀ (U ⊙ V) A` read backwards); `v` and `m` are scratch buffers.
    pub(super) fn accumulate_weight_grad(
        &self,
        images: &[f32],
        dy: &[f32],
        du: &mut [f32],
        (v, m): (&mut Vec<f32>, &mut Vec<f32>),
        parallelism: Parallelism,
    ) {
        let columns = self.prepare(images, v, m);
        for (i, dy) in dy.chunks_exact(self.c_out * self.h * self.w).enumerate() {
            self.transform_output_grad(dy, i * self.tiles(), columns, m);
        }
        let pairs = self.c_out * self.c_in;
        for e in 0..ELEMENTS {
            let (v_len, m_len) = (self.c_in * columns, self.c_out * columns);
            let v_e = Matrix::new(&v[element(e, v_len)..][..v_len], self.c_in, columns);
            let m_e = Matrix::new(&m[element(e, m_len)..][..m_len], self.c_out, columns);
            let du_e = &mut du[element(e, pairs)..][..pairs];
            matmul(du_e, m_e, v_e.t(), true, parallelism);
        }
    }

    /// The weights' gradient `[c_out, c_in, 3, 3]`, `Gᵀ dU G` for every pair of channels, from
    /// the transformed one.
    pub(super) fn weight_grad(&self, du: &[f32]) -> Vec<f32> {
        let pairs = self.c_out * self.c_in;
        let mut dw = vec![0f32; pairs * 9];
        dw.par_chunks_exact_mut(self.c_in * 9)
            .enumerate()
            .for_each(|(o, dw)| {
                for (i, dw) in dw.chunks_exact_mut(9).enumerate() {
                    let x = |e: usize| du[element(e, pairs) + o * self.c_in + i];
                    let cols: [[f32; 3]; 4] =
                        std::array::from_fn(|s| gt([x(s), x(4 + s), x(8 + s), x(12 + s)]));
                    for a in 0..3 {
                        let row = gt(std::array::from_fn(|s| cols[s][a]));
                        dw[3 * a..][..3].copy_from_slice(&row);
                    }
                }
            });
        dw
    }

    /// `dM = A dY Aᵀ` of every 2x2 output tile of one image's output gradient (`[c_out, h, w]`,
    /// zero past the image's edge) into columns `first..` of `m` (`[16][c_out][columns]`).
    fn transform_output_grad(&self, dy: &[f32], first: usize, columns: usize, m: &mut [f32]) {
        let (tile_rows, tiles) = self.tile_grid();
        let (h, w) = (self.h, self.w);
        let plane_stride = element(1, self.c_out * columns);
        for (o, plane) in dy.chunks_exact(h * w).enumerate() {
            for ti in 0..tile_rows {
                for tj in 0..tiles {
                    let y = |r: usize, s: usize| {
                        let (row, col) = (2 * ti + r, 2 * tj + s);
                        if row < h && col < w {
                            plane[row * w + col]
                        } else {
                            0.0
                        }
                    };
                    // A dY, column by column (cols[s][r]), then (A dY) Aᵀ row by row.
                    let cols: [[f32; 4]; 2] = std::array::from_fn(|s| a([y(0, s), y(1, s)]));
                    let tile = o * columns + first + ti * tiles + tj;
                    for r in 0..4 {
                        let row = a([cols[0][r], cols[1][r]]);
                        for (s, value) in row.into_iter().enumerate() {
                            m[(4 * r + s) * plane_stride + tile] = value;
                        }
                    }
                }
            }
        }
    }

    /// `V = Bᵀ d B` of every tile of one image, into columns `first..` of `v`
    /// (`[16][c_in][columns]`). (Passes vectorised over a row of tiles, from the rows split into
    /// even and odd columns, ran slower: at 14x14 a row has 7 tiles.)
    fn transform_input(&self, image: &[f32], first: usize, columns: usize, v: &mut [f32]) {
        let (tile_rows, tiles) = self.tile_grid();
        let (h, w) = (self.h, self.w);
        // The 4 input rows under a row of tiles, padded: one zero on the left, zeros past the
        // image on the right.
        let padded = 2 * tiles + 2;
        let mut rows = vec![0f32; 4 * padded];
        let plane_stride = element(1, self.c_in * columns);
        for (c, plane) in image.chunks_exact(h * w).enumerate() {
            for ti in 0..tile_rows {
                for (r, row) in rows.chunks_exact_mut(padded).enumerate() {
                    match (2 * ti + r).checked_sub(1).filter(|&y| y < h) {
                        Some(y) => row[1..=w].copy_from_slice(&plane[y * w..][..w]),
                        None => row.fill(0.0),
                    }
                }
                for tj in 0..tiles {
                    let d = |r: usize, s: usize| rows[r * padded + 2 * tj + s];
                    // Bᵀ d, column by column (cols[s][r]), then (Bᵀ d) B row by row.
                    let cols: [[f32; 4]; 4] =
                        std::array::from_fn(|s| bt([d(0, s), d(1, s), d(2, s), d(3, s)]));
                    let tile = c * columns + first + ti * tiles + tj;
                    for r in 0..4 {
                        let row = bt(std::array::from_fn(|s| cols[s][r]));
                        for (s, value) in row.into_iter().enumerate() {
                            v[(4 * r + s) * plane_stride + tile] = value;
                        }
                    }
                }
            }
        }
    }

    /// `Y = Aᵀ M A` of every tile of one image, from columns `first..` of `m`
    /// (`[16][c_out][columns]`), cropped into `out` (`[c_out, h, w]`).
    fn transform_output(&self, m: &[f32], first: usize, columns: usize, out: &mut [f32]) {
        let (tile_rows, tiles) = self.tile_grid();
        let (h, w) = (self.h, self.w);
        let plane_stride = element(1, self.c_out * columns);
        for (o, plane) in out.chunks_exact_mut(h * w).enumerate() {
            for ti in 0..tile_rows {
                for tj in 0..tiles {
                    let tile = o * columns + first + ti * tiles + tj;
                    let m = |e: usize| m[e * plane_stride + tile];
                    // Aᵀ M, column by column (cols[s][r]), then (Aᵀ M) A row by row.
                    let cols: [[f32; 2]; 4] =
                        std::array::from_fn(|s| at([m(s), m(4 + s), m(8 + s), m(12 + s)]));
                    let rows: [[f32; 2]; 2] =
                        std::array::from_fn(|r| at(std::array::from_fn(|s| cols[s][r])));
                    // Cropped at the image's edge.
                    for (r, [y0, y1]) in rows.into_iter().enumerate() {
                        let y = 2 * ti + r;
                        if y >= h {
                            break;
                        }
                        let x = 2 * tj;
                        plane[y * w + x] = y0;
                        if x + 1 < w {
                            plane[y * w + x + 1] = y1;
                        }
                    }
                }
            }
        }
    }
}

/// `Bᵀ x` for four values `x` (a column of an input tile, or a row of `Bᵀ d`), with
/// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
fn bt([x0, x1, x2, x3]: [f32; 4]) -> [f32; 4] {
    [x0 - x2, x1 + x2, x2 - x1, x1 - x3]
}

/// `Aᵀ x`, with `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
fn at([x0, x1, x2, x3]: [f32; 4]) -> [f32; 2] {
    [x0 + x1 + x2, x1 - x2 - x3]
}

/// `A x` for two values `x`, with `A = [[1, 0], [1, 1], [1, -1], [0, -1]]`.
fn a([x0, x1]: [f32; 2]) -> [f32; 4] {
    [x0, x0 + x1, x0 - x1, -x1]
}

/// `Gᵀ x` for four values `x`, with `Gᵀ = [[1, ½, ½, 0], [0, ½, -½, 0], [0, ½, ½, 1]]`.
fn gt([x0, x1, x2, x3]: [f32; 4]) -> [f32; 3] {
    [x0 + 0.5 * (x1 + x2), 0.5 * (x1 - x2), 0.5 * (x1 + x2) + x3]
}

/// `G g Gᵀ` of one 3x3 kernel (row-major), element `4 r + s` at index `4 r + s`.
fn kernel_transform(g: &[f32]) -> [f32; ELEMENTS] {
    // G g, column by column (cols[b][r]), then (G g) Gᵀ row by row.
    let cols: [[f32; 4]; 3] = std::array::from_fn(|b| gm([g[b], g[3 + b], g[6 + b]]));
    let rows: [[f32; 4]; 4] = std::array::from_fn(|r| gm(std::array::from_fn(|b| cols[b][r])));
    std::array::from_fn(|e| rows[e / 4][e % 4])
}

/// `G x` for three values `x`, with `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`.
fn gm([x0, x1, x2]: [f32; 3]) -> [f32; 4] {
    [x0, 0.5 * (x0 + x1 + x2), 0.5 * (x0 - x1 + x2), x2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain sum `y[o][i][j] = Σ w[o][c][a][b] x[c][i + a - 1][j + b - 1]`.
    fn naive(x: &[f32], w: &[f32], wg: &Winograd) -> Vec<f32> {
        let (h, wd) = (wg.h as isize, wg.w as isize);
        let mut y = vec![0f32; wg.c_out * wg.h * wg.w];
        for o in 0..wg.c_out {
            for i in 0..h {
                for j in 0..wd {
                    let mut sum = 0f32;
                    for c in 0..wg.c_in {
                        for a in 0..3isize {
                            for b in 0..3isize {
                                let (r, s) = (i + a - 1, j + b - 1);
                                if r < 0 || s < 0 || r >= h || s >= wd {
                                    continue;
                                }
                                let xv = x[(c * wg.h + r as usize) * wg.w + s as usize];
                                sum +=
                                    w[((o * wg.c_in + c) * 3 + a as usize) * 3 + b as usize] * xv;
                            }
                        }
                    }
                    y[(o * wg.h + i as usize) * wg.w + j as usize] = sum;
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_plain_sum() {
        for (c_in, c_out, h, w) in [(1, 1, 2, 2), (2, 3, 5, 4), (3, 2, 7, 7)] {
            let wg = Winograd { c_in, c_out, h, w };
            let x: Vec<f32> = (0..c_in * h * w).map(|i| (i % 7) as f32 - 3.0).collect();
            let k: Vec<f32> = (0..c_out * c_in * 9)
                .map(|i| (i % 5) as f32 * 0.5 - 1.0)
                .collect();
            let u = wg.transform_weights(&k);
            let mut y = vec![0f32; c_out * h * w];
            wg.images(
                &x,
                &u,
                &mut y,
                (&mut Vec::new(), &mut Vec::new()),
                Parallelism::None,
            );
            let want = naive(&x, &k, &wg);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{c_in}x{h}x{w} -> {c_out}: {i}: {a} vs {b}"
                );
            }
        }
    }
}
