//! Barlow Twins self-supervised pretraining (`cxr-train pretrain`).
//!
//! Why: the study asks whether in-domain pretraining without labels (Zbontar et al., *Barlow
//! Twins: Self-Supervised Learning via Redundancy Reduction*, ICML 2021) gives a better starting
//! point for CheXpert than ImageNet. Two views of an X-ray go through the backbone and a
//! projector; the loss pushes the cross-correlation matrix `C` of the batch-normalised projector
//! outputs towards the identity:
//!
//! ```text
//! L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2,   C = BN(z1)^T BN(z2) / N
//! ```
//!
//! with `BN` a BatchNorm without affine parameters over the batch (biased variance, eps 1e-5)
//! and lambda 5e-3 by default, as in the paper's reference code (`facebookresearch/barlowtwins`,
//! `main.py`). The projector is the paper's `Linear-BN-ReLU-Linear-BN-ReLU-Linear` (linear layers
//! without bias), its widths set by `--projector` (the paper: 8192-8192-8192; smaller widths
//! suit small batches).
//!
//! The two views are two augmentations (on top of `cxr-preprocess`'s centre crop: the `--crop`,
//! `--hflip`, `--brightness`, `--contrast` and `--rotate` draws, independent per view) of a pair
//! of images: the same image (`--positives augment`), or another image of the same study or of
//! the same patient (`study`, `patient`: multi-instance positives, as in the in-domain
//! pretraining literature, e.g. MICLe). An image without another one in its group pairs with itself. The partner is a
//! seeded draw per (seed, epoch, sample), so runs are reproducible and resumable.
//!
//! The result is a checkpoint like any other run's (`best.safetensors`, lowest validation
//! Barlow Twins loss) holding the backbone and a one-output placeholder head that is never
//! trained; `cxr-train fit --init checkpoint:...` takes the backbone and starts fresh heads. The
//! projector is kept in the resume state only: it is not part of what fine-tuning uses.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use cxr_core::runlog::{self, MetricRecord};
use cxr_core::{atomic, Manifest};
use cxr_models::{Architecture, HeadSpec, Mode, Model, ModelConfig, Precision};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::augment::SampleRng;
use crate::checkpoint::{self, Best};
use crate::config::{AugmentConfig, Init, Normalisation, OptimizerConfig, ScheduleConfig, Subset};
use crate::data::{epoch_order, Samples, ShardSet};
use crate::optim::Optimizer;
use crate::schedule::learning_rate;
use crate::trainer::{initialise, FitOptions};

/// Name of the never-trained head a pretraining checkpoint carries (a model needs one).
pub const PLACEHOLDER_HEAD: &str = "barlow_placeholder";
/// The projector's file in a resume directory.
const PROJECTOR_FILE: &str = "projector.safetensors";

/// Where the second view of a pair comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positives {
    /// The same image, augmented twice.
    Augment,
    /// Another image of the same study.
    Study,
    /// Another image of the same patient.
    Patient,
}

impl Positives {
    pub fn parse(text: &str) -> Result<Positives> {
        Ok(match text {
            "augment" => Positives::Augment,
            "study" => Positives::Study,
            "patient" => Positives::Patient,
            other => bail!("--positives `{other}`: use augment, study or patient"),
        })
    }
}

/// The resolved configuration of a pretraining run (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub manifest: PathBuf,
    pub shards: PathBuf,
    pub run_dir: PathBuf,
    pub arch: Architecture,
    pub in_channels: usize,
    /// Which rows train and validate (flattened: `config.json` keeps its four fields).
    #[serde(flatten)]
    pub subset: Subset,
    pub init: Init,
    pub positives: Positives,
    /// Projector widths after the backbone's features; the last is the embedding size.
    pub projector: Vec<usize>,
    /// Weight of the off-diagonal (redundancy) term.
    pub lambda: f64,
    pub optimizer: OptimizerConfig,
    pub lr: f64,
    pub schedule: ScheduleConfig,
    pub batch_size: usize,
    pub epochs: usize,
    pub augment: AugmentConfig,
    pub normalisation: Normalisation,
    pub seed: u64,
    pub log_every: u64,
    /// Arithmetic of the backbone's and the projector's products (bf16 on CUDA only).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// BatchNorm over the batch without affine parameters: `(x - mean) / sqrt(var + 1e-5)` per
