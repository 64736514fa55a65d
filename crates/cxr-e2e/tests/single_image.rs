//! One image at a time: image files scored by `cxr-train predict --image` give the
//! probabilities their shards give, and their Grad-CAM heatmaps are made from those same pixels.
//!
//! Real files: bundled NIH PNGs and the three full-size CheXpert JPEGs of the shared folder
//! (read in place through a link, never copied). They are indexed together, preprocessed into
//! 64 px shards with full JPEG decoding (not the default, so the single-file path must find it
//! in the training shards' settings), a tiny DenseNet is fitted on the NIH ones, and the test
//! images are scored both ways.

// The tiny configurations of cxr-train's own tests.
#[path = "../../cxr-train/tests/train_fixture/mod.rs"]
mod train_fixture;

use candle_core::Device;
use cxr_core::predictions::Predictions;
use cxr_core::shard::{Resize, ShardIndex};
use cxr_core::{Dataset, Manifest, Split};
use cxr_models::Precision;
use cxr_train::checkpoint::Keep;
use cxr_train::config::Task;
use cxr_train::image_predict::{self, ImagePredictOptions};
use cxr_train::input::InputFlags;
use cxr_train::predict::{self, PredictOptions};
use cxr_train::trainer::{fit, FitOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SIZE: usize = 64;
const CHEXPERT: [&str; 3] = [
    "CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg",
    "CheXpert-v1.0/valid/patient64542/study1/view1_frontal.jpg",
    "CheXpert-v1.0/valid/patient64542/study1/view2_lateral.jpg",
];

/// A root holding links to the NIH demo images and the shared CheXpert files, and a manifest
/// of 24 NIH training and validation images, then 6 NIH and the 3 CheXpert test images.
fn dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/nih-demo");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(
        demo.join("images").canonicalize().unwrap(),
        root.join("images"),
    )
    .unwrap();
    let chexpert = cxr_core::testdata::shared_path("data/chexpert/CheXpert-v1.0");
    std::os::unix::fs::symlink(chexpert, root.join("CheXpert-v1.0")).unwrap();
    let mut rows = Vec::new();
    cxr_index::nih::read(&demo.join("Data_Entry_2017_v2020.demo.csv"), &mut |_, r| {
        let mut r = r?.owned();
        r.split = match rows.len() {
            0..20 => Split::Train,
            20..24 => Split::Valid,
            _ => Split::Test,
        };
        rows.push(r);
        Ok(())
    })
    .unwrap();
    rows.truncate(30);
    for (i, path) in CHEXPERT.iter().enumerate() {
        let mut row = rows[0].clone();
        row.image_id = path.to_string();
        row.path = path.to_string();
        row.dataset = Dataset::Chexpert;
        row.patient_id = format!("chexpert{i}");
        row.study_id = format!("chexpert{i}/1");
        row.split = Split::Test;
        rows.push(row);
    }
    let manifest = dir.join("manifest.parquet");
    Manifest { rows }.write(&manifest).unwrap();
    (manifest, root)
}

fn options(dir: &Path, images: &[PathBuf], batch_size: usize, out: &str) -> ImagePredictOptions {
    ImagePredictOptions {
        checkpoint: dir.join("run/best.safetensors"),
        images: images.to_vec(),
        out: dir.join(out),
        batch_size,
        device: Device::Cpu,
        precision: Precision::F32,
        input: InputFlags::default(),
        cam: None,
    }
}

