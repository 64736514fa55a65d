//! DICOM files to 8-bit grey, the way DICOM viewers display them.
//!
//! Hospitals export radiographs as DICOM, and the grey levels a radiologist sees are not the
//! stored numbers: the file says how to turn them into brightness. Parsing and decompression are
//! `dicom-object` and `dicom-pixeldata` (pure Rust decoders only, see "Transfer syntaxes"); this
//! module applies the display rules of DICOM PS3.3 C.11 to the first frame:
//!
//! 1. **Stored values.** Each sample is masked to its *Bits Stored* and, when *Pixel
//!    Representation* is 1, read as two's complement of that width (12- to 16-bit CR/DX data, and
//!    32-bit, are handled alike). 1-bit images give 0 and 1.
//! 2. **Modality LUT** (C.11.1): a *Modality LUT Sequence* when present (values below its first
//!    mapped value take the first entry, above its end the last), else *Rescale Slope* and
//!    *Rescale Intercept* (`v * slope + intercept` in `f64`; absent: 1 and 0).
//! 3. **VOI** (C.11.2), with [`DicomIntensity::Window`], the default:
//!    - a *VOI LUT Sequence* when present: its first LUT, input rounded to the nearest integer
//!      and clamped to the table; its entries span the LUT's bit depth, which is taken as the bits
//!      the entries actually use when they use fewer than the *LUT Descriptor* declares (some CR
//!      devices declare 16 for 12-bit tables; this is `dicom-pixeldata`'s rule), scaled to
//!      0..=255 with rounding;
//!    - else the first *Window Center* / *Window Width*, through the *VOI LUT Function*: `LINEAR`
//!      (the default, C.11.2.1.2.1: `((x - (c - 0.5)) / (w - 1) + 0.5) * 255`, 0 at or below
//!      `c - 0.5 - (w - 1) / 2`, 255 above `c - 0.5 + (w - 1) / 2`), `LINEAR_EXACT` or
//!      `SIGMOID` (C.11.2.1.3); a `LINEAR` width below 1 is read as `LINEAR_EXACT`;
//!    - else the full range: the image's lowest modality value to 0, its highest to 255,
//!      linearly. (The VOI LUT table is preferred to the window when a file has both, as
//!      pydicom and `dicom-pixeldata` do.)
//!
//!    [`DicomIntensity::FullRange`] ignores LUTs and windows and always takes the full range, so
//!    that nothing outside a window is clipped to black or white (`--dicom-intensity
//!    full-range`). A constant image is black either way.
//! 4. **MONOCHROME1** (white is the lowest value, common on CR films) is inverted after the VOI:
//!    `255 - y`, so that bone is bright as in every other image a model sees.
//! 5. Levels are rounded to nearest, halves away from zero.
//!
//! Colour images, which DICOM does not window, become grey as the PNG and JPEG decoders do it:
//! BT.601 luma with Pillow's integer weights ([`crate::decode::luma`]) of the RGB samples (the
//! JPEG and JPEG 2000 decoders return RGB whatever the stored colour space); native or RLE
//! `YBR_FULL` and `YBR_FULL_422` already hold that luma in their Y samples, which are used as
//! they are. Samples deeper than 8 bits are scaled to 8 with rounding, as 16-bit PNGs are.
//! `PALETTE COLOR` and other colour spaces are refused.
//!
//! **Multi-frame files** give their first frame, the only one decoded.
//!
//! # Transfer syntaxes
//!
//! Decoded: implicit and explicit VR little endian, explicit VR big endian, deflated explicit VR,
//! RLE lossless (8 and 16 bits), JPEG baseline (process 1), JPEG extended with 8-bit samples,
//! JPEG lossless (process 14 and its SV1), JPEG 2000 (lossless and lossy, through the `openjp2`
//! Rust port of OpenJPEG, which also reads HTJ2K; no HTJ2K file was tested). Lossy JPEG comes out
//! within 1 or 2 grey levels of libjpeg's decode (the inverse DCTs round differently); a colour
//! JPEG holding RGB without a JFIF or Adobe marker is taken for YCbCr by `jpeg-decoder`.
//!
//! Refused, with an error that names the syntax, for example `JPEG-LS Lossless Image Compression
//! (1.2.840.10008.1.2.4.80) is not decoded by this build`: JPEG-LS and JPEG XL (their decoders
//! are C/C++ libraries), 12-bit JPEG (processes 2 and 4), 32-bit RLE. Every other failure names
//! the syntax too. `tests/dicom.rs` lists, file by file, what is decoded and what is refused
//! among pydicom's test files, checked against pydicom.

