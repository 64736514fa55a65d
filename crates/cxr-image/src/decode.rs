//! Decoding PNG, JPEG and DICOM files to 8-bit grey.
//!
//! Chest X-rays arrive as 8-bit grey PNGs (NIH), a few RGBA PNGs among them (six in NIH's
//! release), 16-bit PNGs (DICOM exports) and greyscale JPEGs (CheXpert). Everything is brought to
//! one 8-bit grey channel here, with the same rules as Pillow's `convert('L')` so that shards agree
//! with what most Python pipelines feed their models:
//!
//! - colour: ITU-R BT.601 luma, `L = (19595 R + 38470 G + 7471 B + 32768) >> 16`, that is
//!   `0.299 R + 0.587 G + 0.114 B` rounded, exactly Pillow's integer formula;
//! - alpha is dropped, not composited (as Pillow does): X-ray alpha channels are opaque;
//! - 16-bit samples are scaled to 8 bits with rounding, `round(v * 255 / 65535)`, so that 65535
//!   maps to 255 and the mid-grey stays mid-grey (not truncated to the high byte, and not clipped
//!   as Pillow's `I;16` to `L` conversion does); 16-bit colour takes the luma in 16 bits first;
//! - PNG palettes and low bit depths are expanded by the `png` crate (1-, 2-, 4-bit grey scaled
//!   to 0..=255).
//!
//! JPEG is where the time goes: a CheXpert image is about 2500x2000, and a 224-pixel shard keeps
//! one pixel in a hundred. A JPEG stores 8x8 blocks of frequencies, so a decoder can rebuild each
//! block at 4x4, 2x2 or 1x1 (a scaled inverse DCT) for a 1/2, 1/4 or 1/8 size image at a fraction
//! of the cost, which is what libjpeg's (and Pillow's) `draft` mode does. [`decode`] takes the
//! smallest such scale that still leaves the image at least [`Target::decode_margin`] times larger
//! than needed, so the antialiasing resize that follows still has real pixels to average; the
//! shards stay within a few grey levels of a full decode (measured in `tests/formats.rs`). The
//! reduced decode is our own ([`crate::jpeg`], baseline files); everything else (full size,
//! progressive, arithmetic coding) goes to `zune-jpeg`. Both give colour JPEGs' Y channel, which
//! is the same BT.601 luma as above.
//!
//! DICOM files (recognised by `DICM` at byte 128) have display rules of their own: the modality
//! and VOI transforms, MONOCHROME1 inversion, a choice between the file's window and the full
//! range ([`DicomIntensity`]); see [`crate::dicom`].

use crate::dicom::{self, DicomIntensity};
use crate::jpeg;
use crate::resize::Target;
use std::io::Cursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// An 8-bit, single-channel image, rows top to bottom without padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Grey {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
    /// The picture's true size in these pixels: `(width, height)`, except after a reduced JPEG
    /// decode, whose last column and row stand for a partial 8x8 block (a 2021-pixel-wide image
    /// at 1/4 is 505.25 pixels wide, stored as 506). Resizing from the extent keeps the
    /// geometry of a full decode exactly; from the stored size it would stretch by a fraction
    /// of a pixel, which moves sharp edges by several grey levels.
    pub extent: (f64, f64),
}

impl Grey {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Grey {
        Grey {
            width,
            height,
            pixels,
            extent: (width as f64, height as f64),
        }
    }
}

/// Largest image accepted, in pixels: far above any radiograph (CheXpert's largest is ~3000 x
/// 3000), low enough that a corrupt header claiming 60000 x 60000 is refused before allocating.
pub const MAX_PIXELS: usize = 100_000_000;

/// The file formats recognised, by their magic bytes (file extensions are not trusted): PNG and
/// JPEG at the start, DICOM's `DICM` after its 128-byte preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Dicom,
}

impl Format {
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if dicom::sniff(bytes) {
            Some(Format::Dicom)
        } else {
            None
        }
    }
}

