//! The training loop: steps, validation, logging, checkpoints and resume.
//!
//! The loop is written so that the weights after step `s` depend only on the configuration and
//! `s`: the data order and augmentation come from `(seed, epoch, position)`, the learning rate
//! from the step, and a checkpoint stores the weights, BatchNorm buffers and optimiser moments.
//! A run stopped after any checkpoint (killed, or `--max-steps`) and resumed therefore ends with
//! the same weights as one that never stopped (on the CPU with the same thread count; GPU
//! kernels may not be deterministic).

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use cxr_core::runlog::{self, MetricRecord};
use cxr_core::{atomic, BlankRule, LabelPolicy, Manifest, Observation};
use cxr_models::{bce_with_logits, LoadOptions, Mode, Model, ModelConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{self, Best, Keep};
use crate::config::{Init, LossConfig, OptimizerConfig, Select, Task, TrainConfig};
use crate::dam::{pesg_learning_rate, pesg_moves_reference, positive_rates, Aucm};
use crate::data::{prefetch_epoch, Samples, ShardSet};
use crate::labels::{HeadTask, LossKind};
use crate::optim::Optimizer;
use crate::predict;
use crate::schedule::learning_rate;

/// How to run a fit, besides the configuration.
#[derive(Clone)]
pub struct FitOptions {
    /// Continue the run in the run directory if it has a checkpoint (else start it).
    pub resume: bool,
    /// Stop (with a checkpoint) after this many optimiser steps in total.
    pub max_steps: Option<u64>,
    pub device: Device,
    /// Draw progress bars (on a terminal only).
    pub progress: bool,
    /// What the run keeps once finished.
    pub keep: Keep,
}

/// What a finished (or stopped) fit reports.
#[derive(Debug, Clone)]
pub struct FitSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub total_steps: u64,
    pub best: Option<Best>,
    /// The last validation: loss and per-column AUCs.
    pub last_valid: Option<(f64, BTreeMap<String, Option<f64>>)>,
}

/// The loss of every head, weighted and summed.
pub fn total_loss(
    heads: &[HeadTask],
    logits: &[&Tensor],
    targets: &[Tensor],
    masks: &[Tensor],
) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (h, head) in heads.iter().enumerate() {
        let loss = match head.loss() {
            LossKind::Bce => bce_with_logits(logits[h], &targets[h], Some(&masks[h]))?,
            LossKind::SmoothL1 => masked_smooth_l1(logits[h], &targets[h], &masks[h])?,
        };
        let loss = (loss * head.weight)?;
        total = Some(match total {
            Some(t) => (t + loss)?,
            None => loss,
        });
    }
    total.context("no heads")
}

/// `torch.nn.SmoothL1Loss(beta=1)` over the unmasked entries: `0.5 d^2` for `|d| < 1`, else
/// `|d| - 0.5`, written as `0.5 q^2 + (|d| - q)` with `q = min(|d|, 1)`.
fn masked_smooth_l1(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = (pred - target)?.abs()?;
    let q = d.minimum(1f64)?;
    let loss = ((q.sqr()? * 0.5)? + (&d - &q)?)?;
    let count = mask.sum_all()?.clamp(1f64, f64::MAX)?;
    Ok(loss.mul(mask)?.sum_all()?.div(&count)?)
}

/// Per-column validation AUCs (BCE heads only) from logits and the samples' targets.
pub fn aucs(samples: &Samples, logits: &[Vec<f32>]) -> BTreeMap<String, Option<f64>> {
    let mut out = BTreeMap::new();
    for (h, head) in samples.heads.iter().enumerate() {
        if head.loss() != LossKind::Bce {
            continue;
        }
        let k = head.outputs();
        for (c, name) in head.columns.iter().enumerate() {
            let labels: Vec<Option<bool>> = (0..samples.len())
                .map(|i| {
                    (samples.targets.masks[h][i * k + c] > 0.0)
                        .then(|| samples.targets.values[h][i * k + c] > 0.5)
                })
                .collect();
            let scores: Vec<f64> = (0..samples.len())
                .map(|i| logits[h][i * k + c] as f64)
                .collect();
            out.insert(name.clone(), cxr_eval::auc::roc_auc_known(&labels, &scores));
        }
    }
    out
}

