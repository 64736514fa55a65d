//! `cxr-image`: one image file to the grey `u8` square a model is fed, the same way everywhere.
//!
//! `cxr-preprocess` runs this over a whole manifest into shards, and `cxr-train predict --image`
//! over single files with no shards at all; both call [`prepare`], so an image gives the same
//! pixels, and the same probabilities, by either path.
//!
//! - [`decode`]: recognises the format by its first bytes; PNG (8/16-bit; grey, grey+alpha, RGB,
//!   RGBA, palette) and JPEG (baseline and progressive) to 8-bit grey, with Pillow's luma
//!   formula, and JPEG's scaled inverse DCT when the target is small enough to allow it;
//! - [`dicom`]: DICOM's first frame to 8-bit grey as viewers show it (modality LUT, window or VOI
//!   LUT, MONOCHROME1 inversion), through `dicom-object` and `dicom-pixeldata`;
//! - [`jpeg`]: the reduced-size baseline JPEG decoder that makes large JPEGs cheap;
//! - [`resize`]: Lanczos3 antialiased resize to the square, centre crop or pad.

pub mod decode;
pub mod dicom;
pub mod jpeg;
pub mod resize;

pub use decode::{Decoding, Grey, JpegScaling};
pub use dicom::DicomIntensity;
pub use resize::Target;

/// Decode an image file's bytes and resize it into `pixels` (`target.size`² grey levels, row
/// by row). The error is a one-line reason, for a report that names the file.
///
/// A decoder bug on a hostile file costs that one image: a panic comes back as an error.
pub fn prepare(
    bytes: &[u8],
    target: &Target,
    decoding: Decoding,
    pixels: &mut [u8],
) -> Result<(), String> {
    let decoded = std::panic::catch_unwind(|| decode::decode(bytes, target, decoding)).map_err(
        |panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("decoder crashed: {what}")
        },
    )??;
    target.resize_into(&decoded, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard settings written before DICOM was read name no rule; cxr-core reads them as the
    /// default rule's name, which must be this crate's default.
    #[test]
    fn names_round_trip_and_the_settings_default_is_ours() {
        assert_eq!(
            DicomIntensity::default().name(),
            cxr_core::shard::DEFAULT_DICOM_INTENSITY
        );
        for d in [DicomIntensity::Window, DicomIntensity::FullRange] {
            assert_eq!(DicomIntensity::from_name(d.name()), Ok(d));
        }
        for j in [JpegScaling::Dct, JpegScaling::Full] {
            assert_eq!(JpegScaling::from_name(j.name()), Ok(j));
        }
        assert!(JpegScaling::from_name("fast")
            .unwrap_err()
            .contains("dct or full"));
    }
}
