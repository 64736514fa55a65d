//! A tiny synthetic dataset for the cxr-train tests: `n` 32 x 32 images in one or more shards
//! with a manifest whose labels can be learnt from the pixels (PA images are bright on top, AP
//! at the bottom; male images have a bright left border).

#![allow(dead_code)]

use cxr_core::shard::{encode, Resize, ShardIndex, ShardInfo, FORMAT};
use cxr_core::{
    Dataset, LabelState, Manifest, ManifestRow, Projection, Sex, Split, View, OBSERVATIONS,
};
use cxr_models::{Architecture, DenseNetConfig};
use cxr_train::config::{
    AugmentConfig, CropConfig, Init, Normalisation, OptimizerConfig, ScheduleConfig, Select,
    Subset, Task, TrainConfig,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SIZE: usize = 32;

pub fn row(i: usize) -> ManifestRow {
    let mut labels = [LabelState::NotMentioned; OBSERVATIONS.len()];
    labels[8] = [
        LabelState::Positive,
        LabelState::Negative,
        LabelState::Uncertain,
    ][i % 3]; // Atelectasis
    labels[2] = if i.is_multiple_of(2) {
        LabelState::Positive
    } else {
        LabelState::Negative
    }; // Cardiomegaly
    ManifestRow {
        image_id: format!("{i:05}.png"),
        dataset: Dataset::Nih,
        path: format!("images/{i:05}.png"),
        patient_id: format!("{i:05}"),
        study_id: format!("{i:05}/0"),
        view: View::Frontal,
        projection: if i.is_multiple_of(2) {
            Projection::Pa
        } else {
            Projection::Ap
        },
        sex: if i.is_multiple_of(3) {
            Sex::Male
        } else {
            Sex::Female
        },
        age: Some(20 + (i % 60) as i32),
        source_split: None,
        split: match i % 5 {
            0 => Split::Valid,
            1 => Split::Test,
            _ => Split::Train,
        },
        labels,
    }
}

pub fn image(i: usize, row: &ManifestRow) -> Vec<u8> {
    let mut img = vec![0u8; SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let noise =
                (cxr_core::hash::splitmix64((i * SIZE * SIZE + y * SIZE + x) as u64) % 60) as u8;
            let bright_half = match row.projection {
                Projection::Pa => y < SIZE / 2,
                _ => y >= SIZE / 2,
            };
            let border = row.sex == Sex::Male && x < 4;
            img[y * SIZE + x] =
                noise + if bright_half { 120 } else { 40 } + if border { 60 } else { 0 };
        }
    }
    img
}

/// Write a manifest of `n` rows and shards of `per_shard` rows into `dir`; returns
/// (manifest path, shard directory).
pub fn dataset(dir: &Path, n: usize, per_shard: usize) -> (PathBuf, PathBuf) {
    let manifest = Manifest {
        rows: (0..n).map(row).collect(),
    };
    let manifest_path = dir.join("manifest.parquet");
    manifest.write(&manifest_path).unwrap();
    let shard_dir = dir.join("shards");
    std::fs::create_dir_all(&shard_dir).unwrap();
    let mut infos = Vec::new();
    for (k, start) in (0..n).step_by(per_shard).enumerate() {
        let rows: Vec<usize> = (start..(start + per_shard).min(n)).collect();
        let pixels: Vec<u8> = rows
            .iter()
            .flat_map(|&r| image(r, &manifest.rows[r]))
            .collect();
        let ids: Vec<&str> = rows
            .iter()
            .map(|&r| manifest.rows[r].image_id.as_str())
            .collect();
        let bytes = encode(&pixels, &rows, &ids, SIZE, Resize::CentreCrop).unwrap();
        let info = ShardInfo::new(k, start, rows.len(), &bytes, rows.len(), vec![]);
        info.write_shard(&shard_dir, k, &bytes).unwrap();
        infos.push(info);
    }
    ShardIndex {
        format: FORMAT.to_string(),
        size: SIZE,
        resize: Resize::CentreCrop,
        shard_rows: per_shard,
        manifest_rows: n,
        shards: infos,
    }
    .write(&shard_dir)
    .unwrap();
    (manifest_path, shard_dir)
}

/// A DenseNet with a few thousand parameters: fast enough for many fits per test.
pub fn tiny_densenet() -> Architecture {
    Architecture::DenseNet(DenseNetConfig {
        growth_rate: 4,
        block_config: vec![2, 2],
        bn_size: 2,
        num_init_features: 8,
    })
}

/// A small, fast configuration: a tiny DenseNet on 32 x 32, view task, Adam.
pub fn config(manifest: &Path, shards: &Path, run_dir: &Path) -> TrainConfig {
    TrainConfig {
        manifest: manifest.to_path_buf(),
        shards: shards.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
        arch: tiny_densenet(),
        in_channels: 1,
        task: Task::View,
        pathologies: Vec::new(),
        policy: "u-ignore".into(),
        blank: "negative".into(),
        aux: Vec::new(),
        subset: all_of_train_and_valid(),
        init: Init::Random,
        optimizer: OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        },
        lr: 1e-3,
        schedule: ScheduleConfig::Cosine {
            warmup: 2,
            min_lr: 0.0,
        },
        batch_size: 8,
        epochs: 2,
        clip_grad_norm: Some(5.0),
        augment: AugmentConfig {
            crop: CropConfig::Pad { pad: 2 },
            hflip: true,
            rotate_deg: 5.0,
            brightness: 0.1,
            contrast: 0.1,
        },
        normalisation: Normalisation::imagenet(1),
        seed: 7,
        eval_every: 3,
        log_every: 1,
        select: Select::Auc,
        freeze_epochs: 0,
        loss: cxr_train::config::LossConfig::Bce,
        precision: Default::default(),
    }
}

/// The `train` and `valid` splits, every view and projection.
pub fn all_of_train_and_valid() -> Subset {
    Subset {
        train_split: "train".into(),
        valid_split: "valid".into(),
        frontal_only: false,
        projections: Vec::new(),
    }
}

/// The cxr-train binary on one thread (for cxr-train's own tests: other crates that share this
/// fixture, such as cxr-e2e, have no such binary).
// `env!` would not compile in cxr-e2e, which shares this file but has no cxr-train binary.
#[allow(clippy::option_env_unwrap)]
pub fn cxr_train(args: &[&str]) -> Output {
    let binary = option_env!("CARGO_BIN_EXE_cxr-train").expect("cxr-train's tests only");
    Command::new(binary)
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

/// Fit options for the tests: CPU, no progress bar, everything kept (they compare last models
/// and resume states).
pub fn fit_options(resume: bool, max_steps: Option<u64>) -> cxr_train::trainer::FitOptions {
    cxr_train::trainer::FitOptions {
        resume,
        max_steps,
        device: candle_core::Device::Cpu,
        progress: false,
        keep: cxr_train::checkpoint::Keep::All,
    }
}
