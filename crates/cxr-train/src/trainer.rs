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
use cxr_models::SaveOptions;
use cxr_models::{bce_with_logits, LoadOptions, Mode, Model, ModelConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, Best, Keep, RunState};
use crate::config::{Init, LossConfig, OptimizerConfig, Select, Task, TrainConfig};
use crate::dam::{pesg_learning_rate, pesg_moves_reference, positive_rates, Aucm};
use crate::data::{prefetch_epoch, Batch, DeviceBatch, Samples, ShardSet};
use crate::labels::{HeadTask, LossKind};
use crate::optim::Optimizer;
use crate::predict;
use crate::schedule::learning_rate;

/// How to run a fit, besides the configuration.
#[derive(Debug, Clone)]
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
            out.insert(name.clone(), cxr_core::auc::roc_auc_known(&labels, &scores));
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
    let mut run = Run::start(config, options)?;
    while run.step < run.end {
        let lr = run.train_step()?;
        let epoch_end = run.step.is_multiple_of(run.per_epoch);
        let eval_now =
            epoch_end || (config.eval_every > 0 && run.step.is_multiple_of(config.eval_every));
        let epoch_f = run.step as f64 * config.batch_size as f64 / run.data.train.len() as f64;
        if eval_now || run.step.is_multiple_of(config.log_every.max(1)) || run.step == run.end {
            run.log_training(epoch_f, lr)?;
        }
        if eval_now && !run.data.valid.is_empty() {
            run.validate(epoch_f, lr)?;
        }
        if eval_now || run.step == run.end {
            run.save()?;
        }
    }
    run.finish()
}

/// A fit under way, phase by phase: [`Run::start`] prepares the data, model and optimiser and
/// resumes the saved state; [`Run::train_step`] takes one optimiser step, whose losses
/// [`Run::log_training`] records; [`Run::validate`] scores the validation split and keeps the
/// best model; [`Run::save`] writes the resume state; [`Run::finish`] writes the validation
/// predictions and leaves what the run keeps.
struct Run<'a> {
    config: &'a TrainConfig,
    options: &'a FitOptions,
    data: Prepared,
    model: Model,
    optimizer: Optimizer,
    /// The primary head's AUC-margin loss (`--loss aucm`); else every head's own loss.
    aucm: Option<Aucm>,
    /// The backbone's parameters, which a frozen epoch leaves as they are.
    backbone: Vec<Var>,
    /// The last saved state, and the best validation so far.
    state: RunState,
    /// Optimiser steps taken.
    step: u64,
    per_epoch: u64,
    total: u64,
    /// Where this invocation stops: the last step, or --max-steps.
    end: u64,
    /// The run had finished before this invocation started.
    resumed_finished: bool,
    /// The loader of the current epoch's batches.
    loader: Option<(u64, Receiver<Batch>)>,
    log: TrainingLog,
    save_options: SaveOptions,
    bar: ProgressBar,
    /// The last validation: loss and per-column AUCs.
    last_valid: Option<(f64, BTreeMap<String, Option<f64>>)>,
}