/// Everything resolved from a configuration: heads and samples.
struct Prepared {
    heads: Vec<HeadTask>,
    train: Arc<Samples>,
    valid: Samples,
}

fn prepare(config: &TrainConfig) -> Result<Prepared> {
    let blank = match config.blank.as_str() {
        "negative" => BlankRule::Negative,
        "ignore" => BlankRule::Ignore,
        other => bail!("--blank `{other}`: use negative or ignore"),
    };
    let policy = LabelPolicy::parse(&config.policy, blank)?;
    let observations = config
        .pathologies
        .iter()
        .map(|o| Observation::parse(o))
        .collect::<cxr_core::Result<Vec<_>>>()?;
    // Checkpoints are selected on U-Ignore labels (explicit positives and negatives) whatever
    // the training policy: a U-Ones run selected with uncertain counted positive would be
    // chosen on other labels than the U-Ignore run it is compared with.
    let selection = LabelPolicy::parse("u-ignore", blank)?;
    let heads_under = |policy: &LabelPolicy| -> Result<Vec<HeadTask>> {
        let mut heads = vec![HeadTask::new(config.task, 1.0, &observations, policy)];
        for aux in &config.aux {
            if aux.task == config.task {
                bail!("aux task `{}` is also the main task", aux.task.name());
            }
            heads.push(HeadTask::new(aux.task, aux.weight, &observations, policy));
        }
        Ok(heads)
    };
    let (heads, valid_heads) = (heads_under(&policy)?, heads_under(&selection)?);
    let manifest = Manifest::read(&config.manifest)?;
    let set = Arc::new(ShardSet::open(&config.shards, &manifest)?);
    let (train, valid) =
        config
            .subset
            .select(&set, &manifest, [&heads, &valid_heads], config.batch_size)?;
    Ok(Prepared {
        heads,
        train: Arc::new(train),
        valid,
    })
}

fn build_model(config: &TrainConfig, heads: &[HeadTask], device: &Device) -> Result<Model> {
    let model_config = ModelConfig {
        arch: config.arch.clone(),
        in_channels: config.in_channels,
        heads: heads.iter().map(HeadTask::spec).collect(),
    };
    let mut model = Model::new(model_config, device, config.seed)?;
    model.set_precision(config.precision);
    initialise(&mut model, &config.init)?;
    Ok(model)
}

/// Load the initial weights `init` asks for into a freshly built model.
pub fn initialise(model: &mut Model, init: &Init) -> Result<()> {
    match init {
        Init::Random => {}
        Init::Imagenet(path) => {
            let report = model
                .load(path, LoadOptions::non_strict())
                .with_context(|| format!("--init: cannot load {}", path.display()))?;
            eprintln!("initialised from {}: {report}", path.display());
        }
        Init::Checkpoint(path) => {
            let tensors = backbone_tensors(model, path)
                .with_context(|| format!("--init: cannot read {}", path.display()))?;
            let report = model
                .load_state_dict(tensors, LoadOptions::non_strict())
                .with_context(|| {
                    format!(
                        "--init: the backbone in {} does not fit --arch {} (was it trained with \
                         another architecture or --in-channels?)",
                        path.display(),
                        model.config().arch
                    )
                })?;
            eprintln!("backbone from {}: {report}", path.display());
        }
    }
    Ok(())
}

/// Whether a parameter name belongs to a head (primary or auxiliary) rather than the backbone.
pub fn is_head_tensor(model: &Model, name: &str) -> bool {
    let primary = model.config().arch.primary_head_prefix();
    name.strip_prefix(primary)
        .or_else(|| name.strip_prefix("heads"))
        .is_some_and(|rest| rest.starts_with('.'))
}

/// An earlier checkpoint's backbone only: its heads (trained for another task, or a Barlow
/// Twins placeholder) are dropped, so the new run's heads start from their initialisation even
/// when their shapes happen to match (LibAUC's DAM recipe drops the classifier the same way).
fn backbone_tensors(model: &Model, path: &std::path::Path) -> Result<Vec<(String, Tensor)>> {
    let tensors = cxr_models::read_weights(path, model.device())?;
    Ok(tensors
        .into_iter()
        .filter(|(name, _)| !is_head_tensor(model, name))
        .collect())
}