use crate::decode::{check_size, luma, scale_to_u8, Grey};
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    PixelDecoder, PixelRepresentation, PlanarConfiguration, VoiLutFunction, WindowLevel,
    WindowLevelTransform,
};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

/// Offset of the `DICM` magic: a DICOM file starts with a 128-byte preamble.
const MAGIC_AT: usize = 128;

/// Transfer syntax UIDs of compressed pixel data (JPEG, JPEG-LS, JPEG 2000, JPEG XL), whose
/// decoders hand back RGB for colour.
const ENCAPSULATED_PREFIX: &str = "1.2.840.10008.1.2.4.";

/// Explicit VR Big Endian.
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Whether `bytes` is a DICOM file (PS3.10: a 128-byte preamble, then `DICM`).
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.get(MAGIC_AT..MAGIC_AT + 4) == Some(b"DICM")
}

/// How a monochrome DICOM image's values become grey levels (module docs, step 3). It changes a
/// shard's bytes, so `cxr-preprocess` records it with the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DicomIntensity {
    /// As a viewer shows the image: the file's VOI LUT, else its first window, else the full
    /// range.
    #[default]
    Window,
    /// The lowest to the highest modality value, whatever window the file carries.
    FullRange,
}

impl DicomIntensity {
    /// The name on the command line and in the shard settings.
    pub fn name(self) -> &'static str {
        match self {
            DicomIntensity::Window => "window",
            DicomIntensity::FullRange => "full-range",
        }
    }

    /// The rule a name stands for; the error lists the names.
    pub fn from_name(name: &str) -> Result<DicomIntensity, String> {
        [DicomIntensity::Window, DicomIntensity::FullRange]
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| format!("DICOM intensity `{name}`: use window or full-range"))
    }
}

/// The first frame of a DICOM image, decoded, with what its conversion to grey needs.
#[derive(Debug)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    /// The transfer syntax's name and UID, as errors name it.
    pub transfer_syntax: String,
    /// *Photometric Interpretation* as stored in the file.
    pub photometric: String,
    pub values: Values,
    voi: Voi,
}

/// A frame's values, row by row.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// `MONOCHROME1` or `MONOCHROME2`: the modality values (stored values through the Modality
    /// LUT); `inverted` for `MONOCHROME1`.
    Grey { values: Vec<f64>, inverted: bool },
    /// Colour as interleaved R, G, B samples of at most `max`.
    Rgb { samples: Vec<u32>, max: u32 },
    /// `YBR_FULL` / `YBR_FULL_422` left undecoded: the Y (luma) samples, at most `max`.
    Luma { samples: Vec<u32>, max: u32 },
}

/// The VOI transform a monochrome frame carries (module docs, step 3).
#[derive(Debug)]
enum Voi {
    Table(Table),
    Window(WindowLevelTransform),
    None,
}

/// A lookup table of DICOM's LUT modules: `entries[0]` for inputs up to `first`, the last entry
/// from `first + len - 1` up.
#[derive(Debug, Clone, PartialEq)]
struct Table {
    first: i64,
    entries: Vec<u16>,
    /// Bits the entries span: the output range is `0..2^bits`.
    bits: u32,
}

impl Table {
    fn get(&self, x: i64) -> u16 {
        let last = self.entries.len() as i64 - 1;
        self.entries[(x - self.first).clamp(0, last) as usize]
    }
}

