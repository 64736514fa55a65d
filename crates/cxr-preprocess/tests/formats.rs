//! Every input format decodes to the right grey levels, and finished shards match an independent
//! decode and resize.

mod common;

use common::{fixture, nih_full, nih_pngs, shared_data, write_manifest};
use cxr_core::shard::{Resize, ShardIndex};
use cxr_image::decode::{decode, Grey};
use cxr_image::{Decoding, JpegScaling, Target};
use cxr_preprocess::{run, ArrayTask, Options};
use image::{ColorType, DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};
use std::path::{Path, PathBuf};

fn chexpert_jpegs() -> Vec<PathBuf> {
    let valid = shared_data().join("chexpert/CheXpert-v1.0/valid");
    let files = [
        "patient64541/study1/view1_frontal.jpg",
        "patient64542/study1/view1_frontal.jpg",
        "patient64542/study1/view2_lateral.jpg",
    ];
    files.iter().map(|f| valid.join(f)).collect()
}

fn ours(path: &Path, target: Target, scaling: JpegScaling) -> Grey {
    let bytes = std::fs::read(path).unwrap();
    decode(&bytes, &target, jpeg(scaling)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The default decoding with JPEG's `scaling`.
fn jpeg(scaling: JpegScaling) -> Decoding {
    Decoding {
        jpeg: scaling,
        ..Decoding::default()
    }
}

/// The independent reference: the `image` crate's decode, BT.601 luma in f64, 0..=255.
fn reference_grey(image: &DynamicImage) -> (usize, usize, Vec<f64>) {
    let rgb = image.to_rgba16();
    let luma = rgb
        .pixels()
        .map(|p| {
            (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])) * 255.0
                / 65535.0
        })
        .collect();
    (rgb.width() as usize, rgb.height() as usize, luma)
}

/// Largest and mean absolute difference.
fn diff(ours: &[u8], reference: &[f64]) -> (f64, f64) {
    let d = differences(ours, reference);
    (d[d.len() - 1], d.iter().sum::<f64>() / d.len() as f64)
}

/// Absolute differences, sorted.
fn differences(ours: &[u8], reference: &[f64]) -> Vec<f64> {
    assert_eq!(ours.len(), reference.len());
    let mut d: Vec<f64> = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .collect();
    d.sort_by(f64::total_cmp);
    d
}

/// The difference that `fraction` of the pixels stay within.
fn quantile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

const ANY: Target = Target {
    size: 224,
    resize: Resize::CentreCrop,
};

#[test]
fn the_six_rgba_nih_pngs_decode_to_their_luma() {
    let rgba: Vec<String> = nih_pngs()
        .into_iter()
        .filter(|name| image::open(nih_full().join(name)).unwrap().color() == ColorType::Rgba8)
        .collect();
    assert_eq!(
        rgba.len(),
        6,
        "NIH's release has six RGBA PNGs among these: {rgba:?}"
    );
    for name in &rgba {
        let path = nih_full().join(name);
        let grey = ours(&path, ANY, JpegScaling::Dct);
        let (w, h, reference) = reference_grey(&image::open(&path).unwrap());
        assert_eq!((grey.width, grey.height), (w, h));
        let (max, _) = diff(&grey.pixels, &reference);
        assert!(max <= 0.51, "{name}: off by {max}");
    }
}

#[test]
fn sixteen_bit_grey_alpha_and_colour_pngs_decode_to_their_luma() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (67u32, 45u32);
    let level = |x: u32, y: u32, k: u32| ((x * 977 + y * 7919 + k * 104_729) % 65536) as u16;
    let images: Vec<(&str, DynamicImage)> = vec![
        (
            "grey16",
            ImageBuffer::from_fn(w, h, |x, y| Luma([level(x, y, 0)])).into(),
        ),
        (
            "grey-alpha8",
            ImageBuffer::from_fn(w, h, |x, y| {
                LumaA([(level(x, y, 0) >> 8) as u8, (x * 3) as u8])
            })
            .into(),
        ),
        (
            "grey-alpha16",
            ImageBuffer::from_fn(w, h, |x, y| LumaA([level(x, y, 1), level(x, y, 2)])).into(),
        ),
        (
            "rgb8",
            ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([0, 1, 2].map(|k| (level(x, y, k) >> 8) as u8))
            })
            .into(),
        ),
        (
            "rgba16",
            ImageBuffer::from_fn(w, h, |x, y| Rgba([0, 1, 2, 3].map(|k| level(x, y, k)))).into(),
        ),
    ];
    for (name, image) in images {
        let path = dir.path().join(format!("{name}.png"));
        image.save(&path).unwrap();
        let grey = ours(&path, ANY, JpegScaling::Dct);
        let (rw, rh, reference) = reference_grey(&image);
        assert_eq!((grey.width, grey.height), (rw, rh), "{name}");
        let (max, _) = diff(&grey.pixels, &reference);
        assert!(max <= 0.51, "{name}: off by {max} grey levels");
    }
}

