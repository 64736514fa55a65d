//! A reduced-size decoder for baseline JPEG: the luma plane at 1/2, 1/4 or 1/8 of full size.
//!
//! Why a decoder of our own: a 2500x2000 CheXpert JPEG holds about 1.5 MB of Huffman-coded
//! coefficients, and decoding those bits is nearly all of the work once the inverse DCT is scaled
//! down. The general-purpose Rust decoders either cannot scale (`zune-jpeg`) or decode the bits at
//! half the speed of libjpeg-turbo (`jpeg-decoder`), which would leave us slower than Pillow's
//! `draft` mode. This decoder does only what a preprocessing run needs, and does it fast:
//!
//! - baseline and extended sequential Huffman JPEGs with 8-bit samples, one interleaved scan,
//!   grey or YCbCr (any sampling, restart intervals allowed): every CheXpert and NIH-derived JPEG;
//!   anything else (progressive, arithmetic, lossless, 12-bit, CMYK, Adobe RGB, multi-scan) returns
//!   [`Outcome::Unsupported`] and goes to `zune-jpeg`'s full decode instead;
//! - the luma (Y) component only: for grey JPEGs that is the image, for colour JPEGs it is BT.601
//!   luma, the same weights as our RGB conversion, so chroma is entropy-decoded (it has to be
//!   skipped over) but never transformed;
//! - each code is looked up together with its value bits in one table read when both fit in
//!   `FAST_BITS` bits (most coefficients of a radiograph), and the bit buffer is refilled eight
//!   bytes at a time when no `0xFF` byte is near;
//! - only the coefficients that the reduced inverse DCT reads (the first 1, 5 or 25 in zigzag
//!   order) are decoded to values; the rest of a block, and every chroma block, is moved past
//!   with `Skip` tables that resolve several codes per lookup, since their lengths alone
//!   matter. Decoding codes one by one is a chain of dependent table loads, and most of a
//!   block's codes are ones that a reduced decode throws away;
//! - the reduced inverse DCT is the exact `N`-point inverse DCT (N = 4, 2, 1) of the `N x N`
//!   lowest frequencies, scaled by `N / 8` so that a flat block keeps its grey level, computed in
//!   `f32` in a fixed order (no fused multiply-add), so that output bytes are the same on every
//!   machine.
//!
//! Data that ends early or breaks the Huffman code is an error, never a silent grey fill.

use crate::decode::Grey;

/// Bits looked up at once. 2^11 entries of four bytes per table stay in L1 cache.
const FAST_BITS: u32 = 11;
const FAST_SIZE: usize = 1 << FAST_BITS;

/// What [`decode`] made of a file.
#[derive(Debug)]
pub enum Outcome {
    Decoded(Grey),
    /// A valid JPEG that this decoder does not handle; use a general decoder.
    Unsupported,
    /// A broken file: the reason for the errors report.
    Broken(String),
}

/// `ZIGZAG[k]` is the natural (row-major) position of the `k`-th coefficient in the stream.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Decode `data` at `eighths / 8` of its size, where `choose(width, height)` picks `eighths`
/// (1, 2 or 4) from the full size, or `None` when a reduced decode will not do.
pub fn decode(data: &[u8], choose: impl FnOnce(usize, usize) -> Option<usize>) -> Outcome {
    let headers = match Headers::parse(data) {
        Ok(Some(h)) => h,
        Ok(None) => return Outcome::Unsupported,
        Err(e) => return Outcome::Broken(format!("JPEG: {e}")),
    };
    let Some(eighths) = choose(headers.width, headers.height) else {
        return Outcome::Unsupported;
    };
    assert!(
        matches!(eighths, 1 | 2 | 4),
        "reduced decode is for 1/8, 2/8 and 4/8"
    );
    match headers.decode(data, eighths) {
        Ok(grey) => Outcome::Decoded(grey),
        Err(e) => Outcome::Broken(format!("JPEG: {e}")),
    }
}