/// Decode a DICOM file's first frame to 8-bit grey with `intensity`'s rule.
pub fn decode(bytes: &[u8], intensity: DicomIntensity) -> Result<Grey, String> {
    Ok(read(bytes)?.to_grey(intensity))
}

/// Decode a DICOM file's first frame to its modality values (or colour samples). The error is one
/// line; every failure after the file's header is read names its transfer syntax.
pub fn read(bytes: &[u8]) -> Result<Frame, String> {
    if !sniff(bytes) {
        return Err("not a DICOM file (no `DICM` after the 128-byte preamble)".into());
    }
    let body = &bytes[MAGIC_AT..];
    let meta = FileMetaTable::from_reader(body)
        .map_err(|e| format!("DICOM: unreadable file meta information: {}", chain(&e)))?;
    let uid = meta.transfer_syntax().to_string();
    let syntax = match TransferSyntaxRegistry.get(&uid) {
        Some(ts) if ts.can_decode_all() => format!("{} ({uid})", ts.name()),
        Some(ts) => {
            return Err(format!(
                "{} ({uid}) is not decoded by this build (pure Rust decoders only): \
                 convert the file, e.g. `dcmdjpeg`/`gdcmconv --raw`",
                ts.name()
            ))
        }
        None => return Err(format!("unknown DICOM transfer syntax {uid}")),
    };
    let failed = |what: &str, e: &dyn std::error::Error| format!("{syntax}: {what}: {}", chain(e));
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| failed("unreadable data set", &e))?;
    if object.get(tags::PIXEL_DATA).is_none() {
        return Err(format!(
            "{syntax}: the DICOM file has no Pixel Data (7FE0,0010): not an image (a report, \
             presentation state or DICOMDIR?)"
        ));
    }
    let photometric = text(&object, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let native = !uid.starts_with(ENCAPSULATED_PREFIX);
    // Native YBR_FULL_422 holds two samples per pixel, where `dicom-pixeldata`'s frame slicing
    // expects three: take all frames' bytes and keep the first frame's below.
    let pixels = if native && photometric == "YBR_FULL_422" {
        object.decode_pixel_data()
    } else {
        object.decode_pixel_data_frame(0)
    }
    .map_err(|e| failed("cannot decode the pixel data", &e))?;
    let (width, height) = (pixels.columns() as usize, pixels.rows() as usize);
    check_size(width, height).map_err(|e| format!("{syntax}: {e}"))?;
    let bits_allocated = pixels.bits_allocated();
    let bits_stored = pixels.bits_stored().clamp(1, bits_allocated.max(1));
    let spp = usize::from(pixels.samples_per_pixel());
    // `dicom-object` reads big-endian OW data as 16-bit words, so a 32-bit sample comes out as
    // its two words in stored (high, low) order: put them back in native order.
    let swapped;
    let mut data = pixels.data();
    if bits_allocated == 32 && uid == BIG_ENDIAN && pixel_data_vr(&object) == Some(VR::OW) {
        swapped = data
            .chunks_exact(4)
            .flat_map(|s| [s[2], s[3], s[0], s[1]])
            .collect::<Vec<u8>>();
        data = &swapped;
    }
    let stored = stored_values(
        data,
        bits_allocated,
        bits_stored,
        pixels.pixel_representation() == PixelRepresentation::Signed,
    )
    .map_err(|e| format!("{syntax}: {e}"))?;
    let shape = Shape {
        area: width * height,
        spp,
        syntax: &syntax,
    };
    let (values, voi) = match (photometric.as_str(), spp) {
        ("MONOCHROME1" | "MONOCHROME2", 1) => {
            let stored = shape.frame(&stored, 1)?;
            let values = match modality_table(&object).map_err(|e| format!("{syntax}: {e}"))? {
                Some(table) => stored.iter().map(|&v| f64::from(table.get(v))).collect(),
                None => {
                    let rescale = pixels.rescale().map_err(|e| failed("rescale", &e))?[0];
                    let (slope, intercept) = (rescale.slope, rescale.intercept);
                    stored
                        .iter()
                        .map(|&v| v as f64 * slope + intercept)
                        .collect()
                }
            };
            let inverted = photometric == "MONOCHROME1";
            let voi = voi(&pixels).map_err(|e| failed("VOI", &e))?;
            (Values::Grey { values, inverted }, voi)
        }
        (_, 3) => {
            // The JPEG and JPEG 2000 decoders hand back RGB, which `dicom-pixeldata` says by
            // reporting RGB; native and RLE data keep the file's colour space.
            let colour_space = match pixels.photometric_interpretation().as_str() {
                "RGB" => "RGB",
                _ => photometric.as_str(),
            };
            let planar = pixels.planar_configuration() == PlanarConfiguration::PixelFirst;
            let values = colour(&shape, colour_space, &stored, planar, bits_stored)?;
            (values, Voi::None)
        }
        (other, spp) => {
            return Err(format!(
                "{syntax}: Photometric Interpretation {other:?} with {spp} samples per pixel is \
                 not supported (MONOCHROME1/2, RGB and YBR are)"
            ))
        }
    };
    Ok(Frame {
        width,
        height,
        transfer_syntax: syntax,
        photometric,
        values,
        voi,
    })
}