/// How a JPEG may be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JpegScaling {
    /// Decode at a reduced scale (1/2, 1/4, 1/8) when the target allows it; see the module docs.
    #[default]
    Dct,
    /// Always decode every pixel (slower; for comparisons and the rare user who wants it).
    Full,
}

impl JpegScaling {
    /// The name in the shard settings (`cxr_core::shard::ShardSettings::jpeg_decode`).
    pub fn name(self) -> &'static str {
        match self {
            JpegScaling::Dct => "dct",
            JpegScaling::Full => "full",
        }
    }

    /// The scaling a name stands for; the error lists the names.
    pub fn from_name(name: &str) -> Result<JpegScaling, String> {
        [JpegScaling::Dct, JpegScaling::Full]
            .into_iter()
            .find(|j| j.name() == name)
            .ok_or_else(|| format!("JPEG decoding `{name}`: use dct or full"))
    }
}

/// The choices that decide how a file's values become grey levels: everything besides the
/// target that changes a shard's bytes, so every tool passes the same one for the same pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decoding {
    pub jpeg: JpegScaling,
    pub dicom: DicomIntensity,
}

/// Decode a PNG, JPEG or DICOM file's bytes to 8-bit grey. `target` says how large the image has
/// to stay for the resize that follows (it only matters to JPEG's scaled decode). Errors are
/// one-line reasons for the errors report.
pub fn decode(bytes: &[u8], target: &Target, decoding: Decoding) -> Result<Grey, String> {
    match Format::sniff(bytes) {
        Some(Format::Png) => decode_png(bytes),
        Some(Format::Jpeg) => decode_jpeg(bytes, target, decoding.jpeg),
        Some(Format::Dicom) => dicom::decode(bytes, decoding.dicom),
        None if bytes.is_empty() => Err("empty file".to_string()),
        None => Err(format!(
            "not a PNG, JPEG or DICOM file (starts with {:02x?})",
            &bytes[..bytes.len().min(8)]
        )),
    }
}

pub(crate) fn check_size(width: usize, height: usize) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("image has no pixels ({width} x {height})"));
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!(
            "image is {width} x {height}, above the {} megapixel limit (corrupt header?)",
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<Grey, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| format!("PNG: {e}"))?;
    let (width, height) = reader.info().size();
    let (width, height) = (width as usize, height as usize);
    check_size(width, height)?;
    let len = reader
        .output_buffer_size()
        .ok_or("PNG: image too large for memory")?;
    let mut buf = vec![0; len];
    let out = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("PNG: {e}"))?;
    let channels = out.color_type.samples();
    let sixteen = out.bit_depth == png::BitDepth::Sixteen;
    let sample_bytes = if sixteen { 2 } else { 1 };
    if out.line_size != width * channels * sample_bytes {
        return Err(format!(
            "PNG: unexpected row length {} for {width} pixels of {:?} {:?}",
            out.line_size, out.color_type, out.bit_depth
        ));
    }
    buf.truncate(out.line_size * height);
    let pixels = match (channels, sixteen) {
        // Grey: the buffer already is the image.
        (1, false) => buf,
        (1, true) => buf.chunks_exact(2).map(|s| to_8bit(be16(s))).collect(),
        // Grey + alpha: keep the grey.
        (2, false) => buf.chunks_exact(2).map(|p| p[0]).collect(),
        (2, true) => buf.chunks_exact(4).map(|p| to_8bit(be16(p))).collect(),
        // RGB and RGBA: 601 luma, alpha dropped.
        (3 | 4, false) => buf
            .chunks_exact(channels)
            .map(|p| luma(p[0].into(), p[1].into(), p[2].into()) as u8)
            .collect(),
        (3 | 4, true) => buf
            .chunks_exact(2 * channels)
            .map(|p| {
                let (r, g, b) = (be16(p), be16(&p[2..]), be16(&p[4..]));
                to_8bit(luma(r.into(), g.into(), b.into()) as u16)
            })
            .collect(),
        _ => return Err(format!("PNG: unsupported colour type {:?}", out.color_type)),
    };
    Ok(Grey::new(width, height, pixels))
}

