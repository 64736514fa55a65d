//! The run directory: checkpoints, resume state and the probe that fails fast.
//!
//! ```text
//! RUN/config.json            the resolved configuration (written once)
//! RUN/metrics.jsonl          one record per log point (cxr_core::runlog)
//! RUN/best.safetensors       the best model so far (by validation AUC or loss), best.json says when
//! RUN/last.safetensors       the latest model
//! RUN/resume/step-N/         model.safetensors (BatchNorm buffers included) + optim.safetensors
//! RUN/last.state.json        step, best and which resume/step-N to continue from
//! RUN/valid_predictions.parquet
//! ```
//!
//! A checkpoint is committed by rewriting `last.state.json` (atomically) after its files are
//! complete; the previous `resume/step-N` is deleted only afterwards. A kill at any moment thus
//! leaves a consistent state to resume from: never a new model with an old optimiser.
//!
//! A finished run needs none of that resume state, which is most of its size (a model and two
//! Adam moments: three times the model), so [`finish`] marks `last.state.json` finished and
//! deletes what [`Keep`] does not ask for. A study is dozens of runs: kept whole, the demo's
//! 26 runs took 6 GB; kept as their best models, 1.3 GB.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use cxr_core::atomic;
use cxr_core::runlog::{self, MetricRecord};
use cxr_models::{LoadOptions, Model, SaveOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::config::Normalisation;
use crate::optim::Optimizer;

pub const CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "last.state.json";
pub const BEST_MODEL: &str = "best.safetensors";
pub const BEST_INFO: &str = "best.json";
pub const LAST_MODEL: &str = "last.safetensors";
pub const VALID_PREDICTIONS: &str = "valid_predictions.parquet";

/// The best validation result so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub step: u64,
    /// Mean AUC (higher is better) or loss (lower is better), as `--select` says.
    pub value: f64,
}

/// `last.state.json`: what a resume needs besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps completed.
    pub step: u64,
    /// The optimiser's count of its updates; equals `step` unless steps were skipped. The
    /// per-parameter counts Adam's bias correction uses (PyTorch's `state['step']`) are in
    /// `optim.safetensors`; a state without them gives this count to every updated parameter.
    pub optimizer_steps: u64,
    /// Directory (relative to the run directory) holding the model and optimiser state.
    pub resume_dir: String,
    pub best: Option<Best>,
    /// Training completed; the resume state may have been deleted (see [`finish`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

/// What a finished run keeps besides its configuration, metrics and validation predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Keep {
    /// best.safetensors (last.safetensors instead when nothing was validated)
    #[default]
    Best,
    /// best.safetensors and last.safetensors
    Last,
    /// everything, resume state included
    All,
}

/// The state a run starts from: step 0, or with `resume` the last saved state of `run_dir`,
/// its model and optimiser restored (and whatever else the run saves, through `load_extra`,
/// given that state's directory). Metrics logged after that step are dropped, so a resumed
/// run's log reads as an uninterrupted one.
pub fn start_or_resume(
    run_dir: &Path,
    resume: bool,
    model: &mut Model,
    optimizer: &mut Optimizer,
    load_extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<RunState> {
    let mut state = RunState {
        step: 0,
        optimizer_steps: 0,
        resume_dir: resume_dir(0),
        best: None,
        finished: false,
    };
    if resume {
        if let Some(saved) = read_state(run_dir)? {
            if saved.finished {
                eprintln!("{} has finished: nothing left to train", run_dir.display());
                return Ok(saved);
            }
            check_resumable(run_dir, &saved)?;
            load_extra(&run_dir.join(&saved.resume_dir))?;
            load(run_dir, &saved, model, optimizer)?;
            eprintln!("resuming {} at step {}", run_dir.display(), saved.step);
            state = saved;
        }
    }
    truncate_metrics(run_dir, state.step)?;
    Ok(state)
}

/// Check that `dir` can be created and written, and holds at least `bytes` of free space for a
/// checkpoint (by writing that many bytes and syncing them), before any training time is spent.
pub fn probe_run_dir(dir: &Path, bytes: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the run directory {}: choose a writable --run-dir",
            dir.display()
        )
    })?;
    let probe = dir.join(".write-probe");
    let written = atomic::write_bytes(&probe, &vec![0u8; bytes]);
    let _ = std::fs::remove_file(&probe);
    written.with_context(|| {
        format!(
            "cannot write {} MB to the run directory {} (unwritable or full disk?): checkpoints \
             would fail later, so fix this before training",
            bytes.div_ceil(1 << 20),
            dir.display()
        )
    })
}

pub fn read_state(run_dir: &Path) -> Result<Option<RunState>> {
    let path = run_dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let state = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is corrupt; delete it to restart the run",
            path.display()
        )
    })?;
    Ok(Some(state))
}