impl Frame {
    /// The frame's grey levels under `intensity` (module docs).
    pub fn to_grey(&self, intensity: DicomIntensity) -> Grey {
        let pixels = match &self.values {
            Values::Grey { values, inverted } => {
                let voi = match intensity {
                    DicomIntensity::Window => &self.voi,
                    DicomIntensity::FullRange => &Voi::None,
                };
                let mut grey = apply_voi(values, voi);
                if *inverted {
                    grey.iter_mut().for_each(|v| *v = 255 - *v);
                }
                grey
            }
            Values::Rgb { samples, max } => samples
                .chunks_exact(3)
                .map(|p| scale_to_u8(luma(p[0], p[1], p[2]), *max))
                .collect(),
            Values::Luma { samples, max } => {
                samples.iter().map(|&y| scale_to_u8(y, *max)).collect()
            }
        };
        Grey::new(self.width, self.height, pixels)
    }
}

/// 8-bit levels of modality values through `voi`, before any MONOCHROME1 inversion.
fn apply_voi(values: &[f64], voi: &Voi) -> Vec<u8> {
    let level = |y: f64| y.round().clamp(0.0, 255.0) as u8;
    match voi {
        Voi::Table(table) => {
            let max = u32::try_from((1u64 << table.bits) - 1).unwrap_or(u32::MAX);
            values
                .iter()
                .map(|&v| scale_to_u8(u32::from(table.get(v.round() as i64)), max))
                .collect()
        }
        Voi::Window(window) => values
            .iter()
            .map(|&v| level(window.apply(v, 255.0)))
            .collect(),
        Voi::None => {
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            if hi > lo {
                values
                    .iter()
                    .map(|&v| level((v - lo) / (hi - lo) * 255.0))
                    .collect()
            } else {
                vec![0; values.len()]
            }
        }
    }
}

/// A frame's size, for slicing the first frame out of the decoded samples.
struct Shape<'a> {
    area: usize,
    spp: usize,
    /// The transfer syntax, for errors.
    syntax: &'a str,
}

impl Shape<'_> {
    /// The first `area * samples` of `stored`: the first frame, or an error when it is short.
    fn frame<'s>(&self, stored: &'s [i64], samples: usize) -> Result<&'s [i64], String> {
        stored.get(..self.area * samples).ok_or_else(|| {
            format!(
                "{}: the pixel data holds {} samples, fewer than {} pixels x {}",
                self.syntax,
                stored.len(),
                self.area,
                self.spp
            )
        })
    }
}

