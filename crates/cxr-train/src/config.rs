//! The resolved configuration of a training run.
//!
//! Everything that decides a run's numbers lives in [`TrainConfig`], which is written to
//! `config.json` before the first step. Two uses follow: a reader of a run directory knows exactly
//! what produced it, and `--resume` can refuse to continue a run under different settings (which
//! would silently break the promise that a resumed run ends where an uninterrupted one would).

use anyhow::{bail, Context, Result};
use cxr_models::{Architecture, Precision};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the primary head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Multi-label pathologies (masked BCE under the label policy).
    Pathologies,
    /// Patient sex, male = 1 (BCE).
    Sex,
    /// Patient age: smooth L1 on age / 100.
    Age,
    /// Projection PA = 1 vs AP = 0 (BCE): NIH view-prediction pretraining.
    View,
}

impl Task {
    /// Head name, also the predictions column for the non-pathology tasks.
    pub fn name(self) -> &'static str {
        match self {
            Task::Pathologies => "pathologies",
            Task::Sex => "sex",
            Task::Age => "age",
            Task::View => "view",
        }
    }

    pub fn parse(text: &str) -> Result<Task> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "pathologies" => Task::Pathologies,
            "sex" => Task::Sex,
            "age" => Task::Age,
            "view" => Task::View,
            other => bail!("unknown task `{other}`: use pathologies, sex, age or view"),
        })
    }
}

/// An auxiliary task and its loss weight (`--aux sex=0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AuxTask {
    pub task: Task,
    pub weight: f64,
}

/// Parse `sex=0.1,age=0.1,view=0.1`.
pub fn parse_aux(spec: &str) -> Result<Vec<AuxTask>> {
    let mut out: Vec<AuxTask> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .with_context(|| format!("`{part}` should look like `sex=0.1` (task=weight)"))?;
        let task = Task::parse(name)?;
        if task == Task::Pathologies {
            bail!("`pathologies` cannot be an auxiliary task; use --task pathologies");
        }
        let weight = crate::numeric::positive_f64(weight)
            .map_err(|e| anyhow::anyhow!("--aux {part}: the weight {e}"))?;
        if out.iter().any(|a| a.task == task) {
            bail!("aux task `{name}` is given twice");
        }
        out.push(AuxTask { task, weight });
    }
    Ok(out)
}

/// Optimiser choice and hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// `torch.optim.Adam`: weight decay added to the gradient (L2).
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// `torch.optim.AdamW`: decoupled weight decay.
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// `torch.optim.SGD` with momentum (and optionally Nesterov), weight decay as L2.
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    /// LARS as Barlow Twins trains with it (`facebookresearch/barlowtwins`, after You et al.
    /// 2017): SGD with momentum whose step for each weight tensor `w` is the gradient plus
    /// `weight_decay * w`, scaled by `eta * ||w|| / ||that||`. Biases and BatchNorm parameters
    /// (1-D tensors) get neither the decay nor the scaling, and `bias_lr_factor` times the
    /// learning rate (the paper: 0.0048 against 0.2).
    Lars {
        momentum: f64,
        weight_decay: f64,
        eta: f64,
        bias_lr_factor: f64,
    },
    /// LibAUC's PESG for the AUC-margin loss (see `dam.rs`): clipped gradient plus
    /// `epoch_decay * (w - w_ref)` plus `weight_decay * w`, LibAUC's momentum, ascent on the
    /// dual variable; every `decay_every` epochs the learning rate is divided by `decay_factor`
    /// and the reference point moves to the average of the weights since the last move.
    Pesg {
        momentum: f64,
        weight_decay: f64,
        epoch_decay: f64,
        clip_value: f64,
        decay_every: u64,
        decay_factor: f64,
    },
}

/// The loss of the primary head when it is a classification head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LossConfig {
    /// Masked binary cross-entropy.
    #[default]
    Bce,
    /// LibAUC's AUC-margin loss on sigmoid scores (Deep AUC Maximization), one (a, b, alpha)
    /// per output; needs the PESG optimiser.
    Aucm { margin: f64 },
}

/// Learning-rate schedule over optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScheduleConfig {
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Linear warm-up from 0 over `warmup` steps, then cosine decay to `min_lr`.
    Cosine {
        warmup: u64,
        min_lr: f64,
    },
}

/// How a crop is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CropConfig {
    None,
    /// Shift by up to `pad` pixels each way, the uncovered border black (pad + random crop).
    Pad {
        pad: usize,
    },
    /// Random resized crop: area fraction in `[min_scale, 1]`, aspect ratio in `[3/4, 4/3]`.
    Resized {
        min_scale: f64,
    },
}

/// On-the-fly augmentation; every draw is a pure function of (seed, epoch, sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    pub crop: CropConfig,
    pub hflip: bool,
    /// Maximum rotation in degrees (uniform in `[-r, r]`).
    pub rotate_deg: f64,
    /// Brightness shift drawn from `[-b, b]` (on the 0..1 scale).
    pub brightness: f64,
    /// Contrast factor drawn from `[1 - c, 1 + c]`, around the image mean.
    pub contrast: f64,
}

impl AugmentConfig {
    pub fn none() -> Self {
        AugmentConfig {
            crop: CropConfig::None,
            hflip: false,
            rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        }
    }