fn largest_difference(a: &Predictions, b: &Predictions) -> f64 {
    assert_eq!(a.tasks, b.tasks);
    let pairs = a.scores.iter().flatten().zip(b.scores.iter().flatten());
    pairs.map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The shards' pixels of every image, by manifest image id.
fn shard_pixels(shards: &Path, manifest: &Manifest) -> HashMap<String, Vec<u8>> {
    let index = ShardIndex::read(shards).unwrap();
    let mut pixels = HashMap::new();
    for shard in index.open_all(shards).unwrap() {
        for (i, &row) in shard.rows().iter().enumerate() {
            let id = manifest.rows[row].image_id.clone();
            pixels.insert(id, shard.image(i).to_vec());
        }
    }
    pixels
}

#[test]
fn an_image_file_scores_as_its_shard_does() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest_path, root) = dataset(dir.path());
    let shards = dir.path().join("shards");
    cxr_preprocess::run(&cxr_preprocess::Options {
        manifest: manifest_path.clone(),
        root: root.clone(),
        out: shards.clone(),
        target: cxr_image::Target::new(SIZE, Resize::Pad),
        shard_rows: 16,
        decoding: cxr_image::Decoding {
            jpeg: cxr_image::JpegScaling::Full,
            ..Default::default()
        },
        jobs: Some(2),
        task: cxr_preprocess::ArrayTask::ALL,
    })
    .unwrap();

    // Pathologies with an auxiliary sex head: two heads to score and explain.
    let mut config = train_fixture::config(&manifest_path, &shards, &dir.path().join("run"));
    config.task = Task::Pathologies;
    config.pathologies = ["Edema", "Effusion", "Atelectasis"]
        .map(String::from)
        .to_vec();
    config.aux = cxr_train::config::parse_aux("sex=0.1").unwrap();
    config.epochs = 1;
    let fit_options = FitOptions {
        resume: false,
        max_steps: None,
        device: Device::Cpu,
        progress: false,
        keep: Keep::Best,
    };
    fit(&config, &fit_options).unwrap();

    // Through the shards: the 9 test images in one batch.
    let by_shards = dir.path().join("by-shards.parquet");
    let n = predict::run(&PredictOptions {
        checkpoint: &dir.path().join("run/best.safetensors"),
        shards: &shards,
        manifest: &manifest_path,
        split: Split::Test,
        frontal_only: false,
        out: &by_shards,
        batch_size: 16,
        chunk_images: 2048,
        device: Device::Cpu,
        precision: Precision::F32,
    })
    .unwrap();
    assert_eq!(n, 9);
    let by_shards = Predictions::read(&by_shards).unwrap();

    // The same files, in the same order and one batch, with Grad-CAM of Edema.
    let manifest = Manifest::read(&manifest_path).unwrap();
    let test: Vec<_> = manifest
        .rows
        .iter()
        .filter(|r| r.split == Split::Test)
        .collect();
    let files: Vec<PathBuf> = test.iter().map(|r| root.join(&r.path)).collect();
    let mut one_batch = options(dir.path(), &files, 16, "by-files.parquet");
    one_batch.cam = Some(("edema".into(), dir.path().join("cam")));
    let summary = image_predict::run(&one_batch).unwrap();
    assert_eq!(summary.input.shards.as_deref(), Some(shards.as_path()));
    assert_eq!(
        summary.input.input.decoding.jpeg,
        cxr_image::JpegScaling::Full
    );
    let by_files = Predictions::read(&dir.path().join("by-files.parquet")).unwrap();
    let ids: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(by_files.image_ids, ids);
    assert_eq!(
        by_files.tasks,
        ["Edema", "Pleural Effusion", "Atelectasis", "sex"]
    );
    assert_eq!(by_files.scores, by_shards.scores, "bit for bit");

    // The heatmaps were made from the shards' own pixels.
    let pixels = shard_pixels(&shards, &manifest);
    assert_eq!(summary.heatmaps.len(), 9);
    for (row, (png, numbers)) in test.iter().zip(&summary.heatmaps) {
        let tensors: HashMap<String, candle_core::Tensor> =
            cxr_models::read_weights(numbers, &Device::Cpu)
                .unwrap()
                .into_iter()
                .collect();
        let input: Vec<u8> = tensors["input"].flatten_all().unwrap().to_vec1().unwrap();
        assert!(input == pixels[&row.image_id], "{}", row.image_id);
        let raw = &tensors["cam"];
        let (h, w) = raw.dims2().unwrap();
        let raw: Vec<f32> = raw.flatten_all().unwrap().to_vec1().unwrap();
        let heat: Vec<f32> = tensors["heatmap"].flatten_all().unwrap().to_vec1().unwrap();
        let want = cxr_models::grad_cam::heatmap(&raw, (h, w), (SIZE, SIZE));
        assert_eq!(heat, want);
        // 64 px drawn 4 times larger.
        let overlay = image::open(png).unwrap();
        assert_eq!((overlay.width(), overlay.height()), (256, 256));
        let name = png.file_name().unwrap().to_string_lossy();
        let stem = Path::new(&row.path).file_stem().unwrap().to_string_lossy();
        assert!(name.ends_with(&format!("{stem}.Edema.png")), "{name}");
    }
    // CheXpert's two frontal films are both view1_frontal.jpg: their folders tell them apart.
    let name = |i: usize| summary.heatmaps[i].0.file_name().unwrap().to_owned();
    assert_eq!(name(6), "patient64541_study1_view1_frontal.Edema.png");
    assert_eq!(name(8), "view2_lateral.Edema.png");

    // One image per batch: BatchNorm runs on its running statistics, so only the order of
    // float operations inside the kernels can change with the batch.
    let single = image_predict::run(&options(dir.path(), &files, 1, "single.parquet")).unwrap();
    let diff = largest_difference(&single.predictions, &by_shards);
    eprintln!("one image per batch against the shards' batch of 9: largest difference {diff:.2e}");
    assert!(diff < 1e-6, "{diff:e}");

    // The JPEGs' decoding matters: decoded at a reduced scale, they are other pixels.
    let mut scaled = options(dir.path(), &files, 16, "scaled.parquet");
    scaled.input.full_decode = Some(false);
    let scaled = image_predict::run(&scaled).unwrap();
    let jpeg_scores = |p: &Predictions| -> Vec<f64> { p.scores[0][6..].to_vec() };
    assert_ne!(jpeg_scores(&scaled.predictions), jpeg_scores(&by_shards));
    assert_eq!(scaled.predictions.scores[0][..6], by_shards.scores[0][..6]);
}
