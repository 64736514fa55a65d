//! The training metric log, `metrics.jsonl` in a run directory.
//!
//! `cxr-train` appends one JSON object per line as it trains; `cxr-eval curves` draws the loss
//! curves from it. JSON Lines rather than one JSON document, because a log that grows during a
//! run must stay readable after every line (and after a crash), and `tail -f` or `jq` can follow
//! it. A line looks like
//!
//! ```json
//! {"step":1200,"epoch":1.5,"phase":"valid","loss":0.412,"lr":0.0001,"auc":{"Edema":0.91,"Fracture":null}}
//! ```
//!
//! `lr`, `images_per_s`, `data_wait` and `auc` are optional. An AUC is `null` where it is
//! undefined (the validation images of that task have one class only), matching what `cxr-eval`
//! computes. A loss that diverged to NaN or infinity is written as `null` (JSON has no NaN) and read back as
//! NaN. Fields this version does not know are ignored, so later versions can add some.

use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The log's file name inside a run directory.
pub const FILE_NAME: &str = "metrics.jsonl";

/// Whether a record measures training batches or the validation set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Train,
    Valid,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Fractional epochs seen so far (`step * batch / train_images`).
    pub epoch: f64,
    pub phase: Phase,
    /// Mean loss over the batches (train) or the validation set (valid); NaN when it diverged.
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
    /// Training: the fraction of the interval spent waiting for the data loader (0 when the
    /// loader keeps ahead; near 1 when it is what limits the speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_wait: Option<f64>,
    /// Validation ROC AUC per task name; `None` where undefined (one class only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<BTreeMap<String, Option<f64>>>,
}

impl MetricRecord {
    /// A training record: the mean loss of the batches since the last record, at `lr`, and
    /// their speed.
    pub fn train(step: u64, epoch: f64, loss: f64, lr: f64, images_per_s: f64) -> MetricRecord {
        MetricRecord {
            step,
            epoch,
            phase: Phase::Train,
            loss,
            lr: Some(lr),
            images_per_s: Some(images_per_s),
            data_wait: None,
            auc: None,
        }
    }

    /// The record with the fraction of its interval spent waiting for data.
    pub fn with_data_wait(self, fraction: f64) -> MetricRecord {
        MetricRecord {
            data_wait: Some(fraction),
            ..self
        }
    }

    /// A validation record; `auc` is `None` for runs without AUCs (pretraining).
    pub fn valid(
        step: u64,
        epoch: f64,
        loss: f64,
        lr: f64,
        auc: Option<BTreeMap<String, Option<f64>>>,
    ) -> MetricRecord {
        MetricRecord {
            step,
            epoch,
            phase: Phase::Valid,
            loss,
            lr: Some(lr),
            images_per_s: None,
            data_wait: None,
            auc,
        }
    }
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A log that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunLogError {
    #[error(transparent)]
    File(#[from] Error),
    #[error(
        "{path}:{line}: not a metric record: {reason}; each line must be one JSON object such as \
         {{\"step\":1,\"epoch\":0.01,\"phase\":\"train\",\"loss\":0.69}}"
    )]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Append `record` as one line to the log at `path`, creating the file (and its directory).
///
/// The line goes out in a single `write` on a file opened for appending, so a reader never sees
/// half a record from a live run; a crash can at worst leave a torn last line, which [`read`]
/// reports by line number.
pub fn append(path: &Path, record: &MetricRecord) -> Result<()> {
    let mut line = serde_json::to_vec(record).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    line.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(&line).map_err(|e| Error::io(path, e))
}

/// Read every record of the log at `path`, in file order; blank lines are skipped.
pub fn read(path: &Path) -> std::result::Result<Vec<MetricRecord>, RunLogError> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RunLogError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(step: u64, loss: f64) -> MetricRecord {
        MetricRecord {
            step,
            epoch: step as f64 / 100.0,
            phase: Phase::Train,
            loss,
            lr: Some(1e-4),
            images_per_s: Some(812.5),
            data_wait: Some(0.02),
            auc: None,
        }
    }

    #[test]
    fn appended_records_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join(FILE_NAME);
        let valid = MetricRecord {
            step: 100,
            epoch: 1.0,
            phase: Phase::Valid,
            loss: 0.4,
            lr: None,
            images_per_s: None,
            data_wait: None,
            auc: Some(BTreeMap::from([
                ("Edema".to_string(), Some(0.9)),
                ("Fracture".to_string(), None),
            ])),
        };
        append(&path, &train(1, 0.69)).unwrap();
        append(&path, &valid).unwrap();
        assert_eq!(read(&path).unwrap(), vec![train(1, 0.69), valid]);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().nth(1).unwrap().contains("\"Fracture\":null"),
            "{text}"
        );
    }

    #[test]
    fn diverged_loss_is_null_on_disk_and_nan_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        append(&path, &train(7, f64::NAN)).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("\"loss\":null"));
        assert!(read(&path).unwrap()[0].loss.is_nan());
    }

    #[test]
    fn bad_line_names_file_and_line_and_unknown_fields_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(
            &path,
            "{\"step\":1,\"epoch\":0.1,\"phase\":\"train\",\"loss\":0.7,\"grad_norm\":3}\n\n{\"step\":2,\"epoch\":0.2,\"phase\":\"test\",\"loss\":0.6}\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}:3:", path.display())) && err.contains("test"),
            "{err}"
        );
    }
}