impl<'a> Run<'a> {
    /// Prepare the run (refusing a run directory in use without --resume, or resumed with other
    /// settings) and restore its saved state when resuming.
    fn start(config: &'a TrainConfig, options: &'a FitOptions) -> Result<Self> {
        let run_dir = &config.run_dir;
        if checkpoint::holds_run(run_dir) && !options.resume {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another \
                 --run-dir (nothing was overwritten)",
                run_dir.display()
            );
        }
        let data = prepare(config)?;
        let mut model = build_model(config, &data.heads, &options.device)?;
        let param_bytes: usize = model
            .trainable_vars()
            .iter()
            .map(|v| v.elem_count() * 4)
            .sum();
        // Room for a resume directory (model + two moments) and the best and last models.
        checkpoint::probe_run_dir(run_dir, param_bytes * 6)?;
        keep_or_check_config(config)?;
        let aucm = aucm_loss(config, &data, &options.device)?;
        let mut optimizer = optimizer_for(config, &model, aucm.as_ref())?;
        let backbone = backbone_vars(&model);
        let state = checkpoint::start_or_resume(
            run_dir,
            options.resume,
            &mut model,
            &mut optimizer,
            |_| Ok(()),
        )?;
        let per_epoch = (data.train.len() / config.batch_size) as u64;
        let total = per_epoch * config.epochs as u64;
        Ok(Run {
            config,
            options,
            model,
            optimizer,
            aucm,
            backbone,
            step: state.step,
            per_epoch,
            total,
            end: options.max_steps.map_or(total, |m| m.min(total)),
            resumed_finished: state.step == total,
            loader: None,
            log: TrainingLog::new(),
            save_options: checkpoint::save_options("cxr_train", config, &config.normalisation)?,
            bar: progress_bar(total, state.step, options.progress),
            last_valid: None,
            state,
            data,
        })
    }

    /// One optimiser step on the next batch; returns its learning rate.
    fn train_step(&mut self) -> Result<f64> {
        let (config, step) = (self.config, self.step);
        let epoch = step / self.per_epoch;
        let batch = self.next_batch(epoch)?;
        let mut lr = learning_rate(&config.schedule, config.lr, step, self.total);
        if let OptimizerConfig::Pesg {
            decay_every,
            decay_factor,
            ..
        } = config.optimizer
        {
            lr = pesg_learning_rate(lr, epoch, decay_every, decay_factor);
            if step.is_multiple_of(self.per_epoch) && pesg_moves_reference(epoch, decay_every) {
                self.optimizer.move_reference()?;
            }
        }
        let frozen = (epoch as usize) < config.freeze_epochs;
        let loss = self.loss(&batch, frozen)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            self.bar.abandon();
            bail!(
                "the training loss became {value} at step {} (epoch {}, lr {lr:.3e}); training \
                 stopped and {}. Lower --lr, add --clip-grad, or check the inputs",
                step + 1,
                epoch + 1,
                kept_checkpoint(&config.run_dir)?
            );
        }
        let mut grads = loss.backward()?;
        if frozen {
            for var in &self.backbone {
                grads.remove(var.as_tensor());
            }
        }
        if let Some(max_norm) = config.clip_grad_norm {
            self.optimizer.clip_grad_norm(&mut grads, max_norm)?;
        }
        self.optimizer.step(&grads, lr)?;
        self.step += 1;
        self.log.add(value, batch.len);
        self.bar.set_position(self.step);
        Ok(lr)
    }

    /// The next training batch, on the device, from the loader of `epoch` (started at the
    /// run's position when the epoch is new to it).
    fn next_batch(&mut self, epoch: u64) -> Result<DeviceBatch> {
        let config = self.config;
        let rx = match &self.loader {
            Some((e, rx)) if *e == epoch => rx,
            _ => {
                let first = (self.step % self.per_epoch) as usize;
                let rx = prefetch_epoch(
                    self.data.train.clone(),
                    config.augment,
                    config.normalisation.clone(),
                    config.seed,
                    epoch,
                    config.batch_size,
                    first,
                );
                &self.loader.insert((epoch, rx)).1
            }
        };
        let waited = Instant::now();
        let batch = rx.recv().context("the batch loader stopped unexpectedly")?;
        self.log.data_wait += waited.elapsed();
        batch.to_device(&self.options.device)
    }

    /// The training loss of `batch`; a `frozen` backbone also keeps its BatchNorm statistics:
    /// it runs in evaluation mode.
    fn loss(&self, batch: &DeviceBatch, frozen: bool) -> Result<Tensor> {
        let heads = &self.data.heads;
        let mode = if frozen { Mode::Eval } else { Mode::Train };
        let out = self.model.forward(&batch.images, mode)?;
        let logits: Vec<&Tensor> = heads
            .iter()
            .map(|h| out.head(h.task.name()).context("missing head"))
            .collect::<Result<_>>()?;
        let Some(aucm) = &self.aucm else {
            return total_loss(heads, &logits, &batch.targets, &batch.masks);
        };
        let main = aucm.loss(logits[0], &batch.targets[0], &batch.masks[0])?;
        if heads.len() == 1 {
            return Ok(main);
        }
        let aux = total_loss(
            &heads[1..],
            &logits[1..],
            &batch.targets[1..],
            &batch.masks[1..],
        )?;
        Ok((main + aux)?)
    }

    /// Append the training record of the steps since the last one.
    fn log_training(&mut self, epoch_f: f64, lr: f64) -> Result<()> {
        let (record, message) = self.log.record(self.step, epoch_f, lr);
        self.bar.set_message(message);
        runlog::append(&self.config.run_dir.join(runlog::FILE_NAME), &record)?;
        self.log = TrainingLog::new();
        Ok(())
    }

    /// Score the validation split, record it, and keep the model as the best when it is.
    fn validate(&mut self, epoch_f: f64, lr: f64) -> Result<()> {
        let (config, step) = (self.config, self.step);
        let (vloss, auc) = validate(&self.model, &self.data.valid, config)?;
        if !vloss.is_finite() {
            self.bar.abandon();
            bail!(
                "the validation loss became {vloss} at step {step} (lr {lr:.3e}); training \
                 stopped and {}. Lower --lr, add --clip-grad, or check the inputs",
                kept_checkpoint(&config.run_dir)?
            );
        }
        runlog::append(
            &config.run_dir.join(runlog::FILE_NAME),
            &MetricRecord::valid(step, epoch_f, vloss, lr, Some(auc.clone())),
        )?;
        let value = self.selection_value(vloss, &auc);
        let shown = value.map_or("n/a".into(), |v| format!("{:.4}", v.abs()));
        let line = format!(
            "step {step}/{} (epoch {epoch_f:.2}): valid loss {vloss:.4}, {} {shown}",
            self.total,
            match config.select {
                Select::Auc => "mean AUC",
                Select::Loss => "loss",
            }
        );
        // A hidden bar (not a terminal: a log file) drops println; the log still wants it.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        if let Some(v) = value {
            if self.state.best.is_none_or(|b| v > b.value) {
                self.keep_best(Best { step, value: v }, vloss, &auc)?;
            }
        }
        self.last_valid = Some((vloss, auc));
        Ok(())
    }

    /// What --select compares (higher is better): the primary head's mean AUC, or minus the
    /// validation loss; none when no AUC of the primary head is defined.
    fn selection_value(&self, vloss: f64, auc: &BTreeMap<String, Option<f64>>) -> Option<f64> {
        let primary: Vec<f64> = self.data.heads[0]
            .columns
            .iter()
            .filter_map(|c| auc.get(c).copied().flatten())
            .collect();
        match (self.config.select, primary.is_empty()) {
            (Select::Auc, false) => Some(primary.iter().sum::<f64>() / primary.len() as f64),
            (Select::Loss, _) => Some(-vloss),
            (Select::Auc, true) => None,
        }
    }

    /// Write the model as the best one, with what it scored.
    fn keep_best(
        &mut self,
        best: Best,
        vloss: f64,
        auc: &BTreeMap<String, Option<f64>>,
    ) -> Result<()> {
        let run_dir = &self.config.run_dir;
        self.state.best = Some(best);
        self.model
            .save(run_dir.join(checkpoint::BEST_MODEL), &self.save_options)?;
        let info = serde_json::json!({
            "step": best.step, "select": self.config.select, "valid_loss": vloss, "auc": auc,
        });
        atomic::write_bytes(
            &run_dir.join(checkpoint::BEST_INFO),
            &serde_json::to_vec_pretty(&info)?,
        )?;
        Ok(())
    }

    /// Write the resume state of the current step.
    fn save(&mut self) -> Result<()> {
        self.state.step = self.step;
        self.state.resume_dir = checkpoint::resume_dir(self.step);
        checkpoint::save(
            &self.config.run_dir,
            &self.model,
            &self.optimizer,
            &self.state,
            &self.save_options,
        )
    }

    /// At the last step, write the best model's validation predictions (unless a finished run
    /// was resumed: they are there) and leave what --keep keeps.
    fn finish(self) -> Result<FitSummary> {
        self.bar.finish_and_clear();
        let run_dir = &self.config.run_dir;
        if self.step == self.total {
            let valid_predictions = run_dir.join(checkpoint::VALID_PREDICTIONS);
            let written = self.resumed_finished && valid_predictions.exists();
            if !self.data.valid.is_empty() && !written {
                self.predict_valid(&valid_predictions)?;
            }
            checkpoint::finish(run_dir, self.options.keep)?;
        }
        Ok(FitSummary {
            run_dir: run_dir.clone(),
            steps: self.step,
            total_steps: self.total,
            best: self.state.best,
            last_valid: self.last_valid,
        })
    }

    /// The validation predictions of the best model (the last one when none was selected).
    fn predict_valid(&self, out: &std::path::Path) -> Result<()> {
        let (config, run_dir) = (self.config, &self.config.run_dir);
        let best_path = run_dir.join(checkpoint::BEST_MODEL);
        let source = if best_path.exists() {
            best_path
        } else {
            run_dir.join(checkpoint::LAST_MODEL)
        };
        let (mut best, _) = Model::from_checkpoint(&source, &self.options.device)?;
        best.set_precision(config.precision);
        let logits = predict::infer(
            &best,
            &self.data.valid,
            &config.normalisation,
            config.batch_size,
        )?;
        let valid = &self.data.valid;
        predict::predictions(&valid.image_ids, &valid.heads, &logits)?.write(out)?;
        Ok(())
    }
}

