//! The study's chain on real images: a few bundled NIH demo images are indexed and preprocessed
//! as the pipelines do, a tiny backbone is pretrained with Barlow Twins, fine-tuned with new
//! heads and a frozen first epoch (the backbone must not move, BatchNorm statistics included),
//! then fine-tuned again with the AUC-margin loss and PESG. A tiny DenseNet keeps it fast.

// The tiny synthetic dataset and configurations of cxr-train's own tests.
#[path = "../../cxr-train/tests/train_fixture/mod.rs"]
mod train_fixture;

use candle_core::{DType, Device, Tensor};
use cxr_core::{Manifest, Split};
use cxr_models::read_weights;
use cxr_train::barlow::{pretrain, Positives, PretrainConfig, PLACEHOLDER_HEAD};
use cxr_train::checkpoint::Keep;
use cxr_train::config::{
    AugmentConfig, CropConfig, Init, LossConfig, Normalisation, OptimizerConfig, ScheduleConfig,
    Task,
};
use cxr_train::trainer::{fit, FitOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SIZE: usize = 32;

fn options(max_steps: Option<u64>, resume: bool) -> FitOptions {
    FitOptions {
        resume,
        max_steps,
        device: Device::Cpu,
        progress: false,
        // These tests compare last models and resume states.
        keep: Keep::Last,
    }
}

/// The first `n` demo images, split 60/20/20 by position, as 32 px shards.
fn demo_shards(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/nih-demo");
    let mut rows = Vec::new();
    let csv = root.join("Data_Entry_2017_v2020.demo.csv");
    cxr_index::nih::read(&csv, &mut |_line, r| {
        let mut r = r?.owned();
        // Two images per patient (each its own study, as in NIH), so that patient positives
        // have partners.
        r.patient_id = format!("p{}", rows.len() / 2);
        r.split = match rows.len() % 5 {
            0 => Split::Valid,
            1 => Split::Test,
            _ => Split::Train,
        };
        rows.push(r);
        Ok(())
    })
    .unwrap();
    rows.truncate(n);
    let manifest = dir.join("manifest.parquet");
    Manifest { rows }.write(&manifest).unwrap();
    let shards = dir.join("shards");
    cxr_preprocess::run(&cxr_preprocess::Options {
        manifest: manifest.clone(),
        root,
        out: shards.clone(),
        target: cxr_image::Target::new(SIZE, cxr_core::shard::Resize::CentreCrop),
        shard_rows: 64,
        decoding: cxr_image::Decoding {
            jpeg: cxr_image::JpegScaling::Full,
            ..Default::default()
        },
        jobs: Some(2),
        task: cxr_preprocess::ArrayTask::ALL,
    })
    .unwrap();
    (manifest, shards)
}

/// Every tensor of a checkpoint, as f32 vectors by name (`num_batches_tracked` left out).
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    read_weights(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, t): (String, Tensor)| {
            let v = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            (n, v.to_vec1().unwrap())
        })
        .collect()
}