fn be16(s: &[u8]) -> u16 {
    u16::from_be_bytes([s[0], s[1]])
}

/// ITU-R BT.601 luma with Pillow's integer weights (they sum to 65536), rounded; for 8-, 16- or
/// 32-bit samples alike (the luma is never above the largest sample).
pub fn luma(r: u32, g: u32, b: u32) -> u32 {
    let weighted = u64::from(r) * 19595 + u64::from(g) * 38470 + u64::from(b) * 7471;
    ((weighted + 0x8000) >> 16) as u32
}

/// A 16-bit sample scaled to 8 bits, rounded to nearest: `round(v * 255 / 65535)`.
pub fn to_8bit(v: u16) -> u8 {
    scale_to_u8(v.into(), u16::MAX.into())
}

/// A sample of `0..=max` scaled to 8 bits, rounded to nearest (`max` > 0; larger samples give
/// 255): `(v * 255 + max / 2) / max` in integers.
pub fn scale_to_u8(v: u32, max: u32) -> u8 {
    let (v, max) = (u64::from(v.min(max)), u64::from(max.max(1)));
    ((v * 255 + max / 2) / max) as u8
}

fn decode_jpeg(bytes: &[u8], target: &Target, scaling: JpegScaling) -> Result<Grey, String> {
    if scaling == JpegScaling::Dct {
        // Eighths of the full size a reduced decode can produce, smallest first; take the
        // smallest that leaves the margin the resize needs.
        let scaled = |len: usize, eighths: usize| (len * eighths).div_ceil(8);
        let choose = |w: usize, h: usize| {
            [1, 2, 4]
                .into_iter()
                .find(|&e| target.decodes_from(scaled(w, e), scaled(h, e)))
        };
        match jpeg::decode(bytes, choose) {
            jpeg::Outcome::Decoded(grey) => return Ok(grey),
            jpeg::Outcome::Broken(reason) => return Err(reason),
            jpeg::Outcome::Unsupported => {}
        }
    }
    // Everything else (full size, progressive, ...): zune-jpeg, asking for luma only, which for
    // colour files is the Y channel, BT.601 luma as above. Strict mode turns a truncated file
    // into an error instead of a grey-filled image.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::Luma)
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(bytes, options);
    decoder
        .decode_headers()
        .map_err(|e| format!("JPEG: {e:?}"))?;
    let info = decoder.info().ok_or("JPEG: no frame header")?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    check_size(width, height)?;
    let pixels = decoder.decode().map_err(|e| format!("JPEG: {e:?}"))?;
    if pixels.len() != width * height {
        return Err(format!(
            "JPEG: unsupported colour space (decoder returned {} values for {width} x {height} pixels); \
             convert the file to grey or RGB",
            pixels.len()
        ));
    }
    Ok(Grey::new(width, height, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_scaling_rounds_to_nearest() {
        for v in 0..=u16::MAX {
            let exact = f64::from(v) * 255.0 / 65535.0;
            assert!((f64::from(to_8bit(v)) - exact).abs() <= 0.5, "{v}");
        }
        assert_eq!(to_8bit(0), 0);
        assert_eq!(to_8bit(u16::MAX), 255);
        assert_eq!(to_8bit(0x8080), 128);
    }

    #[test]
    fn luma_is_pillows() {
        // Values from Pillow 12: Image.new('RGB', (1, 1), c).convert('L').getpixel((0, 0)).
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
        assert_eq!(luma(12, 200, 99), 132);
    }

    #[test]
    fn unknown_and_empty_bytes_are_named() {
        let t = Target::new(8, cxr_core::shard::Resize::CentreCrop);
        let d = Decoding::default();
        assert_eq!(decode(b"", &t, d), Err("empty file".into()));
        let err = decode(b"GIF89a....", &t, d).unwrap_err();
        assert!(err.starts_with("not a PNG, JPEG or DICOM"), "{err}");
    }
}