#[test]
fn baseline_progressive_and_restart_jpegs_decode_at_full_size() {
    let dir = tempfile::tempdir().unwrap();
    // Baseline grey, written by the `image` crate from a real radiograph.
    let baseline = dir.path().join("baseline.jpg");
    image::open(nih_full().join("00000442_000.png"))
        .unwrap()
        .to_luma8()
        .save(&baseline)
        .unwrap();
    let mut files = vec![baseline];
    files.extend(
        [
            "nih-00000442-progressive.jpg",
            "nih-00001511-colour-progressive.jpg",
            "nih-00001511-colour-restarts.jpg",
        ]
        .map(fixture),
    );
    files.extend(chexpert_jpegs());
    for path in files {
        let grey = ours(&path, ANY, JpegScaling::Full);
        let (w, h, reference) = reference_grey(&image::open(&path).unwrap());
        assert_eq!((grey.width, grey.height), (w, h), "{}", path.display());
        // Grey files agree to the rounding. Colour files give their Y channel while the
        // reference converts the decoder's RGB back, which differs where RGB was clipped.
        let (max, mean) = diff(&grey.pixels, &reference);
        let colour = path.to_string_lossy().contains("colour");
        let (max_allowed, mean_allowed) = if colour { (8.0, 0.3) } else { (0.51, 0.26) };
        assert!(
            max <= max_allowed && mean <= mean_allowed,
            "{}: max {max}, mean {mean}",
            path.display()
        );
    }
}

/// Means of `block x block` tiles of a full-size decode, the tiles cut like the reduced decode's.
fn block_means(full: &Grey, block: usize, width: usize, height: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(width * height);
    for ty in 0..height {
        for tx in 0..width {
            let (mut sum, mut count) = (0f64, 0f64);
            for y in ty * block..((ty + 1) * block).min(full.height) {
                for x in tx * block..((tx + 1) * block).min(full.width) {
                    sum += f64::from(full.pixels[y * full.width + x]);
                    count += 1.0;
                }
            }
            out.push(sum / count);
        }
    }
    out
}

/// The reduced decode keeps each 8x8 block's mean exactly at 1/8 scale; at 1/4 and 1/2 it drops
/// the highest frequencies, so it sits near the tile means of a full decode.
#[test]
fn reduced_jpeg_decodes_agree_with_tile_means_of_a_full_decode() {
    // Progressive files go to the general decoder, in full, whatever the target.
    let progressive = ours(
        &fixture("nih-00000442-progressive.jpg"),
        Target::new(16, Resize::CentreCrop),
        JpegScaling::Dct,
    );
    assert_eq!((progressive.width, progressive.height), (640, 512));
    let mut files = chexpert_jpegs();
    files.push(fixture("nih-00001511-colour-restarts.jpg"));
    for path in files {
        let full = ours(&path, ANY, JpegScaling::Full);
        // Targets small enough for each reduction of this file.
        for eighths in [1usize, 2, 4] {
            let shorter = full.width.min(full.height) * eighths / 8;
            let target = Target::new(shorter / 2, Resize::CentreCrop);
            let reduced = ours(&path, target, JpegScaling::Dct);
            let block = 8 / eighths;
            assert_eq!(
                (reduced.width, reduced.height),
                (full.width.div_ceil(block), full.height.div_ceil(block)),
                "{} at {eighths}/8",
                path.display()
            );
            let means = block_means(&full, block, reduced.width, reduced.height);
            let d = differences(&reduced.pixels, &means);
            let mean = d.iter().sum::<f64>() / d.len() as f64;
            let (p99, max) = (quantile(&d, 0.99), d[d.len() - 1]);
            eprintln!(
                "{} at {eighths}/8: vs tile means of a full decode: mean {mean:.3}, 99% within {p99:.2}, max {max:.2}",
                path.file_name().unwrap().to_string_lossy()
            );
            // The largest differences are blocks whose full decode clipped at black or white
            // (burnt-in labels): clipping moves a tile's mean, the DC coefficient does not.
            // At 2/8 and 4/8 a truncated inverse DCT is not a box average: these bounds only
            // catch a broken decode; the shard test below measures what matters.
            let (p99_allowed, mean_allowed) = match eighths {
                1 => (1.0, 0.3),
                2 => (6.0, 1.0),
                _ => (10.0, 1.5),
            };
            assert!(
                p99 <= p99_allowed && mean <= mean_allowed,
                "{} at {eighths}/8: mean {mean}, 99% within {p99}",
                path.display()
            );
        }
    }
}

