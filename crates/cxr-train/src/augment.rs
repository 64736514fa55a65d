//! On-the-fly augmentation and normalisation of one grey image.
//!
//! Every random draw comes from a generator seeded by `(seed, epoch, sample index)`, never from
//! shared state, so a sample looks the same whichever thread builds it, whatever the batch
//! size, and after a resume. All draws are made whether or not the augmentation using them is
//! enabled, so switching one augmentation off leaves the others' draws unchanged.
//!
//! The geometric augmentations (crop, flip, rotation) are composed into one inverse mapping from
//! output to source pixel and applied with a single bilinear resampling, black outside the
//! image. Intensities are on the 0..1 scale (grey / 255) until normalisation:
//! `(x - mean[c]) / std[c]` for each of the `in_channels` copies of the grey image.

use crate::config::{AugmentConfig, CropConfig, Normalisation};
use cxr_core::hash::splitmix64;

/// A small deterministic generator (SplitMix64).
pub struct SampleRng(u64);

impl SampleRng {
    /// The generator of sample `index` in `epoch` of a run seeded with `seed`.
    pub fn new(seed: u64, epoch: u64, index: u64) -> Self {
        SampleRng(splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

/// Augment (when `augment` is given) and normalise the `size x size` grey image `pixels` into
/// `out`, which holds `in_channels * size * size` values (channel-major).
pub fn prepare(
    pixels: &[u8],
    size: usize,
    augment: Option<(&AugmentConfig, &mut SampleRng)>,
    norm: &Normalisation,
    out: &mut [f32],
) {
    let plane = size * size;
    let mut grey: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    if let Some((config, rng)) = augment {
        grey = apply(&grey, size, config, rng);
    }
    for (c, chunk) in out.chunks_exact_mut(plane).enumerate() {
        let (mean, std) = (norm.mean[c], norm.std[c]);
        for (o, &g) in chunk.iter_mut().zip(&grey) {
            *o = (g - mean) / std;
        }
    }
}

fn apply(grey: &[f32], size: usize, config: &AugmentConfig, rng: &mut SampleRng) -> Vec<f32> {
    let s = size as f64;
    // Draws, always in this order.
    let (d_scale, d_ratio, d_x, d_y) = (rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform());
    let d_flip = rng.uniform();
    let d_rot = rng.range(-1.0, 1.0);
    let d_bright = rng.range(-1.0, 1.0);
    let d_contrast = rng.range(-1.0, 1.0);

    // Source window (x0, y0, w, h) in pixels.
    let (x0, y0, w, h) = match config.crop {
        CropConfig::None => (0.0, 0.0, s, s),
        CropConfig::Pad { pad } => {
            let span = (2 * pad + 1) as f64;
            let dx = (d_x * span).floor() - pad as f64;
            let dy = (d_y * span).floor() - pad as f64;
            (dx, dy, s, s)
        }
        CropConfig::Resized { min_scale } => {
            let area = (min_scale + (1.0 - min_scale) * d_scale) * s * s;
            let log_r = (0.75f64).ln() + ((4.0f64 / 3.0).ln() - (0.75f64).ln()) * d_ratio;
            let r = log_r.exp();
            let w = (area * r).sqrt().min(s);
            let h = (area / r).sqrt().min(s);
            ((s - w) * d_x, (s - h) * d_y, w, h)
        }
    };
    let flip = config.hflip && d_flip < 0.5;
    let theta = (config.rotate_deg * d_rot).to_radians();
    let geometric = x0 != 0.0 || y0 != 0.0 || w != s || h != s || flip || theta != 0.0;
    let mut out = if geometric {
        let (sin, cos) = theta.sin_cos();
        let mut out = vec![0f32; size * size];
        for v in 0..size {
            for u in 0..size {
                let mut a = (u as f64 + 0.5) / s - 0.5;
                let b = (v as f64 + 0.5) / s - 0.5;
                if flip {
                    a = -a;
                }
                let (ra, rb) = (cos * a - sin * b, sin * a + cos * b);
                let x = x0 + (ra + 0.5) * w - 0.5;
                let y = y0 + (rb + 0.5) * h - 0.5;
                out[v * size + u] = bilinear(grey, size, x, y);
            }
        }
        out
    } else {
        grey.to_vec()
    };
    if config.brightness != 0.0 || config.contrast != 0.0 {
        let mean = out.iter().sum::<f32>() / out.len() as f32;
        let c = (1.0 + config.contrast * d_contrast) as f32;
        let b = (config.brightness * d_bright) as f32;
        for x in &mut out {
            *x = ((*x - mean) * c + mean + b).clamp(0.0, 1.0);
        }
    }
    out
}

/// Bilinear sample at pixel coordinates (x, y), black outside the image.
fn bilinear(img: &[f32], size: usize, x: f64, y: f64) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (tx, ty) = ((x - fx) as f32, (y - fy) as f32);
    let at = |xi: f64, yi: f64| -> f32 {
        if xi < 0.0 || yi < 0.0 || xi >= size as f64 || yi >= size as f64 {
            0.0
        } else {
            img[yi as usize * size + xi as usize]
        }
    };
    let top = at(fx, fy) * (1.0 - tx) + at(fx + 1.0, fy) * tx;
    let bottom = at(fx, fy + 1.0) * (1.0 - tx) + at(fx + 1.0, fy + 1.0) * tx;
    top * (1.0 - ty) + bottom * ty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(size: usize) -> Vec<u8> {
        (0..size * size).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn identity_is_exact_normalisation() {
        let size = 8;
        let img = ramp(size);
        let norm = Normalisation::imagenet(1);
        let mut out = vec![0f32; size * size];
        let mut rng = SampleRng::new(1, 0, 0);
        prepare(
            &img,
            size,
            Some((&AugmentConfig::none(), &mut rng)),
            &norm,
            &mut out,
        );
        for (o, &p) in out.iter().zip(&img) {
            assert!((o - (p as f32 / 255.0 - 0.449) / 0.226).abs() < 1e-6);
        }
        let mut rgb = vec![0f32; 3 * size * size];
        prepare(&img, size, None, &Normalisation::imagenet(3), &mut rgb);
        assert!((rgb[2 * size * size + 3] - (img[3] as f32 / 255.0 - 0.406) / 0.225).abs() < 1e-6);
    }

    #[test]
    fn flip_mirrors_and_pad_shifts() {
        let size = 6;
        let img = ramp(size);
        let grey: Vec<f32> = img.iter().map(|&p| p as f32 / 255.0).collect();
        let flip = AugmentConfig {
            hflip: true,
            ..AugmentConfig::none()
        };
        // Find a sample whose flip draw says "flip".
        let flipped = (0..20)
            .map(|i| apply(&grey, size, &flip, &mut SampleRng::new(3, 0, i)))
            .find(|o| *o != grey)
            .unwrap();
        for v in 0..size {
            for u in 0..size {
                assert!((flipped[v * size + u] - grey[v * size + size - 1 - u]).abs() < 1e-6);
            }
        }
        let pad = AugmentConfig {
            crop: CropConfig::Pad { pad: 2 },
            ..AugmentConfig::none()
        };
        let shifted = apply(&grey, size, &pad, &mut SampleRng::new(3, 0, 7));
        // A whole-pixel shift: every output value is a source pixel or black.
        assert!(shifted
            .iter()
            .all(|x| *x == 0.0 || grey.iter().any(|g| (g - x).abs() < 1e-6)));
    }
}