fn backbone(t: &BTreeMap<String, Vec<f32>>) -> BTreeMap<String, Vec<f32>> {
    t.iter()
        .filter(|(n, _)| !n.starts_with("classifier.") && !n.starts_with("heads."))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The training records of a metrics log: a run logging every step has one per step, so that
/// a check of every record cannot pass on an empty log.
fn train_records(records: &[cxr_core::runlog::MetricRecord]) -> usize {
    let train = records
        .iter()
        .filter(|r| r.phase == cxr_core::runlog::Phase::Train);
    train.count()
}

#[test]
fn pretrain_then_fine_tune_with_a_frozen_backbone_then_dam() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = demo_shards(dir.path(), 40);

    // Barlow Twins: 24 training images, batch 8, 2 epochs, LARS.
    let bt_dir = dir.path().join("bt");
    let bt = PretrainConfig {
        manifest: manifest.clone(),
        shards: shards.clone(),
        run_dir: bt_dir.clone(),
        arch: train_fixture::tiny_densenet(),
        in_channels: 1,
        subset: train_fixture::all_of_train_and_valid(),
        init: Init::Random,
        positives: Positives::Patient,
        projector: vec![32, 32, 16],
        lambda: 5e-3,
        // The paper's optimiser (its momentum is part of what a resume must restore).
        optimizer: OptimizerConfig::Lars {
            momentum: 0.9,
            weight_decay: 1.5e-6,
            eta: 1e-3,
            bias_lr_factor: 0.024,
        },
        lr: 0.2,
        schedule: ScheduleConfig::Constant,
        batch_size: 8,
        epochs: 2,
        augment: AugmentConfig {
            crop: CropConfig::Resized { min_scale: 0.5 },
            hflip: true,
            rotate_deg: 10.0,
            brightness: 0.4,
            contrast: 0.4,
        },
        normalisation: Normalisation::imagenet(1),
        seed: 3,
        log_every: 1,
        precision: Default::default(),
    };
    // Study positives on data with one image per study would silently be augment: refused.
    let one_per_study = PretrainConfig {
        positives: Positives::Study,
        run_dir: dir.path().join("bt-study"),
        ..bt.clone()
    };
    let err = pretrain(&one_per_study, &options(None, false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--positives study: no training image"),
        "{err}"
    );
    let summary = pretrain(&bt, &options(None, false)).unwrap();
    assert_eq!((summary.steps, summary.total_steps), (6, 6));
    let records = cxr_core::runlog::read(&bt_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(train_records(&records), 6, "one per step (log_every 1)");
    assert!(records.iter().all(|r| r.loss.is_finite() && r.loss >= 0.0));
    let pretrained = tensors(&bt_dir.join("best.safetensors"));
    assert!(
        pretrained.contains_key("classifier.weight"),
        "placeholder head"
    );
    let meta = cxr_models::read_metadata(bt_dir.join("best.safetensors")).unwrap();
    assert_eq!(meta.config.heads[0].name, PLACEHOLDER_HEAD);
    // A stopped pretraining resumes to the same weights.
    let again = dir.path().join("bt-again");
    let mut bt2 = bt.clone();
    bt2.run_dir = again.clone();
    pretrain(&bt2, &options(Some(4), false)).unwrap();
    pretrain(&bt2, &options(None, true)).unwrap();
    assert_eq!(
        tensors(&again.join("last.safetensors")),
        tensors(&bt_dir.join("last.safetensors"))
    );

    // Fine-tune: pathologies with fresh heads, backbone frozen for the first of two epochs.
    let ft_dir = dir.path().join("ft");
    let mut ft = train_fixture::config(&manifest, &shards, &ft_dir);
    ft.arch = train_fixture::tiny_densenet();
    ft.task = Task::Pathologies;
    ft.pathologies = ["Atelectasis", "Effusion", "Infiltration", "No Finding"]
        .iter()
        .map(|o| cxr_core::Observation::parse(o).unwrap().name().to_string())
        .collect();
    ft.init = Init::Checkpoint(bt_dir.join("best.safetensors"));
    ft.freeze_epochs = 1;
    ft.eval_every = 0;
    ft.clip_grad_norm = None;
    // One epoch (3 steps) with the backbone frozen: it must be exactly the pretrained one.
    fit(&ft, &options(Some(3), false)).unwrap();
    let after_frozen = tensors(&ft_dir.join("last.safetensors"));
    assert_eq!(backbone(&after_frozen), backbone(&pretrained));
    let meta = cxr_models::read_metadata(ft_dir.join("last.safetensors")).unwrap();
    assert_eq!(meta.config.heads[0].outputs, 4, "a new 4-output head");
    // The second epoch trains it.
    fit(&ft, &options(None, true)).unwrap();
    let after = tensors(&ft_dir.join("last.safetensors"));
    let moved = backbone(&after)
        .iter()
        .filter(|(n, v)| pretrained[*n] != **v)
        .count();
    assert!(
        moved > 10,
        "only {moved} backbone tensors changed after unfreezing"
    );
    assert!(ft_dir.join("valid_predictions.parquet").exists());

    // DAM from the fine-tuned backbone: AUC-margin loss with PESG.
    let dam_dir = dir.path().join("dam");
    let mut dam = ft.clone();
    dam.run_dir = dam_dir.clone();
    dam.init = Init::Checkpoint(ft_dir.join("best.safetensors"));
    dam.freeze_epochs = 0;
    dam.loss = LossConfig::Aucm { margin: 1.0 };
    dam.lr = 0.1;
    dam.schedule = ScheduleConfig::Constant;
    // Without PESG the min-max problem is refused, naming the fix.
    let err = fit(&dam, &options(None, false)).unwrap_err().to_string();
    assert!(err.contains("--optimizer pesg"), "{err}");
    std::fs::remove_dir_all(&dam_dir).unwrap();
    dam.optimizer = OptimizerConfig::Pesg {
        momentum: 0.9,
        weight_decay: 1e-5,
        epoch_decay: 2e-3,
        clip_value: 1.0,
        decay_every: 1,
        decay_factor: 10.0,
    };
    fit(&dam, &options(None, false)).unwrap();
    let records = cxr_core::runlog::read(&dam_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(train_records(&records), 6, "one per step (log_every 1)");
    let lrs: Vec<f64> = records.iter().filter_map(|r| r.lr).collect();
    assert!((lrs[0] - 0.1).abs() < 1e-12 && (lrs[lrs.len() - 1] - 0.01).abs() < 1e-12);
    assert!(records.iter().all(|r| r.loss.is_finite()));
}