/// Train as `config` says, writing everything to its run directory.
pub fn fit(config: &TrainConfig, options: &FitOptions) -> Result<FitSummary> {
    let run_dir = config.run_dir.clone();
    let existing = checkpoint::holds_run(&run_dir);
    if existing && !options.resume {
        bail!(
            "{} already holds a run: pass --resume to continue it, or choose another --run-dir \
             (nothing was overwritten)",
            run_dir.display()
        );
    }
    let prepared = prepare(config)?;
    let mut model = build_model(config, &prepared.heads, &options.device)?;
    let param_bytes: usize = model
        .trainable_vars()
        .iter()
        .map(|v| v.elem_count() * 4)
        .sum();
    // Room for a resume directory (model + two moments) and the best and last models.
    checkpoint::probe_run_dir(&run_dir, param_bytes * 6)?;

    let config_path = run_dir.join(checkpoint::CONFIG_FILE);
    if config_path.exists() {
        let saved: TrainConfig = serde_json::from_slice(&std::fs::read(&config_path)?)
            .with_context(|| {
                format!("{} is not a cxr-train configuration", config_path.display())
            })?;
        let diff = config.differences(&saved);
        if !diff.is_empty() {
            bail!(
                "--resume with settings that differ from {} ({}): a resumed run must use the \
                 original settings; pass them again or start a new --run-dir",
                config_path.display(),
                diff.join(", ")
            );
        }
    } else {
        atomic::write_bytes(&config_path, &serde_json::to_vec_pretty(config)?)?;
    }

    let aucm = match config.loss {
        LossConfig::Bce => None,
        LossConfig::Aucm { margin } => {
            let head = &prepared.heads[0];
            if head.loss() != LossKind::Bce {
                bail!(
                    "--loss aucm needs a classification task (pathologies, sex or view), not {}",
                    head.task.name()
                );
            }
            let rates = positive_rates(
                &prepared.train.targets.values[0],
                &prepared.train.targets.masks[0],
                head.outputs(),
            );
            Some(Aucm::new(margin, rates, &options.device)?)
        }
    };
    let mut optimizer = match (&aucm, config.optimizer) {
        (Some(aucm), OptimizerConfig::Pesg { .. }) => {
            Optimizer::pesg(config.optimizer, model.trainable_vars(), aucm)
        }
        (Some(_), _) => bail!(
            "--loss aucm is a min-max problem that needs --optimizer pesg (its dual variable \
             ascends); see cxr-train fit --help"
        ),
        (None, _) => Optimizer::new(config.optimizer, model.trainable_vars()),
    };
    let backbone_vars: Vec<Var> = model
        .named_parameters()
        .into_iter()
        .filter(|(name, _)| !is_head_tensor(&model, name))
        .map(|(_, v)| v)
        .collect();
    let mut state =
        checkpoint::start_or_resume(&run_dir, options.resume, &mut model, &mut optimizer, |_| {
            Ok(())
        })?;

    let n_train = prepared.train.len();
    let per_epoch = (n_train / config.batch_size) as u64;
    let total = per_epoch * config.epochs as u64;
    let end = options.max_steps.map_or(total, |m| m.min(total));
    let save_options = checkpoint::save_options("cxr_train", config, &config.normalisation)?;
    let metrics_path = run_dir.join(runlog::FILE_NAME);
    let bar = progress_bar(total, state.step, options.progress);
    let mut summary = FitSummary {
        run_dir: run_dir.clone(),
        steps: state.step,
        total_steps: total,
        best: state.best,
        last_valid: None,
    };

    let mut epoch_batches = None;
    let (mut loss_sum, mut loss_count, mut images) = (0f64, 0u64, 0usize);
    let mut data_wait = std::time::Duration::ZERO;
    let mut clock = Instant::now();
    let mut step = state.step;
    let resumed_finished = step == total;
    while step < end {
        let epoch = step / per_epoch;
        let rx = match &epoch_batches {
            Some((e, rx)) if *e == epoch => rx,
            _ => {
                let first = (step % per_epoch) as usize;
                let rx = prefetch_epoch(
                    prepared.train.clone(),
                    config.augment,
                    config.normalisation.clone(),
                    config.seed,
                    epoch,
                    config.batch_size,
                    first,
                );
                &epoch_batches.insert((epoch, rx)).1
            }
        };
        let waited = Instant::now();
        let batch = rx.recv().context("the batch loader stopped unexpectedly")?;
        data_wait += waited.elapsed();
        let batch = batch.to_device(&options.device)?;
        let mut lr = learning_rate(&config.schedule, config.lr, step, total);
        if let OptimizerConfig::Pesg {
            decay_every,
            decay_factor,
            ..
        } = config.optimizer
        {
            lr = pesg_learning_rate(lr, epoch, decay_every, decay_factor);
            if step.is_multiple_of(per_epoch) && pesg_moves_reference(epoch, decay_every) {
                optimizer.move_reference()?;
            }
        }
        let frozen = (epoch as usize) < config.freeze_epochs;
        // A frozen backbone also keeps its BatchNorm statistics: it runs in evaluation mode.
        let mode = if frozen { Mode::Eval } else { Mode::Train };
        let out = model.forward(&batch.images, mode)?;
        let logits: Vec<&Tensor> = prepared
            .heads
            .iter()
            .map(|h| out.head(h.task.name()).context("missing head"))
            .collect::<Result<_>>()?;
        let loss = match &aucm {
            None => total_loss(&prepared.heads, &logits, &batch.targets, &batch.masks)?,
            Some(aucm) => {
                let main = aucm.loss(logits[0], &batch.targets[0], &batch.masks[0])?;
                match prepared.heads.len() {
                    1 => main,
                    _ => {
                        (main
                            + total_loss(
                                &prepared.heads[1..],
                                &logits[1..],
                                &batch.targets[1..],
                                &batch.masks[1..],
                            )?)?
                    }
                }
            }
        };
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            bar.abandon();
            bail!(
                "the training loss became {value} at step {} (epoch {}, lr {lr:.3e}); training \
                 stopped and {}. Lower --lr, add --clip-grad, or check the inputs",
                step + 1,
                epoch + 1,
                kept_checkpoint(&run_dir)?
            );
        }
        let mut grads = loss.backward()?;
        if frozen {
            for var in &backbone_vars {
                grads.remove(var.as_tensor());
            }
        }
        if let Some(max_norm) = config.clip_grad_norm {
            optimizer.clip_grad_norm(&mut grads, max_norm)?;
        }
        optimizer.step(&grads, lr)?;
        step += 1;
        loss_sum += value;
        loss_count += 1;
        images += batch.len;
        bar.set_position(step);

        let epoch_end = step.is_multiple_of(per_epoch);
        let eval_now =
            epoch_end || (config.eval_every > 0 && step.is_multiple_of(config.eval_every));
        let epoch_f = step as f64 * config.batch_size as f64 / n_train as f64;
        if eval_now || step.is_multiple_of(config.log_every.max(1)) || step == end {
            let elapsed = clock.elapsed().as_secs_f64().max(1e-9);
            let rate = images as f64 / elapsed;
            let mean = loss_sum / loss_count as f64;
            bar.set_message(format!("loss {mean:.4} | {rate:.1} img/s"));
            let record = MetricRecord::train(step, epoch_f, mean, lr, rate)
                .with_data_wait(data_wait.as_secs_f64() / elapsed);
            runlog::append(&metrics_path, &record)?;
            (loss_sum, loss_count, images) = (0.0, 0, 0);
            data_wait = std::time::Duration::ZERO;
            clock = Instant::now();
        }
        if eval_now && !prepared.valid.is_empty() {
            let (vloss, auc) = validate(&model, &prepared.valid, config)?;
            if !vloss.is_finite() {
                bar.abandon();
                bail!(
                    "the validation loss became {vloss} at step {step} (lr {lr:.3e}); training \
                     stopped and {}. Lower --lr, add --clip-grad, or check the inputs",
                    kept_checkpoint(&run_dir)?
                );
            }
            runlog::append(
                &metrics_path,
                &MetricRecord::valid(step, epoch_f, vloss, lr, Some(auc.clone())),
            )?;
            let primary: Vec<f64> = prepared.heads[0]
                .columns
                .iter()
                .filter_map(|c| auc.get(c).copied().flatten())
                .collect();
            let value = match (config.select, primary.is_empty()) {
                (Select::Auc, false) => Some(primary.iter().sum::<f64>() / primary.len() as f64),
                (Select::Loss, _) => Some(-vloss),
                (Select::Auc, true) => None,
            };
            let shown = value.map_or("n/a".into(), |v| format!("{:.4}", v.abs()));
            let line = format!(
                "step {step}/{total} (epoch {epoch_f:.2}): valid loss {vloss:.4}, {} {shown}",
                match config.select {
                    Select::Auc => "mean AUC",
                    Select::Loss => "loss",
                }
            );
            // A hidden bar (not a terminal: a log file) drops println; the log still wants it.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            if let Some(v) = value {
                if state.best.is_none_or(|b| v > b.value) {
                    state.best = Some(Best { step, value: v });
                    model.save(run_dir.join(checkpoint::BEST_MODEL), &save_options)?;
                    atomic::write_bytes(
                        &run_dir.join(checkpoint::BEST_INFO),
                        &serde_json::to_vec_pretty(&serde_json::json!({
                            "step": step, "select": config.select, "valid_loss": vloss, "auc": auc,
                        }))?,
                    )?;
                }
            }
            summary.last_valid = Some((vloss, auc));
        }
        if eval_now || step == end {
            state.step = step;
            state.resume_dir = checkpoint::resume_dir(step);
            checkpoint::save(&run_dir, &model, &optimizer, &state, &save_options)?;
        }
    }
    bar.finish_and_clear();
    summary.steps = step;
    summary.best = state.best;
    let valid_predictions = run_dir.join(checkpoint::VALID_PREDICTIONS);
    // A run resumed after it had finished has written them already.
    let written = resumed_finished && valid_predictions.exists();
    if step == total && !prepared.valid.is_empty() && !written {
        let best_path = run_dir.join(checkpoint::BEST_MODEL);
        let source = if best_path.exists() {
            best_path
        } else {
            run_dir.join(checkpoint::LAST_MODEL)
        };
        let (mut best, _) = Model::from_checkpoint(&source, &options.device)?;
        best.set_precision(config.precision);
        let logits = predict::infer(
            &best,
            &prepared.valid,
            &config.normalisation,
            config.batch_size,
        )?;
        predict::predictions(&prepared.valid, &logits)?.write(&valid_predictions)?;
    }
    if step == total {
        checkpoint::finish(&run_dir, options.keep)?;
    }
    Ok(summary)
}