#[derive(Clone, Copy, Default)]
struct Component {
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
}

struct Headers {
    width: usize,
    height: usize,
    components: Vec<Component>,
    quant: [[u16; 64]; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart_interval: usize,
    /// An Adobe APP14 marker said the three components are R, G, B rather than YCbCr.
    adobe_rgb: bool,
    /// Offset of the entropy-coded data.
    scan_start: usize,
}

type Result<T> = std::result::Result<T, String>;

impl Headers {
    /// `Ok(None)`: valid but not for this decoder.
    fn parse(data: &[u8]) -> Result<Option<Headers>> {
        if !data.starts_with(&[0xFF, 0xD8]) {
            return Err("missing start-of-image marker".into());
        }
        let mut h = Headers {
            width: 0,
            height: 0,
            components: Vec::new(),
            quant: [[0; 64]; 4],
            dc: Default::default(),
            ac: Default::default(),
            restart_interval: 0,
            adobe_rgb: false,
            scan_start: 0,
        };
        let mut ids = Vec::new();
        let mut pos = 2;
        loop {
            // Markers may be preceded by any number of 0xFF fill bytes.
            if data.get(pos) != Some(&0xFF) {
                return Err(format!("expected a marker at byte {pos}"));
            }
            while data.get(pos) == Some(&0xFF) {
                pos += 1;
            }
            let marker = *data.get(pos).ok_or("file ends inside the headers")?;
            pos += 1;
            if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
                continue; // no length
            }
            if marker == 0xD9 {
                return Err("end-of-image marker before any scan".into());
            }
            let len = usize::from(u16::from_be_bytes([
                *data.get(pos).ok_or("file ends inside the headers")?,
                *data.get(pos + 1).ok_or("file ends inside the headers")?,
            ]));
            let body = data
                .get(pos + 2..pos + len)
                .filter(|_| len >= 2)
                .ok_or("file ends inside the headers")?;
            pos += len;
            match marker {
                0xC0 | 0xC1 => {
                    if !h.components.is_empty() {
                        return Err("two frame headers".into());
                    }
                    if body.len() < 6 || body[0] != 8 {
                        return Ok(None); // 12-bit samples
                    }
                    h.height = usize::from(u16::from_be_bytes([body[1], body[2]]));
                    h.width = usize::from(u16::from_be_bytes([body[3], body[4]]));
                    let n = usize::from(body[5]);
                    if h.width == 0
                        || h.height == 0
                        || body.len() < 6 + 3 * n
                        || !(n == 1 || n == 3)
                    {
                        return Ok(None); // DNL-defined height, CMYK, odd component counts
                    }
                    for c in body[6..6 + 3 * n].chunks_exact(3) {
                        let (hs, vs) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
                        if !(1..=4).contains(&hs) || !(1..=4).contains(&vs) || c[2] > 3 {
                            return Err("bad component sampling or table".into());
                        }
                        ids.push(c[0]);
                        h.components.push(Component {
                            h: hs,
                            v: vs,
                            quant: usize::from(c[2]),
                            ..Component::default()
                        });
                    }
                }
                // Progressive, lossless, hierarchical, arithmetic: not ours.
                0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
                0xC4 => {
                    let mut b = body;
                    while !b.is_empty() {
                        let (class, id) = (b[0] >> 4, usize::from(b[0] & 15));
                        let counts = b.get(1..17).ok_or("short Huffman table")?;
                        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                        let symbols = b.get(17..17 + total).ok_or("short Huffman table")?;
                        if class > 1 || id > 3 {
                            return Err("bad Huffman table id".into());
                        }
                        let table = Huffman::new(counts, symbols, class == 1)?;
                        if class == 0 {
                            h.dc[id] = Some(table);
                        } else {
                            h.ac[id] = Some(table);
                        }
                        b = &b[17 + total..];
                    }
                }
                0xDB => {
                    let mut b = body;
                    while !b.is_empty() {
                        let (precision, id) = (b[0] >> 4, usize::from(b[0] & 15));
                        let size = if precision == 0 { 64 } else { 128 };
                        let values = b.get(1..1 + size).ok_or("short quantisation table")?;
                        if id > 3 {
                            return Err("bad quantisation table id".into());
                        }
                        for k in 0..64 {
                            h.quant[id][usize::from(ZIGZAG[k])] = if precision == 0 {
                                u16::from(values[k])
                            } else {
                                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
                            };
                        }
                        b = &b[1 + size..];
                    }
                }
                0xDD => {
                    let b = body.get(..2).ok_or("short restart interval")?;
                    h.restart_interval = usize::from(u16::from_be_bytes([b[0], b[1]]));
                }
                // Adobe APP14 with transform 0: the three components are R, G, B, not YCbCr.
                0xEE if body.starts_with(b"Adobe") => h.adobe_rgb = body.get(11) == Some(&0),
                0xDA => {
                    if h.components.is_empty() {
                        return Err("scan before frame header".into());
                    }
                    let n = usize::from(*body.first().ok_or("short scan header")?);
                    if n != h.components.len()
                        || body.len() < 1 + 2 * n + 3
                        || (h.adobe_rgb && n == 3)
                    {
                        return Ok(None); // one scan per component: rare, leave to zune
                    }
                    for (i, c) in body[1..1 + 2 * n].chunks_exact(2).enumerate() {
                        if c[0] != ids[i] {
                            return Ok(None);
                        }
                        let comp = &mut h.components[i];
                        comp.dc_table = usize::from(c[1] >> 4) & 3;
                        comp.ac_table = usize::from(c[1] & 15) & 3;
                    }
                    h.scan_start = pos;
                    let (hmax, vmax) = h.max_sampling();
                    // Luma must be the full-resolution component.
                    if h.components[0].h != hmax || h.components[0].v != vmax {
                        return Ok(None);
                    }
                    return Ok(Some(h));
                }
                _ => {}
            }
        }
    }