/// column, biased variance (PyTorch's training-mode normalisation).
fn normalise_batch(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(0)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(0)?;
    Ok(centred.broadcast_div(&(var + 1e-5)?.sqrt()?)?)
}

/// The Barlow Twins loss of two `[N, D]` embeddings of the same N pairs.
pub fn barlow_twins_loss(z1: &Tensor, z2: &Tensor, lambda: f64) -> Result<Tensor> {
    if z1.dims() != z2.dims() || z1.rank() != 2 || z1.dim(0)? < 2 {
        bail!(
            "Barlow Twins needs two [N, D] embeddings with N >= 2, got {:?} and {:?}",
            z1.dims(),
            z2.dims()
        );
    }
    let (n, d) = z1.dims2()?;
    let c = (normalise_batch(z1)?.t()?.matmul(&normalise_batch(z2)?)? / n as f64)?;
    let eye = Tensor::eye(d, c.dtype(), c.device())?;
    let diag = c.mul(&eye)?.sum(1)?;
    let on_diagonal = (diag.clone() - 1.0)?.sqr()?.sum_all()?;
    let off_diagonal = (c.sqr()?.sum_all()? - diag.sqr()?.sum_all()?)?;
    Ok((on_diagonal + (off_diagonal * lambda)?)?)
}

/// The projector: `Linear-BN-ReLU` for every width but the last, then `Linear` (no biases).
pub struct Projector {
    layers: Vec<ProjectorLayer>,
}

/// (name prefix, weight `[out, in]`, BatchNorm (weight, bias) unless it is the last layer).
type ProjectorLayer = (String, Var, Option<(Var, Var)>);

