//! Runs shared between experiments: `cxr-train fit --run-store DIR`.
//!
//! Why: the study's experiments share their baselines. The plain DenseNet121 pathology run
//! that the policy, weight-decay, aux, DAM, architecture and pretraining experiments each
//! compare against is one and the same run, and pipelines that each own their runs train it
//! once per experiment (on CheXpert: five needless trainings per seed). With a store, a run lives in
//! `DIR/KEY`, where `KEY` hashes its settings (all of them but the run directory: the same
//! ones `--resume` insists on), and the experiment's `--run-dir` is a symbolic link to it. The
//! first experiment trains it; the others find it finished, or resume it where a killed one
//! stopped. A lock file in it (`.lock`) keeps two processes from training it at once.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use crate::config::TrainConfig;
use crate::trainer::{self, FitOptions, FitSummary};

/// The store's name for a run: 16 hex digits of the SHA-256 of its settings (canonical JSON,
/// keys sorted) without the run directory.
pub fn run_key(config: &TrainConfig) -> String {
    let mut settings = serde_json::to_value(config).expect("a configuration serialises");
    if let Some(fields) = settings.as_object_mut() {
        fields.remove("run_dir");
    }
    let bytes = serde_json::to_vec(&settings).expect("JSON serialises");
    cxr_core::hash::sha256_hex(&bytes)[..16].to_string()
}

/// [`trainer::fit`] in `store`, with `config.run_dir` made a link to the stored run. Resumes
/// the stored run whatever `options.resume` says: reusing it is the point.
pub fn fit(config: &TrainConfig, options: &FitOptions, store: &Path) -> Result<FitSummary> {
    std::fs::create_dir_all(store)
        .with_context(|| format!("cannot create the run store {}", store.display()))?;
    let shared = store.join(run_key(config));
    std::fs::create_dir_all(&shared)?;
    let lock_path = shared.join(".lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "{} is being trained by another process: waiting",
            shared.display()
        );
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    }
    link(&config.run_dir, &shared)?;
    let stored = TrainConfig {
        run_dir: shared,
        ..config.clone()
    };
    let options = FitOptions {
        resume: true,
        device: options.device.clone(),
        ..*options
    };
    let summary = trainer::fit(&stored, &options)?;
    Ok(FitSummary {
        run_dir: config.run_dir.clone(),
        ..summary
    })
}

/// Makes `link` a symbolic link to the directory `target` (relative, so that the whole output
/// folder can move), replacing an older link but never a directory.
fn link(link: &Path, target: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if !meta.file_type().is_symlink() {
            bail!(
                "{} exists and is not a link into a run store: remove it or choose another \
                 --run-dir (nothing was overwritten)",
                link.display()
            );
        }
    }
    let parent = absolute_parent(link)?;
    std::fs::create_dir_all(&parent)?;
    let relative = relative_path(&parent, &std::fs::canonicalize(target)?);
    let name = link
        .file_name()
        .context("--run-dir needs a final component")?;
    let temporary = parent.join(format!(".{}.link.tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&temporary);
    symlink(&relative, &temporary)?;
    std::fs::rename(&temporary, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot create the link {}", link.display()))
}

#[cfg(not(unix))]
fn symlink(_: &Path, link: &Path) -> Result<()> {
    bail!(
        "--run-store links {} into the store, which needs a Unix system; leave --run-store out",
        link.display()
    )
}

/// The canonical directory `path` will sit in, created if missing.
fn absolute_parent(path: &Path) -> Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    Ok(std::fs::canonicalize(&parent)?)
}

/// `to` as seen from the directory `from` (both absolute and canonical).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<Component>, Vec<Component>) =
        (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let ups = (common..from.len()).map(|_| Component::ParentDir);
    ups.chain(to[common..].iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        let rel = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            rel("/o/policy/runs", "/o/store/ab12"),
            Path::new("../../store/ab12")
        );
        assert_eq!(rel("/o", "/o/store/ab12"), Path::new("store/ab12"));
    }
}
