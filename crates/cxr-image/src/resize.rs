//! Antialiased resizing to the shard's square.
//!
//! Downscaling 1024 or 2500 pixels to 224 without a low-pass filter (nearest neighbour, or a
//! bilinear with a fixed 2x2 footprint) aliases: thin lines such as ribs, catheters and wires break
//! up, and a model trained on that learns from artefacts. A convolution whose kernel widens with
//! the scale factor averages every source pixel into the output. We use Lanczos3 (Pillow's
//! `LANCZOS`, the de-facto reference in Python pipelines) through `fast_image_resize`, which has
//! the same geometry as Pillow (pixel centres at `+0.5`, kernel support scaled by the reduction,
//! weights clipped at the image border and normalised) in fixed-point SIMD.
//!
//! Two ways to make a square, chosen by [`Resize`]:
//! - [`Resize::CentreCrop`]: the shorter side becomes `size`, and the centre `size x size` is
//!   kept (the usual ImageNet-style input; a portrait chest film loses a strip top and bottom);
//! - [`Resize::Pad`]: the longer side becomes `size`, the other is scaled by the same factor and
//!   centred on black, so nothing is cut off.

use crate::decode::Grey;
use cxr_core::shard::Resize;
use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::cell::RefCell;

/// The square every image is brought to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub size: usize,
    pub resize: Resize,
}

impl Target {
    /// How many times larger than the output a decode-time reduction must leave the image. At 2x
    /// the Lanczos kernel still spans six or more decoded pixels per output pixel, and the output
    /// stays within a few grey levels of a full decode; at 1x it would be resampling the decoder's
    /// own block averages.
    pub const fn decode_margin() -> usize {
        2
    }

    pub fn new(size: usize, resize: Resize) -> Target {
        Target { size, resize }
    }

    /// The output sides a run accepts.
    pub const SIZES: std::ops::RangeInclusive<usize> = 16..=4096;

    /// Refuse output sides outside [`Target::SIZES`], saying why they are bounded.
    pub fn check_size(size: usize) -> Result<(), String> {
        if Self::SIZES.contains(&size) {
            return Ok(());
        }
        Err(format!(
            "--size {size} is out of range: it must be {} to {} pixels. Below {0} px nothing of a \
             chest film is left to learn from; above {1} px is more than the films hold (NIH's are \
             1024 px, CheXpert's at most about 3000) and every shard in progress holds \
             --shard-rows x size x size bytes in memory (1024 rows at {1} px: 16 GiB)",
            Self::SIZES.start(),
            Self::SIZES.end()
        ))
    }

    /// Whether an image decoded at `width x height` keeps [`Target::decode_margin`] times the
    /// output resolution along the side that is scaled to `size`.
    pub fn decodes_from(&self, width: usize, height: usize) -> bool {
        let side = match self.resize {
            Resize::CentreCrop => width.min(height),
            Resize::Pad => width.max(height),
        };
        side >= Self::decode_margin() * self.size
    }

    /// Resize `image` into `out`, which holds `size * size` grey levels.
    pub fn resize_into(&self, image: &Grey, out: &mut [u8]) -> Result<(), String> {
        RESIZER.with_borrow_mut(|resizer| self.resize_with(resizer, image, out))
    }

    fn resize_with(
        &self,
        resizer: &mut Resizer,
        image: &Grey,
        out: &mut [u8],
    ) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("resize: {e}");
        let (w, h) = (image.width, image.height);
        let (ew, eh) = image.extent;
        let size = self.size as u32;
        let src = ImageRef::new(w as u32, h as u32, &image.pixels, PixelType::U8)
            .map_err(|e| fail(&e))?;
        let mut dst = Image::from_slice_u8(size, size, out, PixelType::U8).map_err(|e| fail(&e))?;
        let lanczos = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
        match self.resize {
            Resize::CentreCrop => {
                let side = ew.min(eh);
                let options = lanczos.crop((ew - side) / 2.0, (eh - side) / 2.0, side, side);
                resizer
                    .resize(&src, &mut dst, &options)
                    .map_err(|e| fail(&e))
            }
            Resize::Pad => {
                let (pw, ph) = pad_dims(ew, eh, self.size);
                dst.buffer_mut().fill(0);
                let left = (self.size - pw) / 2;
                let top = (self.size - ph) / 2;
                let mut inner =
                    CroppedImageMut::new(&mut dst, left as u32, top as u32, pw as u32, ph as u32)
                        .map_err(|e| fail(&e))?;
                let options = lanczos.crop(0.0, 0.0, ew, eh);
                resizer
                    .resize(&src, &mut inner, &options)
                    .map_err(|e| fail(&e))
            }
        }
    }
}