/// What a stopped run says about its checkpoint.
fn kept_checkpoint(run_dir: &std::path::Path) -> Result<String> {
    Ok(match checkpoint::read_state(run_dir)? {
        Some(s) => format!(
            "the last good checkpoint (step {}) is kept in {}",
            s.step,
            run_dir.display()
        ),
        None => "no checkpoint had been written yet".to_string(),
    })
}

/// Validation loss (same weighting as training) and per-column AUCs.
fn validate(
    model: &Model,
    valid: &Samples,
    config: &TrainConfig,
) -> Result<(f64, BTreeMap<String, Option<f64>>)> {
    let logits = predict::infer(model, valid, &config.normalisation, config.batch_size)?;
    let tensors = predict::logit_tensors(valid, &logits)?;
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let dense = |list: &[Vec<f32>]| -> Result<Vec<Tensor>> {
        list.iter()
            .zip(&valid.heads)
            .map(|(v, h)| {
                Ok(Tensor::from_slice(
                    v,
                    (valid.len(), h.outputs()),
                    &Device::Cpu,
                )?)
            })
            .collect()
    };
    let loss = total_loss(
        &valid.heads,
        &refs,
        &dense(&valid.targets.values)?,
        &dense(&valid.targets.masks)?,
    )?;
    let loss = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    Ok((loss, aucs(valid, &logits)))
}

fn progress_bar(total: u64, position: u64, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar.set_position(position);
    bar
}

/// The default pathology list for a dataset: CheXpert's 14 or NIH's 14.
pub fn default_pathologies(manifest: &Manifest) -> &'static str {
    match manifest.rows.first().map(|r| r.dataset) {
        Some(cxr_core::Dataset::Nih) => "nih14",
        _ => "chexpert14",
    }
}

/// Check a task name makes sense with the pathology list.
pub fn pathologies_for(task: Task, spec: &str) -> Result<Vec<String>> {
    Ok(match task {
        Task::Pathologies => Observation::parse_list(spec)?
            .iter()
            .map(|o| o.name().to_string())
            .collect(),
        _ => Vec::new(),
    })
}