/// The training losses, images and waits for data since the last training record.
struct TrainingLog {
    loss_sum: f64,
    losses: u64,
    images: usize,
    data_wait: Duration,
    clock: Instant,
}

impl TrainingLog {
    fn new() -> Self {
        TrainingLog {
            loss_sum: 0.0,
            losses: 0,
            images: 0,
            data_wait: Duration::ZERO,
            clock: Instant::now(),
        }
    }

    fn add(&mut self, loss: f64, images: usize) {
        self.loss_sum += loss;
        self.losses += 1;
        self.images += images;
    }

    /// The record at `step`, and the progress bar's message.
    fn record(&self, step: u64, epoch_f: f64, lr: f64) -> (MetricRecord, String) {
        let elapsed = self.clock.elapsed().as_secs_f64().max(1e-9);
        let rate = self.images as f64 / elapsed;
        let mean = self.loss_sum / self.losses as f64;
        let record = MetricRecord::train(step, epoch_f, mean, lr, rate)
            .with_data_wait(self.data_wait.as_secs_f64() / elapsed);
        (record, format!("loss {mean:.4} | {rate:.1} img/s"))
    }
}

/// A new run writes its configuration; a resumed one must have the one it was started with.
fn keep_or_check_config(config: &TrainConfig) -> Result<()> {
    let config_path = config.run_dir.join(checkpoint::CONFIG_FILE);
    if !config_path.exists() {
        atomic::write_bytes(&config_path, &serde_json::to_vec_pretty(config)?)?;
        return Ok(());
    }
    let saved: TrainConfig = serde_json::from_slice(&std::fs::read(&config_path)?)
        .with_context(|| format!("{} is not a cxr-train configuration", config_path.display()))?;
    let diff = config.differences(&saved);
    if !diff.is_empty() {
        bail!(
            "--resume with settings that differ from {} ({}): a resumed run must use the \
             original settings; pass them again or start a new --run-dir",
            config_path.display(),
            diff.join(", ")
        );
    }
    Ok(())
}

