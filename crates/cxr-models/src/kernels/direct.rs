//! Direct stride-1 convolution on AVX2 + FMA or AVX-512: no patch matrix and no packing.
//!
//! im2col + GEMM pays twice for a 3x3 convolution with few output channels (DenseNet's 32-channel
//! growth convolutions, 44% of its forward FLOPs): im2col writes a patch matrix nine times the
//! input, and the GEMM then copies ("packs") all of it again, to use each value for only 32
//! multiply-adds. That GEMM ran at 34 GFLOP/s on one core here, against 65-78 for square ones.
//!
//! Here the input is copied once, zero-padded, into planes of width `wp = w + 2p`. Output
//! position `(i, j)` then becomes the flat index `q = i * wp + j`, and kernel tap `(c, ki, kj)`
//! reads the flat input at `q + c * plane + ki * wp + kj`: for every tap, consecutive outputs
//! read consecutive inputs. A microkernel keeps a tile of 3 vectors of positions x 4 channels
//! of outputs in 12 vector registers (24 positions with AVX2's 8 lanes, 48 with AVX-512's 16)
//! and walks all `c_in * k * k` taps, loading 3 input vectors and broadcasting 4 weights per
//! tap. The `k - 1` columns of each output row beyond `w_out` are computed and dropped (3% of
//! the work at 56x56, 22% at 7x7).
//!
//! Both instruction sets run one assembly body (`microkernels!`), instantiated for each vector
//! width, so a test on either kind of machine exercises the code the other runs; the tests run
//! every variant the machine has.

use super::simd::Simd;

/// Vectors of output positions per tile.
const VECTORS: usize = 3;
/// Output channels per tile.
const CHANNELS: usize = 4;

/// One stride-1 convolution: square kernel `k`, zero padding `p` on every side.
#[derive(Clone, Copy, Debug)]
pub(super) struct Direct {
    /// The instruction set the microkernels run on.
    pub(super) simd: Simd,
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) kernel: usize,
    pub(super) padding: usize,
}

impl Direct {
    /// Width of the padded planes, and the stride of output rows in flat indices.
    fn wp(&self) -> usize {
        self.w + 2 * self.padding
    }

    fn plane(&self) -> usize {
        (self.h + 2 * self.padding) * self.wp()
    }

    fn h_out(&self) -> usize {
        self.h + 2 * self.padding + 1 - self.kernel
    }

    fn w_out(&self) -> usize {
        self.w + 2 * self.padding + 1 - self.kernel
    }

    /// Output positions per tile.
    fn tile(&self) -> usize {
        VECTORS * self.simd.lanes()
    }

    /// Flat output positions computed, rounded up to whole tiles.
    fn flat_positions(&self) -> usize {
        (self.h_out() * self.wp()).div_ceil(self.tile()) * self.tile()
    }

    fn taps(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }

    /// Where each tap reads, relative to the output's flat index: `c * plane + ki * wp + kj`.
    fn tap_offsets(&self) -> Vec<u32> {
        assert!(self.offsets_fit(), "{self:?}: tap offsets past u32");
        let (k, wp, plane) = (self.kernel, self.wp(), self.plane());
        (0..self.taps())
            .map(|t| (t / (k * k) * plane + t / k % k * wp + t % k) as u32)
            .collect()
    }

    /// Whether every tap offset fits the microkernel's 32-bit offsets (4 G floats of padded
    /// input: thousands of channels at 1024x1024); callers use the GEMM path otherwise.
    pub(super) fn offsets_fit(&self) -> bool {
        self.input_len() <= u32::MAX as usize
    }