/// What every checkpoint of a run carries besides its tensors: the run's configuration under
/// `key` (`cxr_train`, `cxr_pretrain`), the input normalisation a later user must apply, and
/// the code revision when the build knows it.
pub fn save_options(
    key: &str,
    config: &impl Serialize,
    normalisation: &Normalisation,
) -> Result<SaveOptions> {
    Ok(SaveOptions {
        drop_aux_heads: false,
        training_config: BTreeMap::from([
            (key.to_string(), serde_json::to_string(config)?),
            (
                "normalisation".to_string(),
                serde_json::to_string(normalisation)?,
            ),
        ]),
        code_revision: option_env!("CXR_REVISION").map(str::to_string),
    })
}

/// Save model and optimiser under `resume/step-N`, then commit `last.state.json`, then write
/// `last.safetensors` and remove older resume directories.
pub fn save(
    run_dir: &Path,
    model: &Model,
    optimizer: &Optimizer,
    state: &RunState,
    options: &SaveOptions,
) -> Result<()> {
    let dir = run_dir.join(&state.resume_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    model.save(dir.join("model.safetensors"), options)?;
    let (tensors, steps) = optimizer.state();
    let tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    cxr_models::write_weights(dir.join("optim.safetensors"), &tensors, None)?;
    let json = serde_json::to_vec_pretty(&RunState {
        optimizer_steps: steps,
        ..state.clone()
    })?;
    atomic::write_bytes(&run_dir.join(STATE_FILE), &json)?;
    model.save(run_dir.join(LAST_MODEL), options)?;
    let resume_root = run_dir.join("resume");
    for entry in std::fs::read_dir(&resume_root)?.flatten() {
        if entry.path() != dir {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Mark the finished run in `run_dir` finished, then delete what `keep` leaves out. The mark
/// is committed first, so a kill in between leaves a finished run with files to spare, which
/// the next call deletes.
pub fn finish(run_dir: &Path, keep: Keep) -> Result<()> {
    let Some(state) = read_state(run_dir)? else {
        bail!("{} has no {STATE_FILE} to mark finished", run_dir.display());
    };
    if !state.finished {
        let finished = RunState {
            finished: true,
            ..state
        };
        atomic::write_bytes(
            &run_dir.join(STATE_FILE),
            &serde_json::to_vec_pretty(&finished)?,
        )?;
    }
    if keep == Keep::All {
        return Ok(());
    }
    remove_if_present(&run_dir.join("resume"))?;
    if keep == Keep::Best && run_dir.join(BEST_MODEL).exists() {
        remove_if_present(&run_dir.join(LAST_MODEL))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Name of the resume directory for `step`.
pub fn resume_dir(step: u64) -> String {
    format!("resume/step-{step:010}")
}

/// Load the model and optimiser state a [`RunState`] points to.
pub fn load(
    run_dir: &Path,
    state: &RunState,
    model: &mut Model,
    optimizer: &mut Optimizer,
) -> Result<()> {
    let dir = run_dir.join(&state.resume_dir);
    model
        .load(dir.join("model.safetensors"), LoadOptions::strict())
        .with_context(|| format!("cannot resume from {}", dir.display()))?;
    let path = dir.join("optim.safetensors");
    // Through cxr-models' reader, which refuses moments holding NaN or infinity as it does
    // weights.
    let tensors = cxr_models::read_weights(&path, model.device())
        .with_context(|| format!("cannot read the optimiser state {}", path.display()))?;
    optimizer.load_state(tensors.into_iter().collect(), state.optimizer_steps)
}

/// Drop the metric records written after the checkpoint a resume continues from, so that the
/// resumed log equals an uninterrupted one.
pub fn truncate_metrics(run_dir: &Path, step: u64) -> Result<()> {
    let path = run_dir.join(runlog::FILE_NAME);
    if !path.exists() {
        return Ok(());
    }
    let records: Vec<MetricRecord> = runlog::read(&path)?;
    let kept: Vec<&MetricRecord> = records.iter().filter(|r| r.step <= step).collect();
    if kept.len() == records.len() {
        return Ok(());
    }
    let mut text = String::new();
    for r in kept {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    atomic::write_bytes(&path, text.as_bytes())?;
    Ok(())
}

/// Whether `dir` already holds a run.
pub fn holds_run(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists() || dir.join(STATE_FILE).exists()
}

/// Refuse a resume whose state is missing its files.
pub fn check_resumable(run_dir: &Path, state: &RunState) -> Result<()> {
    let dir = run_dir.join(&state.resume_dir);
    for f in ["model.safetensors", "optim.safetensors"] {
        if !dir.join(f).exists() {
            bail!(
                "{} says to resume from {}, which lacks {f}; the run directory was modified by hand",
                run_dir.join(STATE_FILE).display(),
                dir.display()
            );
        }
    }
    Ok(())
}
