//! `cxr-train predict --image` through the binary: real NIH films scored with a checkpoint
//! whose run recorded its shards, the table on stdout, the heatmaps beside the predictions, and
//! the refusals that name what to change. (That a file scores exactly as its shard does is
//! `crates/cxr-e2e/tests/single_image.rs`.)

mod train_fixture;

use candle_core::Device;
use cxr_core::predictions::Predictions;
use cxr_models::{HeadSpec, Model, ModelConfig};
use cxr_train::checkpoint::save_options;
use cxr_train::config::Normalisation;
use std::path::{Path, PathBuf};
use train_fixture::cxr_train;

/// A tiny DenseNet with a view head, saved as a `fit` run would save it: its configuration
/// names `shards` as the directory it trained on.
fn checkpoint(dir: &Path, shards: &Path) -> PathBuf {
    let run = train_fixture::config(&dir.join("m.parquet"), shards, &dir.join("run"));
    let config = ModelConfig {
        arch: run.arch.clone(),
        in_channels: 1,
        heads: vec![HeadSpec::new("view", 1)],
    };
    let model = Model::new(config, &Device::Cpu, 3).unwrap();
    let path = dir.join("view.safetensors");
    let options = save_options("cxr_train", &run, &Normalisation::imagenet(1)).unwrap();
    model.save(&path, &options).unwrap();
    path
}

fn films() -> [String; 2] {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/nih-demo/images");
    ["00000075_000.png", "00000442_000.png"].map(|f| images.join(f).display().to_string())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn films_are_scored_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture's shards: 32 px, centre crop.
    let (_, shards) = train_fixture::dataset(dir.path(), 10, 10);
    let checkpoint = checkpoint(dir.path(), &shards);
    let out = dir.path().join("single/preds.parquet");
    let [a, b] = films();
    let run = cxr_train(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--image",
        &a,
        &b,
        "--cam",
        "View",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let log = stderr(&run);
    let input = format!(
        "input: 32 px, centre-crop, scaled JPEG decoding, DICOM window (the training shards {}",
        shards.display()
    );
    assert!(log.contains(&input), "{log}");
    assert!(
        log.contains("wrote Grad-CAM heatmaps of View for 2 images"),
        "{log}"
    );

    let predictions = Predictions::read(&out).unwrap();
    assert_eq!(predictions.image_ids, [a.clone(), b.clone()]);
    assert_eq!(predictions.tasks, ["view"]);
    let table = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("image") && lines[0].ends_with("view"),
        "{table}"
    );
    for (line, (id, p)) in lines[1..]
        .iter()
        .zip(predictions.image_ids.iter().zip(&predictions.scores[0]))
    {
        assert!(line.starts_with(id.as_str()), "{line}");
        assert!(line.ends_with(&format!("{p:.3}")), "{line}");
    }

    for stem in ["00000075_000", "00000442_000"] {
        let png = out.with_file_name(format!("{stem}.view.png"));
        // 32 px drawn 8 times larger.
        let overlay = image::open(&png).unwrap().into_rgb8();
        assert_eq!(overlay.dimensions(), (256, 256));
        let numbers = out.with_file_name(format!("{stem}.view.safetensors"));
        let tensors = cxr_models::read_weights(&numbers, &Device::Cpu).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cam", "heatmap", "input", "weights"]);
        let shape = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1
                .dims()
                .to_vec()
        };
        // The tiny DenseNet halves 32 px three times: a 4 x 4 map.
        assert_eq!(shape("cam"), [4, 4]);
        assert_eq!(shape("heatmap"), [32, 32]);
        assert_eq!(shape("input"), [32, 32]);
    }
}

#[test]
fn refusals_name_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let (_, shards) = train_fixture::dataset(dir.path(), 10, 10);
    let checkpoint = checkpoint(dir.path(), &shards);
    let [a, _] = films();
    let out = dir.path().join("p.parquet");
    let predict = |extra: &[&str]| {
        let base = [
            "predict",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        cxr_train(&[&base[..], extra].concat())
    };

    let run = predict(&["--image", &a, "--cam", "Edema"]);
    assert!(!run.status.success());
    assert!(
        stderr(&run)
            .contains("--cam `Edema`: the checkpoint has no such output; its outputs are view"),
        "{}",
        stderr(&run)
    );

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let run = predict(&["--image", &a, text.to_str().unwrap()]);
    assert!(!run.status.success());
    let want = format!("{}: not a PNG, JPEG or DICOM file", text.display());
    assert!(stderr(&run).contains(&want), "{}", stderr(&run));
    assert!(!out.exists(), "nothing written");

    // Shards that are gone: the input side must be given.
    std::fs::remove_dir_all(&shards).unwrap();
    let run = predict(&["--image", &a]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("give --size"), "{}", stderr(&run));
    let run = predict(&["--image", &a, "--size", "48"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("input: 48 px, pad"),
        "{}",
        stderr(&run)
    );
}
