//! `cxr-image`: one image file to the grey `u8` square a model is fed, the same way everywhere.
//!
//! `cxr-preprocess` runs this over a whole manifest into shards, and `cxr-train predict --image`
//! over single files with no shards at all; both call [`prepare`], so an image gives the same
//! pixels, and the same probabilities, by either path.
//!
//! - [`decode`]: PNG (8/16-bit; grey, grey+alpha, RGB, RGBA, palette) and JPEG (baseline and
//!   progressive) to 8-bit grey, with Pillow's luma formula, and JPEG's scaled inverse DCT when
//!   the target is small enough to allow it;
//! - [`jpeg`]: the reduced-size baseline JPEG decoder that makes large JPEGs cheap;
//! - [`resize`]: Lanczos3 antialiased resize to the square, centre crop or pad.

pub mod decode;
pub mod jpeg;
pub mod resize;

pub use decode::{Grey, JpegScaling};
pub use resize::Target;

/// Decode an image file's bytes and resize it into `pixels` (`target.size`² grey levels, row
/// by row). The error is a one-line reason, for a report that names the file.
///
/// A decoder bug on a hostile file costs that one image: a panic comes back as an error.
pub fn prepare(
    bytes: &[u8],
    target: &Target,
    jpeg: JpegScaling,
    pixels: &mut [u8],
) -> Result<(), String> {
    let decoded =
        std::panic::catch_unwind(|| decode::decode(bytes, target, jpeg)).map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("decoder crashed: {what}")
        })??;
    target.resize_into(&decoded, pixels)
}