    pub fn is_identity(&self) -> bool {
        *self == Self::none()
    }
}

/// Input normalisation: `x = (grey / 255 - mean[c]) / std[c]` for each of `in_channels` copies
/// of the grey image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalisation {
    /// ImageNet's statistics: averaged to one grey channel (0.449 / 0.226) for 1 channel, or the
    /// RGB triple when the grey image is repeated to 3 channels.
    pub fn imagenet(in_channels: usize) -> Self {
        if in_channels == 3 {
            Normalisation {
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
            }
        } else {
            Normalisation {
                mean: vec![0.449],
                std: vec![0.226],
            }
        }
    }
}

/// Where the initial weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Init {
    /// torchvision's initialisation, seeded.
    Random,
    /// ImageNet weights (torchvision `.pth` or safetensors); heads re-initialised.
    Imagenet(PathBuf),
    /// An earlier cxr checkpoint's backbone (a supervised run or a Barlow Twins pretraining);
    /// its heads are dropped and the run's heads start fresh.
    Checkpoint(PathBuf),
}

impl Init {
    pub fn parse(spec: &str) -> Result<Init> {
        if spec == "random" {
            return Ok(Init::Random);
        }
        match spec.split_once(':') {
            Some(("imagenet", path)) if !path.is_empty() => Ok(Init::Imagenet(path.into())),
            Some(("checkpoint", path)) if !path.is_empty() => Ok(Init::Checkpoint(path.into())),
            _ => bail!("--init `{spec}`: use random, imagenet:PATH or checkpoint:PATH"),
        }
    }
}

/// Which checkpoint counts as best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// Highest mean validation AUC of the primary head.
    Auc,
    /// Lowest validation loss.
    Loss,
}

/// The rows a run trains and validates on (`fit` and `pretrain` alike); see
/// [`Subset::select`](crate::data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    pub train_split: String,
    pub valid_split: String,
    pub frontal_only: bool,
    /// Projections kept (`PA`, `AP`, ...); empty keeps all.
    pub projections: Vec<String>,
}

/// The full, resolved configuration of a run (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub manifest: PathBuf,
    pub shards: PathBuf,
    pub run_dir: PathBuf,
    /// Backbone (torchvision's standard configurations, or any other the models crate builds).
    pub arch: Architecture,
    pub in_channels: usize,
    pub task: Task,
    /// Observation names of the pathology head (empty for other tasks).
    pub pathologies: Vec<String>,
    /// `LabelPolicy` as `u-ignore[,Obs=u-ones]`.
    pub policy: String,
    /// `negative` or `ignore`.
    pub blank: String,
    pub aux: Vec<AuxTask>,
    /// Which rows train and validate (flattened: `config.json` keeps its four fields).
    #[serde(flatten)]
    pub subset: Subset,
    pub init: Init,
    pub optimizer: OptimizerConfig,
    pub lr: f64,
    pub schedule: ScheduleConfig,
    pub batch_size: usize,
    pub epochs: usize,
    /// Clip gradients to this global L2 norm (None: no clipping).
    pub clip_grad_norm: Option<f64>,
    pub augment: AugmentConfig,
    pub normalisation: Normalisation,
    pub seed: u64,
    /// Validate every this many steps as well as at each epoch end (0: epoch ends only).
    pub eval_every: u64,
    /// Log the training loss every this many steps.
    pub log_every: u64,
    pub select: Select,
    /// Epochs (from the start) during which the backbone is frozen: its weights are not updated
    /// and BatchNorm runs on its running statistics, so only the heads learn.
    #[serde(default)]
    pub freeze_epochs: usize,
    #[serde(default)]
    pub loss: LossConfig,
    /// Arithmetic of the convolutions and matrix products (bf16 on CUDA only).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl TrainConfig {
    /// Whether `other` (from `config.json`) describes the same run, ignoring the run directory's
    /// spelling; returns the names of the fields that differ.
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        let a = serde_json::to_value(self).expect("serialisable");
        let b = serde_json::to_value(other).expect("serialisable");
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec!["<config>".into()];
        };
        a.iter()
            .filter(|(k, v)| k.as_str() != "run_dir" && b.get(k.as_str()) != Some(v))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aux_and_init_specs_parse() {
        let aux = parse_aux("sex=0.1, age=0.5,view=1").unwrap();
        assert_eq!(aux.len(), 3);
        assert_eq!(aux[1].task, Task::Age);
        assert_eq!(aux[1].weight, 0.5);
        assert!(parse_aux("sex").is_err());
        assert!(parse_aux("sex=0.1,sex=0.2").is_err());
        assert!(parse_aux("pathologies=1").is_err());
        for bad in ["sex=-0.1", "age=NaN", "view=inf", "sex=0", "sex=lots"] {
            let err = parse_aux(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "--aux {bad}: the weight must be a finite number > 0"
                )),
                "{err}"
            );
        }
        assert_eq!(Init::parse("random").unwrap(), Init::Random);
        assert_eq!(
            Init::parse("imagenet:/w/d.pth").unwrap(),
            Init::Imagenet("/w/d.pth".into())
        );
        assert!(Init::parse("imagenet:").is_err());
        assert!(Init::parse("pretrained").is_err());
    }
}