    /// The weights `[c_out, c_in, k, k]` as `[c_out / 4][taps][4]` (zeros past `c_out`), so a
    /// tile reads its 4 channels' weights for one tap from 16 consecutive bytes.
    pub(super) fn pack_weights(&self, weight: &[f32]) -> Vec<f32> {
        let taps = self.taps();
        let blocks = self.c_out.div_ceil(CHANNELS);
        let mut packed = vec![0f32; blocks * taps * CHANNELS];
        for (o, kernel) in weight.chunks_exact(taps).enumerate() {
            let block = &mut packed[o / CHANNELS * taps * CHANNELS..][..taps * CHANNELS];
            for (t, &v) in kernel.iter().enumerate() {
                block[t * CHANNELS + o % CHANNELS] = v;
            }
        }
        packed
    }

    /// Scratch floats [`Direct::image`] needs: the padded input and the flat output.
    fn scratch_len(&self) -> usize {
        self.input_len() + self.flat_len()
    }

    /// The padded planes, plus what the last tile of the last plane reads past them (up to one
    /// tile and one kernel window).
    fn input_len(&self) -> usize {
        self.c_in * self.plane() + self.tile() + self.kernel * self.wp()
    }

    /// `y = conv(x)` for one image `x` (`[c_in, h, w]`) into `y` (`[c_out, h_out, w_out]`),
    /// with weights from [`Direct::pack_weights`].
    pub(super) fn image(&self, x: &[f32], packed: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) {
        assert!(
            self.simd.available(),
            "{:?} is not available here",
            self.simd
        );
        assert_eq!(x.len(), self.c_in * self.h * self.w);
        assert_eq!(y.len(), self.c_out * self.h_out() * self.w_out());
        assert_eq!(
            packed.len(),
            self.c_out.div_ceil(CHANNELS) * CHANNELS * self.taps()
        );
        let (input, flat) = self.split_scratch(scratch);
        self.pad(x, input);
        let offsets = self.tap_offsets();
        let positions = self.flat_positions();
        let panel = self.taps() * CHANNELS;
        // Tiles outermost: the inputs one tile reads (c_in * k rows of 26 floats) are read by
        // every channel block while they are in cache. The other order streams the whole padded
        // image from memory once per block, at half the speed.
        let tile = self.simd.pick::<TileKernel>(avx2::tile, avx512::tile);
        for q in (0..positions).step_by(self.tile()) {
            for (block, out) in flat.chunks_exact_mut(CHANNELS * positions).enumerate() {
                // SAFETY: `self.simd` is available (asserted above). Reads: tap offsets stay
                // below `c_in * plane`, plus `q + tile <= positions`, which `scratch_len` leaves
                // room for past the planes; the block's weights are `panel` floats. Writes: rows
                // `r * positions + q .. + tile` of `out`, `r < CHANNELS`.
                unsafe {
                    tile(
                        input.as_ptr().add(q),
                        &offsets,
                        packed[block * panel..][..panel].as_ptr(),
                        out.as_mut_ptr().add(q),
                        positions,
                    )
                };
            }
        }
        self.unflatten(flat, y);
    }