impl Projector {
    /// Linear weights uniform in `±1/sqrt(in)` (PyTorch's default `Linear` bound), BatchNorm
    /// weight 1 and bias 0; seeded.
    pub fn new(input: usize, widths: &[usize], seed: u64, device: &Device) -> Result<Projector> {
        if widths.is_empty() || widths.contains(&0) {
            bail!("--projector needs one or more positive widths, e.g. 2048,2048,2048");
        }
        let mut layers = Vec::new();
        let mut fan_in = input;
        for (i, &out) in widths.iter().enumerate() {
            let mut rng = SampleRng::new(seed ^ 0x7072_6f6a, 0, i as u64);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let values: Vec<f32> = (0..out * fan_in)
                .map(|_| rng.range(-bound, bound) as f32)
                .collect();
            let weight = Var::from_tensor(&Tensor::from_vec(values, (out, fan_in), device)?)?;
            let bn = if i + 1 < widths.len() {
                Some((
                    Var::ones(out, DType::F32, device)?,
                    Var::zeros(out, DType::F32, device)?,
                ))
            } else {
                None
            };
            layers.push((format!("projector.{}", i), weight, bn));
            fan_in = out;
        }
        Ok(Projector { layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (_, weight, bn) in &self.layers {
            h = cxr_models::matmul(&h, &weight.as_tensor().t()?)?;
            if let Some((gamma, beta)) = bn {
                h = normalise_batch(&h)?
                    .broadcast_mul(gamma.as_tensor())?
                    .broadcast_add(beta.as_tensor())?
                    .relu()?;
            }
        }
        Ok(h)
    }

    /// The parameters with their names, in a fixed order.
    pub fn named(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (prefix, weight, bn) in &self.layers {
            out.push((format!("{prefix}.weight"), weight.clone()));
            if let Some((gamma, beta)) = bn {
                out.push((format!("{prefix}.bn.weight"), gamma.clone()));
                out.push((format!("{prefix}.bn.bias"), beta.clone()));
            }
        }
        out
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .named()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        Ok(cxr_models::write_weights(path, &tensors, None)?)
    }

    fn load(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = cxr_models::read_weights(path, &Device::Cpu)
            .with_context(|| format!("cannot read the projector {}", path.display()))?
            .into_iter()
            .collect();
        for (name, var) in self.named() {
            let t = map
                .remove(&name)
                .with_context(|| format!("{} lacks {name}", path.display()))?;
            if t.dims() != var.dims() {
                bail!(
                    "{}: {name} has shape {:?}, the projector {:?}; resume with the original \
                     --projector",
                    path.display(),
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// For every sample, the samples it may pair with (`None`: only itself).
fn groups(samples: &Samples, manifest: &Manifest, positives: Positives) -> Vec<Arc<Vec<usize>>> {
    let key = |row: usize| -> String {
        let r = &manifest.rows[row];
        match positives {
            Positives::Augment => r.image_id.clone(),
            Positives::Study => format!("{}\u{1}{}", r.patient_id, r.study_id),
            Positives::Patient => r.patient_id.clone(),
        }
    };
    let mut members: HashMap<String, Vec<usize>> = HashMap::new();
    for (p, &row) in samples.rows.iter().enumerate() {
        members.entry(key(row)).or_default().push(p);
    }
    let shared: HashMap<String, Arc<Vec<usize>>> =
        members.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    samples
        .rows
        .iter()
        .map(|&row| shared[&key(row)].clone())
        .collect()
}

/// The partner of sample `p` in `epoch`: another member of its group, drawn uniformly and
/// seeded; `p` itself when it is alone.
pub fn partner(group: &[usize], p: usize, seed: u64, epoch: u64) -> usize {
    let others: Vec<usize> = group.iter().copied().filter(|&q| q != p).collect();
    if others.is_empty() {
        return p;
    }
    let mut rng = SampleRng::new(seed ^ 0x7061_6972, epoch, p as u64);
    others[(rng.next_u64() % others.len() as u64) as usize]
}

/// Seed offset of the second view's augmentation.
const SECOND_VIEW: u64 = 0x5345_434f_4e44;

/// Both views of the pairs starting at `positions`, through backbone and projector.
#[allow(clippy::too_many_arguments)]
fn pair_loss(
    model: &Model,
    projector: &Projector,
    samples: &Samples,
    groups: &[Arc<Vec<usize>>],
    positions: &[usize],
    config: &PretrainConfig,
    epoch: u64,
    mode: Mode,
    device: &Device,
) -> Result<Tensor> {
    let partners: Vec<usize> = positions
        .iter()
        .map(|&p| partner(&groups[p], p, config.seed, epoch))
        .collect();
    let norm = &config.normalisation;
    let a = samples.batch(positions, Some((&config.augment, config.seed, epoch)), norm);
    let b = samples.batch(
        &partners,
        Some((&config.augment, config.seed ^ SECOND_VIEW, epoch)),
        norm,
    );
    // The projector's products in the model's precision too.
    let embed = |images: &Tensor| -> Result<Tensor> {
        let pooled = model.forward(images, mode)?.pooled;
        model.precision_scope(|| projector.forward(&pooled))
    };
    let za = embed(&a.to_device(device)?.images)?;
    let zb = embed(&b.to_device(device)?.images)?;
    barlow_twins_loss(&za, &zb, config.lambda)
}

/// What a finished pretraining reports.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    pub steps: u64,
    pub total_steps: u64,
    pub best: Option<Best>,
}

/// Pretrain as `config` says; everything goes to its run directory (layout as `cxr-train fit`'s:
/// config.json, metrics.jsonl, best/last.safetensors, resume state).
pub fn pretrain(config: &PretrainConfig, options: &FitOptions) -> Result<PretrainSummary> {
    let run_dir = config.run_dir.clone();
    if checkpoint::holds_run(&run_dir) && !options.resume {
        bail!(
            "{} already holds a run: pass --resume to continue it, or choose another --run-dir \
             (nothing was overwritten)",
            run_dir.display()
        );
    }
    if config.batch_size < 2 {
        bail!("--batch-size must be at least 2: Barlow Twins normalises over the batch");
    }
    let manifest = Manifest::read(&config.manifest)?;
    let set = Arc::new(ShardSet::open(&config.shards, &manifest)?);
    let (train, valid) = config
        .subset
        .select(&set, &manifest, [&[], &[]], config.batch_size)?;
    let train_groups = groups(&train, &manifest, config.positives);
    let valid_groups = groups(&valid, &manifest, config.positives);
    let paired = train_groups.iter().filter(|g| g.len() > 1).count();
    if paired == 0 && config.positives != Positives::Augment {
        // Otherwise every image would pair with an augmentation of itself: --positives augment
        // under another name (NIH ChestX-ray14 has one image per study).
        let unit = format!("{:?}", config.positives).to_lowercase();
        bail!(
            "--positives {unit}: no training image shares its {unit} with another, so every pair \
             would be two augmentations of one image; use --positives augment{}",
            if config.positives == Positives::Study {
                ", or patient where patients have several images"
            } else {
                ""
            }
        );
    }
    eprintln!(
        "{} training images, {paired} with another image to pair with ({:?} positives)",
        train.len(),
        config.positives
    );

    let device = &options.device;
    let mut model = Model::new(
        ModelConfig {
            arch: config.arch.clone(),
            in_channels: config.in_channels,
            heads: vec![HeadSpec::new(PLACEHOLDER_HEAD, 1)],
        },
        device,
        config.seed,
    )?;
    model.set_precision(config.precision);
    initialise(&mut model, &config.init)?;
    let projector = Projector::new(
        model.config().arch.num_features(),
        &config.projector,
        config.seed,
        device,
    )?;
    let mut vars = model.trainable_vars();
    vars.extend(projector.named().into_iter().map(|(_, v)| v));
    let param_bytes: usize = vars.iter().map(|v| v.elem_count() * 4).sum();
    checkpoint::probe_run_dir(&run_dir, param_bytes * 6)?;
    let config_path = run_dir.join(checkpoint::CONFIG_FILE);
    if config_path.exists() {
        let saved: PretrainConfig = serde_json::from_slice(&std::fs::read(&config_path)?)
            .with_context(|| {
                format!(
                    "{} is not a cxr-train pretrain configuration",
                    config_path.display()
                )
            })?;
        let mut ours = config.clone();
        ours.run_dir = saved.run_dir.clone();
        if ours != saved {
            bail!(
                "--resume with settings that differ from {}: a resumed run must use the original \
                 settings; pass them again or start a new --run-dir",
                config_path.display()
            );
        }
    } else {
        atomic::write_bytes(&config_path, &serde_json::to_vec_pretty(config)?)?;
    }
    let mut optimizer = Optimizer::new(config.optimizer, vars);
    let mut state = checkpoint::start_or_resume(
        &run_dir,
        options.resume,
        &mut model,
        &mut optimizer,
        |dir| projector.load(&dir.join(PROJECTOR_FILE)),
    )?;

    let per_epoch = (train.len() / config.batch_size) as u64;
    let total = per_epoch * config.epochs as u64;
    let end = options.max_steps.map_or(total, |m| m.min(total));
    let save_options = checkpoint::save_options("cxr_pretrain", config, &config.normalisation)?;
    let metrics_path = run_dir.join(runlog::FILE_NAME);
    let (mut loss_sum, mut loss_count, mut images) = (0f64, 0u64, 0usize);
    let mut clock = Instant::now();
    let mut step = state.step;
    let mut order: Option<(u64, Vec<usize>)> = None;
    while step < end {
        let epoch = step / per_epoch;
        let within = (step % per_epoch) as usize;
        let order = match &order {
            Some((e, o)) if *e == epoch => o,
            _ => {
                &order
                    .insert((epoch, epoch_order(train.len(), config.seed, epoch)))
                    .1
            }
        };
        let positions = &order[within * config.batch_size..(within + 1) * config.batch_size];
        let lr = learning_rate(&config.schedule, config.lr, step, total);
        let loss = pair_loss(
            &model,
            &projector,
            &train,
            &train_groups,
            positions,
            config,
            epoch,
            Mode::Train,
            device,
        )?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            bail!(
                "the Barlow Twins loss became {value} at step {} (lr {lr:.3e}); lower --lr",
                step + 1
            );
        }
        optimizer.step(&loss.backward()?, lr)?;
        step += 1;
        loss_sum += value;
        loss_count += 1;
        images += 2 * positions.len();
        let epoch_end = step.is_multiple_of(per_epoch);
        let epoch_f = step as f64 / per_epoch as f64;
        if epoch_end || step.is_multiple_of(config.log_every.max(1)) || step == end {
            let rate = images as f64 / clock.elapsed().as_secs_f64().max(1e-9);
            runlog::append(
                &metrics_path,
                &MetricRecord::train(step, epoch_f, loss_sum / loss_count as f64, lr, rate),
            )?;
            (loss_sum, loss_count, images) = (0.0, 0, 0);
            clock = Instant::now();
        }
        if epoch_end {
            let vloss = validation_loss(&model, &projector, &valid, &valid_groups, config, device)?;
            let line = match vloss {
                Some(v) => {
                    runlog::append(
                        &metrics_path,
                        &MetricRecord::valid(step, epoch_f, v, lr, None),
                    )?;
                    format!("valid Barlow Twins loss {v:.4}")
                }
                None => "no validation batch".to_string(),
            };
            eprintln!("step {step}/{total} (epoch {epoch_f:.2}): {line}");
            // Best by validation loss; by the last training loss without a validation split.
            let score = -vloss.unwrap_or(value);
            if state.best.is_none_or(|b| score > b.value) {
                state.best = Some(Best { step, value: score });
                model.save(run_dir.join(checkpoint::BEST_MODEL), &save_options)?;
            }
        }
        if epoch_end || step == end {
            state.step = step;
            state.resume_dir = checkpoint::resume_dir(step);
            let dir = run_dir.join(&state.resume_dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            projector.save(&dir.join(PROJECTOR_FILE))?;
            checkpoint::save(&run_dir, &model, &optimizer, &state, &save_options)?;
        }
    }
    if step == total {
        checkpoint::finish(&run_dir, options.keep)?;
    }
    Ok(PretrainSummary {
        steps: step,
        total_steps: total,
        best: state.best,
    })
}

/// The mean Barlow Twins loss over the validation pairs (backbone in evaluation mode, fixed
/// augmentation draws); `None` with fewer than two validation images.
fn validation_loss(
    model: &Model,
    projector: &Projector,
    valid: &Samples,
    groups: &[Arc<Vec<usize>>],
    config: &PretrainConfig,
    device: &Device,
) -> Result<Option<f64>> {
    if valid.len() < 2 {
        return Ok(None);
    }
    let positions: Vec<usize> = (0..valid.len()).collect();
    let size = config.batch_size.min(valid.len());
    let mut sum = 0f64;
    let mut count = 0usize;
    for chunk in positions.chunks_exact(size) {
        let loss = pair_loss(
            model,
            projector,
            valid,
            groups,
            chunk,
            config,
            0,
            Mode::Eval,
            device,
        )?;
        sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        count += 1;
    }
    Ok(Some(sum / count as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_matches_a_hand_computation() {
        let dev = Device::Cpu;
        // Columns of z1: (1, -1) -> normalised (1, -1); (2, 0) -> (1, -1) after centring and
        // scaling; z2 = [[1, 3], [-1, 1]] -> (1, -1) and (1, -1). With eps 1e-5 every
        // normalised value is +-1/sqrt(1 + 1e-5).
        let z1 = Tensor::new(&[[1f32, 2.0], [-1.0, 0.0]], &dev).unwrap();
        let z2 = Tensor::new(&[[1f32, 3.0], [-1.0, 1.0]], &dev).unwrap();
        let s = 1.0 / (1.0 + 1e-5f64); // each C entry: (1*1 + 1*1) / 2 scaled by 1/(1+eps)
        let lambda = 0.5;
        let want = 2.0 * (1.0 - s).powi(2) + lambda * 2.0 * s * s;
        let got = barlow_twins_loss(&z1, &z2, lambda)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn identical_decorrelated_views_give_almost_no_loss() {
        let dev = Device::Cpu;
        // Four samples, two orthogonal centred columns with unit variance.
        let z = Tensor::new(&[[1f32, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], &dev).unwrap();
        let got = barlow_twins_loss(&z, &z, 5e-3)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(got < 1e-8, "{got}");
        // Anti-correlated views are as far from the identity as can be on the diagonal.
        let bad = barlow_twins_loss(&z, &z.neg().unwrap(), 5e-3)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((bad - 8.0).abs() < 1e-3, "{bad}");
    }

    #[test]
    fn partners_stay_in_their_group_and_are_seeded() {
        let group = vec![3, 5, 9];
        for p in [3, 5, 9] {
            let q = partner(&group, p, 1, 0);
            assert!(q != p && group.contains(&q));
            assert_eq!(q, partner(&group, p, 1, 0));
        }
        assert_eq!(partner(&[4], 4, 1, 0), 4);
        let draws: std::collections::HashSet<usize> =
            (0..20).map(|e| partner(&group, 3, 1, e)).collect();
        assert_eq!(draws.len(), 2, "both other members get drawn over epochs");
    }

    #[test]
    fn projector_has_the_papers_shape() {
        let dev = Device::Cpu;
        let p = Projector::new(6, &[8, 8, 4], 0, &dev).unwrap();
        let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 3 + 2 * 2);
        let x = Tensor::ones((5, 6), DType::F32, &dev).unwrap();
        assert_eq!(p.forward(&x).unwrap().dims(), [5, 4]);
        assert!(Projector::new(6, &[], 0, &dev).is_err());
    }
}