/// A colour frame's samples as [`Values`]: interleaved RGB (de-planarised when `planar`), or the
/// Y samples of YBR_FULL / YBR_FULL_422 (module docs).
fn colour(
    shape: &Shape,
    colour_space: &str,
    stored: &[i64],
    planar: bool,
    bits_stored: u16,
) -> Result<Values, String> {
    let max = u32::try_from((1u64 << bits_stored) - 1).unwrap_or(u32::MAX);
    fn samples(values: impl Iterator<Item = i64>) -> Vec<u32> {
        values.map(|v| v.max(0) as u32).collect()
    }
    let n = shape.area;
    // Planar configuration 1: the whole first plane, then the second, then the third.
    let interleaved = |frame: &[i64]| -> Vec<i64> {
        if planar {
            (0..n * 3).map(|i| frame[(i % 3) * n + i / 3]).collect()
        } else {
            frame.to_vec()
        }
    };
    Ok(match colour_space {
        "RGB" => Values::Rgb {
            samples: samples(interleaved(shape.frame(stored, 3)?).into_iter()),
            max,
        },
        "YBR_FULL" => Values::Luma {
            samples: samples(interleaved(shape.frame(stored, 3)?).into_iter().step_by(3)),
            max,
        },
        // Two pixels in four samples: Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2).
        "YBR_FULL_422" => {
            let frame = shape.frame(stored, 2)?;
            let y = frame.chunks_exact(4).flat_map(|c| [c[0], c[1]]).take(n);
            Values::Luma {
                samples: samples(y),
                max,
            }
        }
        other => {
            return Err(format!(
                "{}: colour space {other:?} is not supported (RGB and YBR_FULL are)",
                shape.syntax
            ))
        }
    })
}

/// The stored values of native-order samples of `bits_allocated` bits (8, 16 or 32; 1-bit data
/// comes from `dicom-pixeldata` as bytes of 0 or 255), masked to `bits_stored` and sign-extended
/// when `signed`.
fn stored_values(
    data: &[u8],
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
) -> Result<Vec<i64>, String> {
    let raw: Vec<u64> = match bits_allocated {
        1 => data.iter().map(|&b| u64::from(b != 0)).collect(),
        8 => data.iter().map(|&b| u64::from(b)).collect(),
        16 => data
            .chunks_exact(2)
            .map(|s| u64::from(u16::from_ne_bytes([s[0], s[1]])))
            .collect(),
        32 => data
            .chunks_exact(4)
            .map(|s| u64::from(u32::from_ne_bytes([s[0], s[1], s[2], s[3]])))
            .collect(),
        other => {
            return Err(format!(
                "Bits Allocated {other} is not supported (1, 8, 16, 32 are)"
            ))
        }
    };
    let bits = u32::from(bits_stored.min(bits_allocated.max(1)));
    let mask = (1u64 << bits) - 1;
    let sign = 1u64 << (bits - 1);
    Ok(raw
        .into_iter()
        .map(|v| {
            let v = v & mask;
            if signed && bits > 1 && v & sign != 0 {
                v as i64 - (1i64 << bits)
            } else {
                v as i64
            }
        })
        .collect())
}