    /// `dw += dy ⋆ x` for one image: the weight gradient (`[c_out, c_in, k, k]`) of
    /// [`Direct::image`], from its input `x` and output gradient `dy`.
    ///
    /// Every weight's gradient is a dot product over the output positions of `dy` with the input
    /// shifted by the weight's tap; in the flat layout both are contiguous. `dy` is copied into
    /// flat rows with zeros at the dropped columns, so they add nothing, and a microkernel
    /// accumulates 4 output channels x 3 horizontally adjacent taps, a vector of positions at a
    /// time.
    pub(super) fn weight_grad_image(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        assert!(
            self.simd.available(),
            "{:?} is not available here",
            self.simd
        );
        assert_eq!(x.len(), self.c_in * self.h * self.w);
        assert_eq!(dy.len(), self.c_out * self.h_out() * self.w_out());
        assert_eq!(dw.len(), self.c_out * self.taps());
        let (input, flat) = self.split_scratch(scratch);
        self.pad(x, input);
        self.flatten(dy, flat);
        let (k, positions, taps) = (self.kernel, self.flat_positions(), self.taps());
        let lanes = self.simd.lanes();
        let dot_tile = self
            .simd
            .pick::<DotKernel>(avx2::dot_tile, avx512::dot_tile);
        let mut sums = [0f32; DOT_SUMS];
        for (block, rows) in flat.chunks_exact(CHANNELS * positions).enumerate() {
            for c in 0..self.c_in {
                for ki in 0..k {
                    for kj in (0..k).step_by(3) {
                        let offset = c * self.plane() + ki * self.wp() + kj;
                        // SAFETY: `self.simd` is available (asserted above). Reads: 3 shifted
                        // input rows of `positions` floats from `offset + 2`, inside
                        // `input_len` (see `input_len`), and 4 rows of `flat`.
                        unsafe {
                            dot_tile(
                                input[offset..].as_ptr(),
                                rows.as_ptr(),
                                positions,
                                &mut sums,
                            )
                        };
                        for r in 0..CHANNELS.min(self.c_out - block * CHANNELS) {
                            let o = block * CHANNELS + r;
                            for t in 0..3.min(k - kj) {
                                let sum: f32 = sums[(r * 3 + t) * lanes..][..lanes].iter().sum();
                                dw[o * taps + (c * k + ki) * k + kj + t] += sum;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether [`Direct::weight_grad_image`] beats im2col + GEMM: on large images. Each dot
    /// product ends in a reduction across lanes, which small images do not amortise (7x7 to
    /// 28x28: 9 to 105 vector steps per dot product); im2col is cheap there. Measured on one
    /// core: 69 GFLOP/s at 56x56, but 46, 21 and 6 at 28x28, 14x14 and 7x7.
    pub(super) fn weight_grad_pays(&self) -> bool {
        self.flat_positions() >= 2048
    }

    /// Copies `dy` into flat rows: `w_out` values then `k - 1` zeros per output row, zeros in
    /// the positions rounded up to a whole tile, and zero rows up to a whole channel block.
    fn flatten(&self, dy: &[f32], flat: &mut [f32]) {
        let (wp, w_out) = (self.wp(), self.w_out());
        let rows = flat.chunks_exact_mut(self.flat_positions());
        let mut channels = dy.chunks_exact(self.h_out() * w_out);
        for dst in rows {
            let Some(src) = channels.next() else {
                dst.fill(0.0);
                continue;
            };
            let (body, tail) = dst.split_at_mut(self.h_out() * wp);
            tail.fill(0.0);
            for (src, dst) in src.chunks_exact(w_out).zip(body.chunks_exact_mut(wp)) {
                dst[..w_out].copy_from_slice(src);
                dst[w_out..].fill(0.0);
            }
        }
    }

    fn flat_len(&self) -> usize {
        self.c_out.div_ceil(CHANNELS) * CHANNELS * self.flat_positions()
    }

    /// The padded input and the flat rows, from a reused buffer whose old values are all
    /// overwritten (zeroing it whole cost more than the convolution's own reads).
    fn split_scratch<'a>(&self, scratch: &'a mut Vec<f32>) -> (&'a mut [f32], &'a mut [f32]) {
        if scratch.len() < self.scratch_len() {
            scratch.resize(self.scratch_len(), 0.0);
        }
        scratch[..self.scratch_len()].split_at_mut(self.input_len())
    }

    /// Copies `x` into zero-padded planes, and zeros what lies past them.
    fn pad(&self, x: &[f32], input: &mut [f32]) {
        let (p, w, wp) = (self.padding, self.w, self.wp());
        let (planes, past) = input.split_at_mut(self.c_in * self.plane());
        past.fill(0.0);
        for (channel, plane) in x
            .chunks_exact(self.h * w)
            .zip(planes.chunks_exact_mut(self.plane()))
        {
            let (top, rest) = plane.split_at_mut(p * wp);
            let (rows, bottom) = rest.split_at_mut(self.h * wp);
            top.fill(0.0);
            bottom.fill(0.0);
            for (src, dst) in channel.chunks_exact(w).zip(rows.chunks_exact_mut(wp)) {
                dst[..p].fill(0.0);
                dst[p..p + w].copy_from_slice(src);
                dst[p + w..].fill(0.0);
            }
        }
    }

    /// Keeps the first `w_out` of every `wp` flat positions of each output row.
    fn unflatten(&self, flat: &[f32], y: &mut [f32]) {
        let (wp, w_out) = (self.wp(), self.w_out());
        let channel = self.h_out() * w_out;
        for (o, dst) in y.chunks_exact_mut(channel).enumerate() {
            let src = &flat[o * self.flat_positions()..];
            for (i, row) in dst.chunks_exact_mut(w_out).enumerate() {
                row.copy_from_slice(&src[i * wp..][..w_out]);
            }
        }
    }
}

/// A forward microkernel (`tile` below), of either width.
type TileKernel = unsafe fn(*const f32, &[u32], *const f32, *mut f32, usize);
/// A weight-gradient microkernel (`dot_tile` below), of either width.
type DotKernel = unsafe fn(*const f32, *const f32, usize, &mut [f32; DOT_SUMS]);

/// Floats of [`Direct::weight_grad_image`]'s sums: 4 channels x 3 taps x the widest vector.
const DOT_SUMS: usize = CHANNELS * 3 * 16;

/// Assembly zeroing the 12 accumulators of both microkernels, of either width: a VEX-encoded
/// `vxorps` on the low 128 bits clears the whole register, and needs no AVX-512DQ (which
/// `vxorps zmm` would).
macro_rules! zero_accumulators {
    () => {
        "vxorps xmm0, xmm0, xmm0
         vxorps xmm1, xmm1, xmm1
         vxorps xmm2, xmm2, xmm2
         vxorps xmm3, xmm3, xmm3
         vxorps xmm4, xmm4, xmm4
         vxorps xmm5, xmm5, xmm5
         vxorps xmm6, xmm6, xmm6
         vxorps xmm7, xmm7, xmm7
         vxorps xmm8, xmm8, xmm8
         vxorps xmm9, xmm9, xmm9
         vxorps xmm10, xmm10, xmm10
         vxorps xmm11, xmm11, xmm11"
    };
}

/// The two microkernels for one vector width: `$v` names its registers (`ymm`, `zmm`, which
/// also spells the memory operands' size: `ymmword`), `$bytes` is one vector's size and `$lanes`
/// its floats. Written in assembly because the register budget is exact: 12 accumulators, 3
/// input vectors and 1 broadcast weight are all 16 AVX registers. Compiled from intrinsics, one
/// accumulator was spilled to the stack and reloaded every tap, a store-to-load chain that
/// halved the speed. AVX-512 has 32 registers but the same body is kept for both widths: a test
/// on either machine then checks the instructions the other runs, up to the register names.
macro_rules! microkernels {
    ($name:ident, $features:literal, $v:literal, $bytes:literal, $lanes:literal,
     [$($register:tt),*]) => {
        mod $name {
            use super::CHANNELS;

            /// Accumulates one 3-vector x 4-channel tile over all taps and stores it: output
            /// row `r` (channel `r` of the block) at `out + r * out_stride`.
            ///
            /// # Safety
            /// The target features must be available; `input + offset .. + 3 * lanes` must be
            /// readable for every offset, `weights` must hold `4 * offsets.len()` floats, and
            /// the four output rows writable.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn tile(
                input: *const f32,
                offsets: &[u32],
                weights: *const f32,
                out: *mut f32,
                out_stride: usize,
            ) {
                if offsets.is_empty() {
                    for r in 0..CHANNELS {
                        // SAFETY: the caller guarantees that the four output rows are writable.
                        unsafe { std::ptr::write_bytes(out.add(r * out_stride), 0, 3 * $lanes) };
                    }
                    return;
                }
                // SAFETY: the caller's contract (# Safety above) covers every address the
                // assembly reads and writes, and the target features it uses; the 16 vector
                // registers it touches are declared clobbered.
                unsafe {
                    std::arch::asm!(
                        zero_accumulators!(),
                        "2:",
                        "mov {tap:e}, dword ptr [{offsets}]",
                        concat!("vmovups ", $v, "12, ", $v, "word ptr [{input} + 4*{tap}]"),
                        concat!("vmovups ", $v, "13, ", $v, "word ptr [{input} + 4*{tap} + ", $bytes, "]"),
                        concat!("vmovups ", $v, "14, ", $v, "word ptr [{input} + 4*{tap} + 2*", $bytes, "]"),
                        concat!("vbroadcastss ", $v, "15, dword ptr [{weights}]"),
                        concat!("vfmadd231ps ", $v, "0, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "1, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "2, ", $v, "14, ", $v, "15"),
                        concat!("vbroadcastss ", $v, "15, dword ptr [{weights} + 4]"),
                        concat!("vfmadd231ps ", $v, "3, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "4, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "5, ", $v, "14, ", $v, "15"),
                        concat!("vbroadcastss ", $v, "15, dword ptr [{weights} + 8]"),
                        concat!("vfmadd231ps ", $v, "6, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "7, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "8, ", $v, "14, ", $v, "15"),
                        concat!("vbroadcastss ", $v, "15, dword ptr [{weights} + 12]"),
                        concat!("vfmadd231ps ", $v, "9, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "10, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "11, ", $v, "14, ", $v, "15"),
                        "add {weights}, 16",
                        "add {offsets}, 4",
                        "dec {taps}",
                        "jnz 2b",
                        concat!("vmovups ", $v, "word ptr [{out}], ", $v, "0"),
                        concat!("vmovups ", $v, "word ptr [{out} + ", $bytes, "], ", $v, "1"),
                        concat!("vmovups ", $v, "word ptr [{out} + 2*", $bytes, "], ", $v, "2"),
                        "add {out}, {stride}",
                        concat!("vmovups ", $v, "word ptr [{out}], ", $v, "3"),
                        concat!("vmovups ", $v, "word ptr [{out} + ", $bytes, "], ", $v, "4"),
                        concat!("vmovups ", $v, "word ptr [{out} + 2*", $bytes, "], ", $v, "5"),
                        "add {out}, {stride}",
                        concat!("vmovups ", $v, "word ptr [{out}], ", $v, "6"),
                        concat!("vmovups ", $v, "word ptr [{out} + ", $bytes, "], ", $v, "7"),
                        concat!("vmovups ", $v, "word ptr [{out} + 2*", $bytes, "], ", $v, "8"),
                        "add {out}, {stride}",
                        concat!("vmovups ", $v, "word ptr [{out}], ", $v, "9"),
                        concat!("vmovups ", $v, "word ptr [{out} + ", $bytes, "], ", $v, "10"),
                        concat!("vmovups ", $v, "word ptr [{out} + 2*", $bytes, "], ", $v, "11"),
                        "vzeroupper",
                        input = in(reg) input,
                        offsets = inout(reg) offsets.as_ptr() => _,
                        weights = inout(reg) weights => _,
                        taps = inout(reg) offsets.len() => _,
                        out = inout(reg) out => _,
                        stride = in(reg) out_stride * 4,
                        tap = out(reg) _,
                        $(out($register) _,)*
                        options(nostack),
                    );
                }
            }

            /// Dot products of 4 rows of `dy` (`positions` floats each, `positions` apart) with
            /// the input at 3 consecutive shifts (`x`, `x + 1`, `x + 2`), a vector of lanes
            /// each: `sums[(r * 3 + t) * lanes + l]`, to be added across lanes. `positions`
            /// must be a multiple of the lanes.
            ///
            /// # Safety
            /// The target features must be available, `x .. x + positions + 2` and the 4 rows
            /// readable.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn dot_tile(
                x: *const f32,
                dy: *const f32,
                positions: usize,
                sums: &mut [f32; super::DOT_SUMS],
            ) {
                debug_assert!(positions > 0 && positions.is_multiple_of($lanes));
                // SAFETY: as for `tile`: the caller's contract covers every address, and the
                // vector registers are declared clobbered.
                unsafe {
                    std::arch::asm!(
                        zero_accumulators!(),
                        "2:",
                        concat!("vmovups ", $v, "12, ", $v, "word ptr [{x}]"),
                        concat!("vmovups ", $v, "13, ", $v, "word ptr [{x} + 4]"),
                        concat!("vmovups ", $v, "14, ", $v, "word ptr [{x} + 8]"),
                        concat!("vmovups ", $v, "15, ", $v, "word ptr [{dy}]"),
                        concat!("vfmadd231ps ", $v, "0, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "1, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "2, ", $v, "14, ", $v, "15"),
                        concat!("vmovups ", $v, "15, ", $v, "word ptr [{dy} + {stride}]"),
                        concat!("vfmadd231ps ", $v, "3, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "4, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "5, ", $v, "14, ", $v, "15"),
                        concat!("vmovups ", $v, "15, ", $v, "word ptr [{dy} + 2*{stride}]"),
                        concat!("vfmadd231ps ", $v, "6, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "7, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "8, ", $v, "14, ", $v, "15"),
                        concat!("vmovups ", $v, "15, ", $v, "word ptr [{dy} + {stride3}]"),
                        concat!("vfmadd231ps ", $v, "9, ", $v, "12, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "10, ", $v, "13, ", $v, "15"),
                        concat!("vfmadd231ps ", $v, "11, ", $v, "14, ", $v, "15"),
                        concat!("add {x}, ", $bytes),
                        concat!("add {dy}, ", $bytes),
                        "dec {steps}",
                        "jnz 2b",
                        concat!("vmovups ", $v, "word ptr [{sums}], ", $v, "0"),
                        concat!("vmovups ", $v, "word ptr [{sums} + ", $bytes, "], ", $v, "1"),
                        concat!("vmovups ", $v, "word ptr [{sums} + 2*", $bytes, "], ", $v, "2"),
                        concat!("add {sums}, 3*", $bytes),
                        concat!("vmovups ", $v, "word ptr [{sums}], ", $v, "3"),
                        concat!("vmovups ", $v, "word ptr [{sums} + ", $bytes, "], ", $v, "4"),
                        concat!("vmovups ", $v, "word ptr [{sums} + 2*", $bytes, "], ", $v, "5"),
                        concat!("add {sums}, 3*", $bytes),
                        concat!("vmovups ", $v, "word ptr [{sums}], ", $v, "6"),
                        concat!("vmovups ", $v, "word ptr [{sums} + ", $bytes, "], ", $v, "7"),
                        concat!("vmovups ", $v, "word ptr [{sums} + 2*", $bytes, "], ", $v, "8"),
                        concat!("add {sums}, 3*", $bytes),
                        concat!("vmovups ", $v, "word ptr [{sums}], ", $v, "9"),
                        concat!("vmovups ", $v, "word ptr [{sums} + ", $bytes, "], ", $v, "10"),
                        concat!("vmovups ", $v, "word ptr [{sums} + 2*", $bytes, "], ", $v, "11"),
                        "vzeroupper",
                        x = inout(reg) x => _,
                        dy = inout(reg) dy => _,
                        steps = inout(reg) positions / $lanes => _,
                        stride = in(reg) positions * 4,
                        stride3 = in(reg) positions * 12,
                        sums = inout(reg) sums.as_mut_ptr() => _,
                        $(out($register) _,)*
                        options(nostack),
                    );
                }
            }
        }
    };
}

microkernels!(
    avx2,
    "avx2,fma",
    "ymm",
    "32",
    8,
    [
        "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm8", "ymm9", "ymm10",
        "ymm11", "ymm12", "ymm13", "ymm14", "ymm15"
    ]
);
microkernels!(
    avx512,
    "avx512f,avx2,fma",
    "zmm",
    "64",
    16,
    [
        "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10",
        "zmm11", "zmm12", "zmm13", "zmm14", "zmm15"
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook sum, in f64.
    fn reference(d: &Direct, x: &[f32], weight: &[f32]) -> Vec<f32> {
        let (k, p) = (d.kernel as isize, d.padding as isize);
        let (h, w) = (d.h as isize, d.w as isize);
        let mut y = Vec::new();
        for o in 0..d.c_out {
            for i in 0..d.h_out() as isize {
                for j in 0..d.w_out() as isize {
                    let mut sum = 0f64;
                    for c in 0..d.c_in {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (r, s) = (i + ki - p, j + kj - p);
                                if (0..h).contains(&r) && (0..w).contains(&s) {
                                    let xv = x[c * d.h * d.w + (r * w + s) as usize];
                                    let wv = weight[((o * d.c_in + c) * d.kernel + ki as usize)
                                        * d.kernel
                                        + kj as usize];
                                    sum += xv as f64 * wv as f64;
                                }
                            }
                        }
                    }
                    y.push(sum as f32);
                }
            }
        }
        y
    }

    #[test]
    fn refuses_inputs_past_32_bit_offsets() {
        let d = |c_in| Direct {
            simd: Simd::Avx2,
            c_in,
            c_out: 32,
            h: 1024,
            w: 1024,
            kernel: 3,
            padding: 1,
        };
        assert!(d(1024).offsets_fit());
        assert!(!d(4096).offsets_fit());
    }

    /// Every variant this machine runs (AVX2, AVX-512) against the textbook sum.
    #[test]
    fn matches_the_textbook_sum() {
        for simd in Simd::supported() {
            matches_the_textbook_sum_on(simd);
        }
    }

    fn matches_the_textbook_sum_on(simd: Simd) {
        let shapes = [
            (3, 5, 7, 9, 3, 1),
            (4, 4, 5, 5, 3, 0),
            (2, 9, 6, 11, 5, 2),
            (5, 1, 3, 4, 1, 0),
        ];
        for (c_in, c_out, h, w, kernel, padding) in shapes {
            let d = Direct {
                simd,
                c_in,
                c_out,
                h,
                w,
                kernel,
                padding,
            };
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let weight: Vec<f32> = (0..c_out * d.taps())
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
                .collect();
            let mut y = vec![f32::NAN; c_out * d.h_out() * d.w_out()];
            // A reused buffer full of NaN: every value the kernels read must be written first.
            let mut scratch = vec![f32::NAN; 1 << 16];
            d.image(&x, &d.pack_weights(&weight), &mut y, &mut scratch);
            let want = reference(&d, &x, &weight);
            for (n, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{d:?} at {n}: {a} vs {b}"
                );
            }
            // The weight gradient of sum(y * dy) is sum over positions of dy * shifted x:
            // each weight's gradient is the output of the same sum with a one-hot weight.
            let dy: Vec<f32> = (0..y.len())
                .map(|i| ((i * 29 % 19) as f32 - 9.0) / 5.0)
                .collect();
            let mut dw = vec![1.0; weight.len()];
            scratch.fill(f32::NAN);
            d.weight_grad_image(&x, &dy, &mut dw, &mut scratch);
            for (n, got) in dw.iter().enumerate() {
                let mut one_hot = vec![0f32; weight.len()];
                one_hot[n] = 1.0;
                let y = reference(&d, &x, &one_hot);
                let want: f64 = 1.0
                    + y.iter()
                        .zip(&dy)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>();
                assert!(
                    (*got as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{d:?} dw[{n}]: {got} vs {want}"
                );
            }
        }
    }
}