/// The AUC-margin loss `--loss aucm` asks for, over the primary head's training positives.
fn aucm_loss(config: &TrainConfig, data: &Prepared, device: &Device) -> Result<Option<Aucm>> {
    let LossConfig::Aucm { margin } = config.loss else {
        return Ok(None);
    };
    let head = &data.heads[0];
    if head.loss() != LossKind::Bce {
        bail!(
            "--loss aucm needs a classification task (pathologies, sex or view), not {}",
            head.task.name()
        );
    }
    let targets = &data.train.targets;
    let rates = positive_rates(&targets.values[0], &targets.masks[0], head.outputs());
    Ok(Some(Aucm::new(margin, rates, device)?))
}

/// The optimiser of the model's parameters (PESG also of the AUC-margin loss's variables).
fn optimizer_for(config: &TrainConfig, model: &Model, aucm: Option<&Aucm>) -> Result<Optimizer> {
    Ok(match (aucm, config.optimizer) {
        (Some(aucm), OptimizerConfig::Pesg { .. }) => {
            Optimizer::pesg(config.optimizer, model.trainable_vars(), aucm)
        }
        (Some(_), _) => bail!(
            "--loss aucm is a min-max problem that needs --optimizer pesg (its dual variable \
             ascends); see cxr-train fit --help"
        ),
        (None, _) => Optimizer::new(config.optimizer, model.trainable_vars()),
    })
}

/// The parameters that are not a head's.
fn backbone_vars(model: &Model) -> Vec<Var> {
    model
        .named_parameters()
        .into_iter()
        .filter(|(name, _)| !is_head_tensor(model, name))
        .map(|(_, v)| v)
        .collect()
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