/// The *Modality LUT Sequence*'s first table, if the file has one.
fn modality_table(object: &dicom_object::DefaultDicomObject) -> Result<Option<Table>, String> {
    let Some(item) = object
        .get(tags::MODALITY_LUT_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
    else {
        return Ok(None);
    };
    let bad = |what: &str| format!("malformed Modality LUT Sequence: {what}");
    let descriptor: Vec<i64> = item
        .get(tags::LUT_DESCRIPTOR)
        .ok_or_else(|| bad("no LUT Descriptor"))?
        .to_multi_int()
        .map_err(|e| bad(&e.to_string()))?;
    let [len, first, bits] = descriptor[..] else {
        return Err(bad("LUT Descriptor does not hold 3 values"));
    };
    // A length of 0 means 2^16 entries (PS3.3 C.11.1.1.1).
    let len = if len == 0 { 1 << 16 } else { len as usize };
    let entries: Vec<u16> = item
        .get(tags::LUT_DATA)
        .ok_or_else(|| bad("no LUT Data"))?
        .to_multi_int()
        .map_err(|e| bad(&e.to_string()))?;
    if entries.len() != len || !(1..=16).contains(&bits) {
        return Err(bad(&format!(
            "{} entries of {bits} bits where the descriptor says {len}",
            entries.len()
        )));
    }
    Ok(Some(Table {
        first,
        entries,
        bits: bits as u32,
    }))
}

/// The VOI transform of a decoded frame: its VOI LUT, else its window, else none.
fn voi(pixels: &dicom_pixeldata::DecodedPixelData<'_>) -> Result<Voi, dicom_pixeldata::Error> {
    if let Some(lut) = pixels.voi_lut_sequence()?.and_then(|l| l.first()) {
        if !lut.data.is_empty() {
            // The bits the entries use, when fewer than declared (module docs).
            let used = u16::BITS - lut.data.iter().max().copied().unwrap_or(0).leading_zeros();
            let declared = u32::from(lut.bits_stored).max(1);
            return Ok(Voi::Table(Table {
                first: i64::from(lut.min_pixel_value),
                entries: lut.data.clone(),
                bits: if used == 0 || used > declared {
                    declared
                } else {
                    used
                },
            }));
        }
    }
    let Some(window) = pixels.window()?.and_then(|w| w.first().copied()) else {
        return Ok(Voi::None);
    };
    let function = pixels
        .voi_lut_function()?
        .and_then(|f| f.first().copied())
        .unwrap_or(VoiLutFunction::Linear);
    Ok(Voi::Window(WindowLevelTransform::new(
        function,
        WindowLevel {
            width: window.width,
            center: window.center,
        },
    )))
}

/// The value representation the Pixel Data element was read with.
fn pixel_data_vr(object: &InMemDicomObject) -> Option<VR> {
    Some(object.get(tags::PIXEL_DATA)?.vr())
}

/// An element's text value, trimmed of DICOM's padding.
fn text(object: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    Some(
        value
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string(),
    )
}

/// An error and its causes on one line: the crates' top-level messages alone ("Could not decode
/// pixel data") do not say what was wrong.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_are_masked_to_bits_stored_and_sign_extended() {
        // 12 bits stored in 16: the high nibble is not part of the value (overlay bits, noise).
        let data: Vec<u8> = [0xF800u16, 0x0800, 0x07FF, 0x0FFF]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(
            stored_values(&data, 16, 12, false).unwrap(),
            [0x800, 0x800, 0x7FF, 0xFFF]
        );
        assert_eq!(
            stored_values(&data, 16, 12, true).unwrap(),
            [-2048, -2048, 2047, -1]
        );
        // 1-bit images arrive from dicom-pixeldata as bytes of 0 or 255.
        assert_eq!(stored_values(&[0, 255], 1, 1, false).unwrap(), [0, 1]);
        let error = stored_values(&[0; 3], 24, 24, false).unwrap_err();
        assert!(error.contains("Bits Allocated 24"), "{error}");
    }

    #[test]
    fn full_range_maps_lowest_to_black_and_highest_to_white() {
        let values = [-1000.0, -500.0, 0.0, 1000.0];
        assert_eq!(apply_voi(&values, &Voi::None), [0, 64, 128, 255]);
        // A constant image has no range: black, not a division by zero.
        assert_eq!(apply_voi(&[7.0; 3], &Voi::None), [0, 0, 0]);
    }

    #[test]
    fn tables_clamp_to_their_first_and_last_entries() {
        let table = Table {
            first: -2,
            entries: vec![0, 100, 4095],
            bits: 12,
        };
        assert_eq!(
            [-10, -2, -1, 0, 9].map(|x| table.get(x)),
            [0, 0, 100, 4095, 4095]
        );
        assert_eq!(
            apply_voi(&[-3.0, -1.4, -0.4], &Voi::Table(table)),
            [0, 6, 255]
        );
    }

    #[test]
    fn dicom_is_recognised_by_its_magic_only() {
        let mut bytes = vec![0; 132];
        assert!(!sniff(&bytes));
        bytes[128..].copy_from_slice(b"DICM");
        assert!(sniff(&bytes));
        assert!(!sniff(b"DICM"));
        assert_eq!(DicomIntensity::default().name(), "window");
        assert_eq!(DicomIntensity::FullRange.name(), "full-range");
    }
}