/// Lanczos3 weights with Pillow's geometry: output pixel `o` is centred at source position
/// `start + (o + 0.5) * scale`, the kernel widens by the reduction, weights are clipped to the
/// image and normalised.
fn weights(in_size: usize, start: f64, end: f64, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let lanczos = |x: f64| {
        if x == 0.0 {
            1.0
        } else if x.abs() < 3.0 {
            let px = std::f64::consts::PI * x;
            3.0 * px.sin() * (px / 3.0).sin() / (px * px)
        } else {
            0.0
        }
    };
    let scale = (end - start) / out_size as f64;
    let widen = scale.max(1.0);
    (0..out_size)
        .map(|o| {
            let centre = start + (o as f64 + 0.5) * scale;
            let lo = ((centre - 3.0 * widen).floor().max(0.0)) as usize;
            let hi = ((centre + 3.0 * widen).ceil() as usize).min(in_size);
            let w: Vec<f64> = (lo..hi)
                .map(|x| lanczos((x as f64 + 0.5 - centre) / widen))
                .collect();
            let total: f64 = w.iter().sum();
            (lo, w.into_iter().map(|v| v / total).collect())
        })
        .collect()
}

/// A straightforward f64 separable Lanczos3 resize to the shard square.
fn reference_resize(
    width: usize,
    height: usize,
    pixels: &[f64],
    size: usize,
    resize: Resize,
) -> Vec<f64> {
    let (cols, rows, out_h, left, top) = match resize {
        Resize::CentreCrop => {
            let side = width.min(height) as f64;
            let (x0, y0) = ((width as f64 - side) / 2.0, (height as f64 - side) / 2.0);
            (
                weights(width, x0, x0 + side, size),
                weights(height, y0, y0 + side, size),
                size,
                0,
                0,
            )
        }
        Resize::Pad => {
            let long = width.max(height) as f64;
            let pw = ((width as f64 * size as f64 / long).round() as usize).max(1);
            let ph = ((height as f64 * size as f64 / long).round() as usize).max(1);
            (
                weights(width, 0.0, width as f64, pw),
                weights(height, 0.0, height as f64, ph),
                ph,
                (size - pw) / 2,
                (size - ph) / 2,
            )
        }
    };
    // Vertical pass first, clamped to the grey range: fast_image_resize (like Pillow, which
    // goes horizontal first) keeps an 8-bit intermediate image, so Lanczos overshoot at the
    // edge of a burnt-in label is cut there rather than carried into the second pass.
    let mut vertical = vec![0f64; out_h * width];
    for (y, (lo, w)) in rows.iter().enumerate() {
        for x in 0..width {
            let v: f64 = w
                .iter()
                .enumerate()
                .map(|(i, w)| w * pixels[(lo + i) * width + x])
                .sum();
            vertical[y * width + x] = v.clamp(0.0, 255.0);
        }
    }
    let mut out = vec![0f64; size * size];
    for y in 0..out_h {
        for (x, (lo, w)) in cols.iter().enumerate() {
            let v: f64 = w
                .iter()
                .enumerate()
                .map(|(i, w)| w * vertical[y * width + lo + i])
                .sum();
            out[(top + y) * size + left + x] = v.clamp(0.0, 255.0);
        }
    }
    out
}

/// Run the real pipeline on `paths` (relative to `root`) and return each image's shard pixels.
fn shard_pixels(root: &Path, paths: &[String], target: Target, decoding: Decoding) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.parquet");
    write_manifest(&manifest, paths);
    let out = dir.path().join("out");
    let summary = run(&Options {
        manifest,
        root: root.to_path_buf(),
        out: out.clone(),
        target,
        shard_rows: 16,
        decoding,
        jobs: None,
        task: ArrayTask::ALL,
    })
    .unwrap();
    assert_eq!(summary.errors(), 0, "{:?}", summary.new_errors);
    let index = ShardIndex::read(&out).unwrap();
    let mut images = Vec::new();
    for shard in index.open_all(&out).unwrap() {
        images.extend((0..shard.len()).map(|i| shard.image(i).to_vec()));
    }
    assert_eq!(images.len(), paths.len());
    images
}