    fn max_sampling(&self) -> (usize, usize) {
        let hmax = self.components.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = self.components.iter().map(|c| c.v).max().unwrap_or(1);
        (hmax, vmax)
    }

    fn decode(&self, data: &[u8], eighths: usize) -> Result<Grey> {
        match eighths {
            1 => self.decode_at::<1>(data),
            2 => self.decode_at::<2>(data),
            _ => self.decode_at::<4>(data),
        }
    }

    fn decode_at<const N: usize>(&self, data: &[u8]) -> Result<Grey> {
        let n = N;
        if self.width * self.height > crate::decode::MAX_PIXELS {
            return Err(format!(
                "image is {} x {}, too large",
                self.width, self.height
            ));
        }
        fn table<'t>(
            tables: &'t [Option<Huffman>; 4],
            id: usize,
            kind: &str,
        ) -> Result<&'t Huffman> {
            tables[id]
                .as_ref()
                .ok_or_else(|| format!("scan uses missing {kind} Huffman table {id}"))
        }
        let tables = self
            .components
            .iter()
            .map(|c| {
                Ok((
                    table(&self.dc, c.dc_table, "DC")?,
                    table(&self.ac, c.ac_table, "AC")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // A single-component scan is not interleaved: its MCU is one block, whatever the sampling.
        let (hmax, vmax) = if self.components.len() == 1 {
            (1, 1)
        } else {
            self.max_sampling()
        };
        let mcus_x = self.width.div_ceil(8 * hmax);
        let mcus_y = self.height.div_ceil(8 * vmax);
        let luma = self.components[0];
        let (luma_h, luma_v) = if self.components.len() == 1 {
            (1, 1)
        } else {
            (luma.h, luma.v)
        };
        let plane_w = mcus_x * luma_h * n;
        let plane_h = mcus_y * luma_v * n;
        let mut plane = vec![0u8; plane_w * plane_h];
        let quant = &self.quant[luma.quant];
        let idct = Idct::<N>::new();

        // The last zigzag position that the reduced inverse DCT reads (of (N-1, N-1)).
        let last = match N {
            1 => 0,
            2 => 4,
            _ => 24,
        };
        let mut bits = Bits::new(&data[self.scan_start..]);
        let mut predictors = vec![0i32; self.components.len()];
        let mut coefs = [0i32; 64];
        let total = mcus_x * mcus_y;
        for mcu in 0..total {
            if self.restart_interval > 0 && mcu > 0 && mcu % self.restart_interval == 0 {
                bits.restart()?;
                predictors.fill(0);
            }
            let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
            for (ci, comp) in self.components.iter().enumerate() {
                let (dc, ac) = tables[ci];
                let (bh, bv) = if self.components.len() == 1 {
                    (1, 1)
                } else {
                    (comp.h, comp.v)
                };
                for by in 0..bv {
                    for bx in 0..bh {
                        if ci == 0 {
                            bits.block::<true>(dc, ac, &mut predictors[0], &mut coefs, last)?;
                            let x0 = (mx * bh + bx) * n;
                            let y0 = (my * bv + by) * n;
                            idct.run(&coefs, quant, &mut plane[y0 * plane_w + x0..], plane_w);
                            // Zero what the inverse DCT reads, for the next block.
                            for row in coefs.chunks_exact_mut(8).take(N) {
                                row[..N].fill(0);
                            }
                        } else {
                            bits.block::<false>(dc, ac, &mut predictors[ci], &mut coefs, 0)?;
                        }
                    }
                }
            }
        }
        if bits.used_padding() {
            return Err("file ends before the last block (truncated?)".into());
        }
        let width = (self.width * n).div_ceil(8);
        let height = (self.height * n).div_ceil(8);
        let mut pixels = Vec::with_capacity(width * height);
        for row in plane.chunks_exact(plane_w).take(height) {
            pixels.extend_from_slice(&row[..width]);
        }
        let extent = (
            (self.width * n) as f64 / 8.0,
            (self.height * n) as f64 / 8.0,
        );
        Ok(Grey {
            width,
            height,
            pixels,
            extent,
        })
    }
}

/// A Huffman table with a direct lookup of the first [`FAST_BITS`] bits.
struct Huffman {
    /// Per `FAST_BITS`-bit prefix: `symbol | length << 8`, 0 when the code is longer. (Arrays
    /// of exactly the prefix range, so lookups need no bounds check.)
    fast: Box<[u16; FAST_SIZE]>,
    /// For AC tables: the code and its value bits together, see [`FastAc`].
    fast_ac: Box<[FastAc; FAST_SIZE]>,
    /// For AC tables: how far to move past coefficients whose values are not needed, see
    /// [`Skip`].
    skip: Box<[Skip; SKIP_SIZE]>,
    /// Largest code of each length (canonical codes), -1 when none; index 17 is a sentinel.
    max_code: [i32; 18],
    /// `value_offset[len] + code` indexes `symbols` for codes of length `len`.
    value_offset: [i32; 17],
    symbols: Vec<u8>,
}

/// One lookup that yields a whole AC coefficient: `run` zeros to skip, then `value`, and `length`
/// bits to consume. `length == 0` means no shortcut (fall back to the code table); `run == EOB`
/// ends the block.
#[derive(Clone, Copy, Default)]
struct FastAc {
    value: i16,
    run: u8,
    length: u8,
}

const EOB: u8 = 0xFF;

/// Bits looked up at once when skipping coefficients: 2^12 entries of four bytes, in L1 cache.
const SKIP_BITS: u32 = 12;
const SKIP_SIZE: usize = 1 << SKIP_BITS;

/// One lookup that moves past AC coefficients whose values are not needed. Without the values,
/// every code within the lookup bits resolves, and so do runs of several codes: a radiograph's
/// high frequencies take three or four bits a coefficient, so a 12-bit lookup usually moves
/// past two or three of them, where decoding them one by one is a chain of dependent loads.
///
/// `length` bits (code and value bits) move past one coefficient, `advance` positions along
/// the block; `length == 0`: the code is longer than the lookup (use the code table). The
/// `group_*` fields do the same for all the whole codes in the lookup bits (the last one's
/// value bits may reach past them), and apply when the block does not end inside the group:
/// `group_advance & 127` is the group's advance without an end of block, `+ 128` marks one.
#[derive(Clone, Copy, Default)]
struct Skip {
    length: u8,
    advance: u8,
    group_length: u8,
    group_advance: u8,
}

/// Large enough that a block's position ends at 128 or more after an end of block, where a
/// corrupt run past the block's end stops between 65 and 79: the two stay apart.
const SKIP_EOB: u8 = 128;

impl Huffman {
    fn new(counts: &[u8], symbols: &[u8], ac: bool) -> Result<Huffman> {
        let mut fast = Box::new([0u16; FAST_SIZE]);
        let mut max_code = [-1i32; 18];
        let mut value_offset = [0i32; 17];
        let mut code = 0u32;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let count = u32::from(counts[len as usize - 1]);
            value_offset[len as usize] = k as i32 - code as i32;
            for _ in 0..count {
                // Checked before the code is used: past `1 << len` it would index past the
                // table (a table with three 1-bit codes, say).
                if code >= 1 << len {
                    return Err("Huffman table has too many codes".into());
                }
                if len <= FAST_BITS {
                    let first = (code << (FAST_BITS - len)) as usize;
                    let entry = u16::from(symbols[k]) | (len as u16) << 8;
                    fast[first..first + (1 << (FAST_BITS - len))].fill(entry);
                }
                code += 1;
                k += 1;
            }
            if count > 0 {
                max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        let mut fast_ac = Box::new([FastAc::default(); FAST_SIZE]);
        let mut skip = Box::new([Skip::default(); SKIP_SIZE]);
        if ac {
            // The symbol whose code starts the `bits` (a `width`-bit number) and the code's
            // length, if the whole code is within them.
            let code_at = |bits: u32, width: u32| {
                (1..=width).find_map(|len| {
                    let code = (bits >> (width - len)) as i32;
                    let index = value_offset[len as usize] + code;
                    (code <= max_code[len as usize])
                        .then(|| symbols.get(index as usize).map(|&symbol| (symbol, len)))
                        .flatten()
                })
            };
            for (prefix, entry) in skip.iter_mut().enumerate() {
                let mut used = 0;
                let mut reach = 0u8;
                while used < SKIP_BITS {
                    let width = SKIP_BITS - used;
                    let rest = prefix as u32 & ((1 << width) - 1);
                    let Some((symbol, len)) = code_at(rest, width) else {
                        break;
                    };
                    let (run, size) = (symbol >> 4, u32::from(symbol & 15));
                    let advance = skip_advance(run, size);
                    if used == 0 {
                        entry.length = (len + size) as u8;
                        entry.advance = advance;
                    } else if advance != SKIP_EOB && reach + advance > 63 {
                        break; // the block surely ends within the group: no use for it
                    }
                    used += len + size;
                    entry.group_length = used as u8;
                    if advance == SKIP_EOB {
                        entry.group_advance = reach + SKIP_EOB;
                        break;
                    }
                    reach += advance;
                    entry.group_advance = reach;
                }
            }
            for (prefix, entry) in fast_ac.iter_mut().enumerate() {
                let e = fast[prefix];
                if e == 0 {
                    continue;
                }
                let (symbol, len) = ((e & 0xFF) as u8, u32::from(e >> 8));
                let (run, size) = (symbol >> 4, u32::from(symbol & 15));
                if size == 0 {
                    // End of block, or 16 zeros (a run of 15 and a zero value).
                    *entry = match run {
                        15 => FastAc {
                            value: 0,
                            run: 15,
                            length: len as u8,
                        },
                        _ => FastAc {
                            value: 0,
                            run: EOB,
                            length: len as u8,
                        },
                    };
                } else if len + size <= FAST_BITS {
                    let raw = (prefix as u32 >> (FAST_BITS - len - size)) & ((1 << size) - 1);
                    *entry = FastAc {
                        value: extend(raw, size) as i16,
                        run,
                        length: (len + size) as u8,
                    };
                }
            }
        }
        Ok(Huffman {
            fast,
            fast_ac,
            skip,
            max_code,
            value_offset,
            symbols: symbols.to_vec(),
        })
    }
}

/// How far an AC symbol moves along the block: past its run of zeros and its coefficient, or
/// [`SKIP_EOB`] for an end of block.
fn skip_advance(run: u8, size: u32) -> u8 {
    match (run, size) {
        (_, 1..) => run + 1,
        (15, 0) => 16,
        _ => SKIP_EOB,
    }
}

/// The signed value of `size` raw bits (JPEG's EXTEND).
#[inline(always)]
fn extend(raw: u32, size: u32) -> i32 {
    if raw < 1 << (size - 1) {
        raw as i32 - (1 << size) + 1
    } else {
        raw as i32
    }
}

/// Entropy-coded data, most significant bit first, with `0xFF 0x00` unstuffed.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    /// Valid bits are the top `count`; bits below them are zero or the stream's next bits.
    buf: u64,
    count: u32,
    /// Zero bits supplied past the data's end or a marker; using any of them means truncation.
    padding: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Bits<'a> {
        Bits {
            data,
            pos: 0,
            buf: 0,
            count: 0,
            padding: 0,
        }
    }

    #[inline(always)]
    fn refill(&mut self) {
        // Fast path: eight bytes with no 0xFF among them go in with one load.
        if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
            let word = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            let inverted = !word;
            let has_ff =
                inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                self.buf |= word >> self.count;
                self.pos += ((63 - self.count) >> 3) as usize;
                self.count |= 56;
                return;
            }
        }
        self.refill_slow();
    }

    #[cold]
    fn refill_slow(&mut self) {
        // Clear what the fast path may have left below the valid bits.
        self.buf &= !(u64::MAX.checked_shr(self.count).unwrap_or(0));
        while self.count <= 56 {
            let mut byte = 0;
            match self.data.get(self.pos) {
                Some(&0xFF) if self.data.get(self.pos + 1) == Some(&0) => {
                    byte = 0xFF;
                    self.pos += 2;
                }
                // A marker (or the end): supply zeros from here on, without moving past it.
                Some(&0xFF) | None => self.padding += 8,
                Some(&b) => {
                    byte = b;
                    self.pos += 1;
                }
            }
            self.buf |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    #[inline(always)]
    fn take(&mut self, n: u32) -> u32 {
        let v = (self.buf >> (64 - n)) as u32;
        self.consume(n);
        v
    }

    /// The next Huffman symbol; needs 16 valid bits.
    #[inline(always)]
    fn symbol(&mut self, table: &Huffman) -> Result<u8> {
        let e = table.fast[(self.buf >> (64 - FAST_BITS)) as usize & (FAST_SIZE - 1)];
        if e != 0 {
            self.consume(u32::from(e >> 8));
            return Ok((e & 0xFF) as u8);
        }
        self.symbol_slow(table)
    }

    #[cold]
    fn symbol_slow(&mut self, table: &Huffman) -> Result<u8> {
        for len in FAST_BITS + 1..=16 {
            let code = (self.buf >> (64 - len)) as i32;
            if code <= table.max_code[len as usize] {
                self.consume(len);
                let index = table.value_offset[len as usize] + code;
                return table
                    .symbols
                    .get(index as usize)
                    .copied()
                    .ok_or_else(|| "corrupt Huffman data".to_string());
            }
        }
        Err("corrupt Huffman data (no such code)".into())
    }

    /// Decode one block. With `KEEP`, store its (quantised) coefficients up to zigzag position
    /// `last` in natural order in `coefs`, where the positions that the inverse DCT reads must
    /// be zero (others may hold anything); the rest of the block, and all of it without `KEEP`,
    /// is only moved past.
    #[inline(always)]
    fn block<const KEEP: bool>(
        &mut self,
        dc: &Huffman,
        ac: &Huffman,
        predictor: &mut i32,
        coefs: &mut [i32; 64],
        last: usize,
    ) -> Result<()> {
        if self.count < 32 {
            self.refill();
        }
        let size = u32::from(self.symbol(dc)?);
        if size > 11 {
            return Err("corrupt DC coefficient".into());
        }
        if size > 0 {
            let raw = self.take(size);
            *predictor = predictor.wrapping_add(extend(raw, size));
        }
        if KEEP {
            coefs[0] = *predictor;
        }
        // The bit buffer lives in locals through the loops (written back around the rare calls
        // that need `self`), so that it stays in registers.
        let (mut buf, mut count) = (self.buf, self.count);
        let mut k = 1usize;
        if KEEP {
            let fast_ac: &[FastAc; FAST_SIZE] = &ac.fast_ac;
            while k <= last {
                if count < 32 {
                    (self.buf, self.count) = (buf, count);
                    self.refill();
                    (buf, count) = (self.buf, self.count);
                }
                let fast = fast_ac[(buf >> (64 - FAST_BITS)) as usize & (FAST_SIZE - 1)];
                let (run, value) = if fast.length != 0 {
                    buf <<= fast.length;
                    count -= u32::from(fast.length);
                    if fast.run == EOB {
                        k = usize::from(SKIP_EOB);
                        break;
                    }
                    (usize::from(fast.run), i32::from(fast.value))
                } else {
                    (self.buf, self.count) = (buf, count);
                    let symbol = self.symbol(ac)?;
                    let (run, size) = (usize::from(symbol >> 4), u32::from(symbol & 15));
                    let coefficient = match (run, size) {
                        (_, 1..) => Some((run, extend(self.take(size), size))),
                        (15, 0) => Some((15, 0)),
                        _ => None, // end of block
                    };
                    (buf, count) = (self.buf, self.count);
                    match coefficient {
                        Some(c) => c,
                        None => {
                            k = usize::from(SKIP_EOB);
                            break;
                        }
                    }
                };
                k += run;
                if k > 63 {
                    return Err("corrupt AC coefficients (run past the block)".into());
                }
                // Unconditional: a data-dependent "is this one kept" branch mispredicts often
                // enough to cost more than the store.
                coefs[usize::from(ZIGZAG[k & 63]) & 63] = value;
                k += 1;
            }
        }
        // The coefficients nobody reads: only their lengths matter.
        let skip: &[Skip; SKIP_SIZE] = &ac.skip;
        while k < 64 {
            if count < 32 {
                (self.buf, self.count) = (buf, count);
                self.refill();
                (buf, count) = (self.buf, self.count);
            }
            // At least 32 bits are valid: enough for the table's codes and value bits (at most
            // 12 + 15), or for one code and its value bits on the slow path (16 + 15).
            let e = skip[(buf >> (64 - SKIP_BITS)) as usize & (SKIP_SIZE - 1)];
            if e.length != 0 {
                let (length, advance) = if k + usize::from(e.group_advance & 127) < 64 {
                    (e.group_length, e.group_advance)
                } else {
                    (e.length, e.advance)
                };
                buf <<= length;
                count -= u32::from(length);
                k += usize::from(advance);
            } else {
                (self.buf, self.count) = (buf, count);
                let symbol = self.symbol(ac)?;
                let (run, size) = (symbol >> 4, u32::from(symbol & 15));
                self.consume(size);
                (buf, count) = (self.buf, self.count);
                k += usize::from(skip_advance(run, size));
            }
        }
        (self.buf, self.count) = (buf, count);
        if (65..usize::from(SKIP_EOB)).contains(&k) {
            return Err("corrupt AC coefficients (run past the block)".into());
        }
        Ok(())
    }

    /// Skip to just after the next restart marker, dropping the padding bits before it.
    fn restart(&mut self) -> Result<()> {
        if self.used_padding() {
            return Err("corrupt data before a restart marker".into());
        }
        // Bits left in the buffer are the 1-bits that pad the interval to a whole byte.
        let mut pos = self.pos;
        while pos + 1 < self.data.len() {
            if self.data[pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[pos + 1]) {
                self.pos = pos + 2;
                self.buf = 0;
                self.count = 0;
                self.padding = 0;
                return Ok(());
            }
            pos += 1;
        }
        Err("missing restart marker (truncated?)".into())
    }

    /// Whether decoding used bits that were not in the file.
    fn used_padding(&self) -> bool {
        self.padding > self.count
    }
}

/// The `N`-point inverse DCT of the lowest `N x N` frequencies, as `out = M F M^T + 128`.
struct Idct<const N: usize> {
    m: [[f32; N]; N],
}

impl<const N: usize> Idct<N> {
    fn new() -> Idct<N> {
        let mut m = [[0f32; N]; N];
        let n = N as f64;
        for (x, row) in m.iter_mut().enumerate() {
            for (u, value) in row.iter_mut().enumerate() {
                let alpha = if u == 0 {
                    (1.0 / n).sqrt()
                } else {
                    (2.0 / n).sqrt()
                };
                let angle = std::f64::consts::PI * ((2 * x + 1) * u) as f64 / (2.0 * n);
                // sqrt(N / 8) per dimension keeps the DC level: an 8-point orthonormal DCT's
                // coefficient of a flat block is sqrt(8 / N) times the N-point one.
                *value = (alpha * angle.cos() * (n / 8.0).sqrt()) as f32;
            }
        }
        Idct { m }
    }

    /// Write the block's `N x N` pixels to `out` (rows `stride` apart).
    #[inline(always)]
    fn run(&self, coefs: &[i32; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
        // Rows: t[v][x] = sum_u m[x][u] F[v][u], accumulated over u in order, each step a
        // vector operation across x.
        let mut t = [[0f32; N]; N];
        for (v, tv) in t.iter_mut().enumerate() {
            for u in 0..N {
                let f = coefs[v * 8 + u].wrapping_mul(i32::from(quant[v * 8 + u])) as f32;
                for (x, tvx) in tv.iter_mut().enumerate() {
                    *tvx += self.m[x][u] * f;
                }
            }
        }
        // Columns: out[y][x] = sum_v m[y][v] t[v][x].
        for y in 0..N {
            let mut acc = [0f32; N];
            for (v, tv) in t.iter().enumerate() {
                let m = self.m[y][v];
                for (a, &tvx) in acc.iter_mut().zip(tv) {
                    *a += m * tvx;
                }
            }
            // Round half up; `as` saturates and truncates, which is floor for the values that
            // survive the clamp. (`f32::round` is a library call without SSE4.1.)
            for (px, a) in out[y * stride..y * stride + N].iter_mut().zip(acc) {
                *px = ((a + 128.5) as i32).clamp(0, 255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat<const N: usize>() -> [u8; 16] {
        let mut coefs = [0i32; 64];
        // The DC coefficient of a flat 8x8 block of level 128 + 50 is 8 * 50.
        coefs[0] = 400;
        let mut out = [0u8; 16];
        Idct::<N>::new().run(&coefs, &[1; 64], &mut out, 4);
        out
    }

    #[test]
    fn a_flat_block_keeps_its_level_at_every_scale() {
        assert_eq!(flat::<1>()[0], 178);
        assert!(flat::<2>().chunks(4).take(2).all(|r| r[..2] == [178; 2]));
        assert!(flat::<4>().iter().all(|&v| v == 178));
    }

    #[test]
    fn extend_matches_the_standard() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0b010, 3), -5);
        assert_eq!(extend(0b110, 3), 6);
    }
}