/// The size of the resized image inside the padded square: longer side `size`, the other scaled
/// by the same factor and rounded, at least one pixel.
pub fn pad_dims(width: f64, height: f64, size: usize) -> (usize, usize) {
    let long = width.max(height);
    let scaled = |side: f64| ((side * size as f64 / long).round() as usize).clamp(1, size);
    (scaled(width), scaled(height))
}

thread_local! {
    /// One resizer per thread: it keeps its coefficient and row buffers between images.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

#[cfg(test)]
mod tests {
    use super::*;
    use fast_image_resize::CpuExtensions;

    #[test]
    fn sizes_are_bounded_with_a_reason() {
        assert!(Target::check_size(16).is_ok() && Target::check_size(4096).is_ok());
        for size in [0, 15, 4097, 100_000] {
            let err = Target::check_size(size).unwrap_err();
            assert!(
                err.contains("must be 16 to 4096 pixels") && err.contains("memory"),
                "{err}"
            );
        }
    }

    fn gradient(width: usize, height: usize) -> Grey {
        let pixels = (0..width * height)
            .map(|i| ((i % width) * 7 + (i / width) * 13 + (i * i) % 29) as u8)
            .collect();
        Grey::new(width, height, pixels)
    }

    #[test]
    fn pad_dims_keep_the_aspect_ratio() {
        assert_eq!(pad_dims(2500.0, 2000.0, 224), (224, 179));
        assert_eq!(pad_dims(2000.0, 2500.0, 224), (179, 224));
        assert_eq!(pad_dims(1024.0, 1024.0, 224), (224, 224));
        assert_eq!(pad_dims(10_000.0, 1.0, 224), (224, 1));
        // A 2021 x 2022 film decoded at 1/4 keeps the full decode's proportions.
        assert_eq!(pad_dims(505.25, 505.5, 224), pad_dims(2021.0, 2022.0, 224));
    }

    #[test]
    fn pad_leaves_black_borders_and_fills_the_middle() {
        let image = Grey::new(40, 20, vec![200; 800]);
        let mut out = vec![7; 16 * 16];
        Target::new(16, Resize::Pad)
            .resize_into(&image, &mut out)
            .unwrap();
        // 40x20 -> 16x8, rows 4..12.
        for (y, row) in out.chunks(16).enumerate() {
            let expected = if (4..12).contains(&y) { 200 } else { 0 };
            assert!(row.iter().all(|&v| v == expected), "row {y}: {row:?}");
        }
    }

    #[test]
    fn decode_margin_follows_the_scaled_side() {
        let crop = Target::new(224, Resize::CentreCrop);
        assert!(crop.decodes_from(600, 448));
        assert!(!crop.decodes_from(2000, 447));
        let pad = Target::new(224, Resize::Pad);
        assert!(pad.decodes_from(448, 100));
        assert!(!pad.decodes_from(447, 447));
    }

    /// Shards must not depend on the machine: the SIMD paths give the same bytes as plain Rust.
    #[test]
    fn every_cpu_extension_gives_the_same_bytes() {
        let image = gradient(517, 389);
        for target in [
            Target::new(64, Resize::CentreCrop),
            Target::new(64, Resize::Pad),
        ] {
            let mut plain = Resizer::new();
            // SAFETY: `None` (plain Rust) is supported on every CPU.
            unsafe { plain.set_cpu_extensions(CpuExtensions::None) };
            let mut expected = vec![0; 64 * 64];
            target
                .resize_with(&mut plain, &image, &mut expected)
                .unwrap();
            let mut fast = vec![0; 64 * 64];
            target.resize_into(&image, &mut fast).unwrap();
            assert_eq!(
                fast,
                expected,
                "{target:?} with {:?}",
                Resizer::new().cpu_extensions()
            );
        }
    }
}