#[test]
fn png_shards_match_an_independent_lanczos3_within_one_grey_level() {
    let names = nih_pngs();
    let target = Target::new(224, Resize::CentreCrop);
    let shards = shard_pixels(&nih_full(), &names, target, jpeg(JpegScaling::Dct));
    let (mut worst, mut worst_image_crate) = (0f64, 0f64);
    for (name, pixels) in names.iter().zip(&shards) {
        let image = image::open(nih_full().join(name)).unwrap();
        let (w, h, luma) = reference_grey(&image);
        let (max, _) = diff(
            pixels,
            &reference_resize(w, h, &luma, 224, Resize::CentreCrop),
        );
        worst = worst.max(max);
        // The image crate's resize keeps its intermediate image in float, unclamped, so it
        // differs at burnt-in labels' edges; everywhere else it agrees to the rounding.
        let buffer: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(
            w as u32,
            h as u32,
            luma.iter().map(|&v| (v / 255.0) as f32).collect(),
        )
        .unwrap();
        let resized =
            image::imageops::resize(&buffer, 224, 224, image::imageops::FilterType::Lanczos3);
        let reference: Vec<f64> = resized.pixels().map(|p| f64::from(p[0]) * 255.0).collect();
        let d = differences(pixels, &reference);
        worst_image_crate = worst_image_crate.max(quantile(&d, 0.99));
    }
    eprintln!(
        "NIH PNGs at 224: max difference {worst:.3} from the f64 reference; 99% of pixels within \
         {worst_image_crate:.3} of image::imageops::resize (Lanczos3, f32)"
    );
    assert!(worst < 1.0 + 1e-3, "off by {worst} grey levels");
    assert!(
        worst_image_crate < 1.0 + 1e-3,
        "off by {worst_image_crate} grey levels"
    );
}

#[test]
fn non_square_png_shards_match_a_reference_resize_within_one_grey_level() {
    let dir = tempfile::tempdir().unwrap();
    let source = image::open(nih_full().join("00000100_000.png"))
        .unwrap()
        .to_luma8();
    let mut paths = Vec::new();
    for (i, (x, y, w, h)) in [(0, 0, 1024, 611), (100, 0, 517, 1024), (3, 7, 301, 299)]
        .into_iter()
        .enumerate()
    {
        let name = format!("crop{i}.png");
        image::imageops::crop_imm(&source, x, y, w, h)
            .to_image()
            .save(dir.path().join(&name))
            .unwrap();
        paths.push(name);
    }
    for resize in [Resize::CentreCrop, Resize::Pad] {
        let target = Target::new(96, resize);
        let shards = shard_pixels(dir.path(), &paths, target, jpeg(JpegScaling::Dct));
        for (name, pixels) in paths.iter().zip(&shards) {
            let (w, h, luma) = reference_grey(&image::open(dir.path().join(name)).unwrap());
            let reference = reference_resize(w, h, &luma, 96, resize);
            let (max, _) = diff(pixels, &reference);
            assert!(max < 1.0 + 1e-3, "{name} {resize:?}: off by {max}");
        }
    }
}

#[test]
fn jpeg_shards_stay_close_to_a_full_decode_and_reference_resize() {
    let valid = shared_data().join("chexpert");
    let paths: Vec<String> = chexpert_jpegs()
        .iter()
        .map(|p| {
            p.strip_prefix(&valid)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for resize in [Resize::CentreCrop, Resize::Pad] {
        let target = Target::new(224, resize);
        let reduced = shard_pixels(&valid, &paths, target, jpeg(JpegScaling::Dct));
        let full = shard_pixels(&valid, &paths, target, jpeg(JpegScaling::Full));
        for ((path, reduced), full) in paths.iter().zip(&reduced).zip(&full) {
            let (w, h, luma) = reference_grey(&image::open(valid.join(path)).unwrap());
            let reference = reference_resize(w, h, &luma, 224, resize);
            let (max_full, _) = diff(full, &reference);
            let d = differences(reduced, &reference);
            let mean = d.iter().sum::<f64>() / d.len() as f64;
            let (p99, p999, max) = (quantile(&d, 0.99), quantile(&d, 0.999), d[d.len() - 1]);
            eprintln!(
                "{path} {resize:?} at 224: full decode max {max_full:.2}; reduced decode mean {mean:.3}, \
                 99% within {p99:.2}, 99.9% within {p999:.2}, max {max:.2}"
            );
            assert!(
                max_full < 1.0 + 1e-3,
                "{path} full decode: off by {max_full}"
            );
            assert!(
                mean <= 0.5 && p99 <= 2.0 && p999 <= 10.0,
                "{path} reduced decode: mean {mean}, 99% {p99}, 99.9% {p999}"
            );
        }
    }
}
