//! What `cxr-eval score` and `compare` find, as plain data: numbers, names and counts, nothing
//! formatted. `metrics.json` and `comparison.json` are these types serialized, and `cxr-eval
//! report` reads them back into the same types, so the files have one definition. Every field
//! is required when read: `None` is written as `null`, so a missing key means the file was not
//! written by this cxr-eval (see `de.rs`).

use super::de;
use crate::bootstrap::{Bootstrap, Interval};
use crate::delong::DeLong;
use crate::labels::Aggregate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the numbers came from, shared by score and compare reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub manifest: String,
    /// The label policy, e.g. `u-ignore (blank: ignore)`.
    pub policy: String,
    pub aggregate: Aggregate,
    pub n_images: usize,
    /// Images scored per manifest split (`{"test": 48}`): held-out, official, or (only when
    /// allowed) training images.
    pub splits: BTreeMap<String, usize>,
    /// Units scored: images, or studies when aggregated.
    pub n_units: usize,
    pub n_patients: usize,
    #[serde(deserialize_with = "de::nullable")]
    pub bootstrap: Option<Bootstrap>,
    /// Tasks with fewer positives or negatives than this are left out of means.
    pub min_positives: usize,
    /// The observations scored: those the predictions and the images' datasets share.
    pub observations: Observations,
}

/// Which observations were scored, and which were not because the scored images' dataset never
/// labels them (a CheXpert model on NIH: 8 shared, 6 unlabelled). Means are over the shared
/// ones only, so this names what a mean AUC is a mean of, across datasets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observations {
    /// The datasets of the scored images, as the manifest spells them (`["nih"]`).
    pub datasets: Vec<String>,
    /// The predicted observations the datasets label: the ones scored, in the predictions'
    /// order.
    pub shared: Vec<String>,
    /// The predicted observations none of the datasets labels: not scored, since their blank
    /// labels mean "never looked for", not "absent".
    pub unlabelled: Vec<String>,
}

/// One task's AUC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    /// The predictions column it was read from.
    pub column: String,
    /// Units with a known label, positives and negatives among them.
    pub n: usize,
    pub n_pos: usize,
    pub n_neg: usize,
    /// `None` (JSON `null`) when the task has one class only.
    #[serde(deserialize_with = "de::nullable")]
    pub auc: Option<f64>,
    #[serde(deserialize_with = "de::nullable")]
    pub ci: Option<Interval>,
    /// Fewer than `min_positives` positives or negatives: left out of means.
    pub too_few: bool,
}

/// The mean AUC over named tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeanResult {
    pub name: String,
    pub tasks: Vec<String>,
    pub auc: f64,
    #[serde(deserialize_with = "de::nullable")]
    pub ci: Option<Interval>,
}

/// `cxr-eval score`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreReport {
    pub predictions: String,
    #[serde(flatten)]
    pub setup: Setup,
    pub tasks: Vec<TaskResult>,
    /// Tasks whose AUC is undefined (one class only).
    pub undefined: Vec<String>,
    /// Tasks with an AUC but too few positives or negatives to enter the means.
    pub too_few: Vec<String>,
    pub means: Vec<MeanResult>,
    /// Predictions columns recognised but not scored (`age`).
    pub skipped_columns: Vec<String>,
}

/// One task compared between models A and B.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskComparison {
    pub task: String,
    pub n: usize,
    pub n_pos: usize,
    pub n_neg: usize,
    #[serde(deserialize_with = "de::nullable")]
    pub auc_a: Option<f64>,
    #[serde(deserialize_with = "de::nullable")]
    pub auc_b: Option<f64>,
    /// `auc_a - auc_b`.
    #[serde(deserialize_with = "de::nullable")]
    pub difference: Option<f64>,
    /// DeLong's test clustered by patient (Obuchowski 1997,
    /// [`crate::delong::clustered_paired_test`]: the variances and covariance are the clustered
    /// ones); `None` unless two patients have a positive unit and two a negative one.
    #[serde(deserialize_with = "de::nullable")]
    pub delong: Option<DeLong>,
    /// DeLong p-value adjusted for testing every observation (Holm's step-down); `None` for
    /// sex and view.
    #[serde(deserialize_with = "de::nullable")]
    pub p_holm: Option<f64>,
    /// Paired-bootstrap interval of the difference.
    #[serde(deserialize_with = "de::nullable")]
    pub difference_ci: Option<Interval>,
    /// Fewer than `min_positives` positives or negatives: left out of means.
    pub too_few: bool,
}

/// The mean AUCs of A and B over named tasks, and their difference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeanComparison {
    pub name: String,
    pub tasks: Vec<String>,
    pub auc_a: f64,
    pub auc_b: f64,
    pub difference: f64,
    /// Paired patient-bootstrap interval of the difference, and its two-sided p-value.
    #[serde(deserialize_with = "de::nullable")]
    pub difference_ci: Option<Interval>,
    #[serde(deserialize_with = "de::nullable")]
    pub p_value: Option<f64>,
}

/// `cxr-eval compare`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub a: String,
    pub b: String,
    #[serde(flatten)]
    pub setup: Setup,
    pub tasks: Vec<TaskComparison>,
    pub means: Vec<MeanComparison>,
    /// Tasks predicted by only one of the two files (not compared).
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
}
