//! The numbers a study report shows, taken from the typed score and comparison reports (and,
//! for age, computed from the predictions): each run's headline endpoints and per-task AUCs,
//! each seed's paired differences, and whether those differences agree over the seeds. Plain
//! data only; how it reads is `render.rs`'s business.

use crate::bootstrap::{self, Bootstrap, Interval};
use crate::report::{CompareReport, ScoreReport};
use cxr_core::predictions::Predictions;
use cxr_core::Manifest;
use std::collections::HashMap;

/// What an [`Endpoint`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// A ROC AUC (a task's, or a mean over tasks); higher is better.
    #[default]
    Auc,
    /// Mean absolute error of predicted age in years over `images`; lower is better.
    AgeMae { images: usize },
}

/// One number of a run: an AUC (or MAE) with its interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoint {
    /// The task or mean (`age` for age's MAE).
    pub name: String,
    pub metric: Metric,
    pub value: Option<f64>,
    pub ci: Option<(f64, f64)>,
    /// A single task's test positives and negatives (`None` for means and MAEs).
    pub counts: Option<(usize, usize)>,
    /// Left out of means: too few positives or negatives (see `cxr-eval score`).
    pub too_few: bool,
    /// What a model that learned nothing gets: 0.5 for an AUC; for age, the MAE of
    /// predicting the training split's mean age.
    pub trivial: Option<f64>,
}

impl Endpoint {
    /// Whether `other` is the same endpoint (of another run): same name, same measure.
    pub fn same(&self, other: &Endpoint) -> bool {
        self.name == other.name && self.metric == other.metric
    }
}

/// One paired comparison against the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub name: String,
    pub difference: Option<f64>,
    pub ci: Option<(f64, f64)>,
    pub p: Option<f64>,
}

/// A run's headline numbers and per-task AUCs, as [`endpoints`] returns them.
pub type RunNumbers = (Vec<Endpoint>, Vec<Endpoint>);

fn bounds(ci: Option<Interval>) -> Option<(f64, f64)> {
    ci.map(|c| (c.low, c.high))
}

/// The headline numbers of a `metrics.json`: its means, or its tasks when it has no mean (sex,
/// view); and every task's AUC.
pub fn endpoints(metrics: &ScoreReport) -> RunNumbers {
    let auc = |name: &str, value, ci, counts, too_few| Endpoint {
        name: name.to_string(),
        metric: Metric::Auc,
        value,
        ci: bounds(ci),
        counts,
        too_few,
        trivial: Some(0.5),
    };
    let means: Vec<Endpoint> = metrics
        .means
        .iter()
        .map(|m| auc(&m.name, Some(m.auc), m.ci, None, false))
        .collect();
    let tasks: Vec<Endpoint> = metrics
        .tasks
        .iter()
        .map(|t| auc(&t.task, t.auc, t.ci, Some((t.n_pos, t.n_neg)), t.too_few))
        .collect();
    if means.is_empty() {
        (tasks.clone(), tasks)
    } else {
        (means, tasks)
    }
}

/// The comparisons of a `comparison.json`, matching [`endpoints`]: mean differences with the
/// paired-bootstrap p, or per-task differences with DeLong's p when there is no mean.
pub fn differences(comparison: &CompareReport) -> Vec<Difference> {
    if !comparison.means.is_empty() {
        return comparison
            .means
            .iter()
            .map(|m| Difference {
                name: m.name.clone(),
                difference: Some(m.difference),
                ci: bounds(m.difference_ci),
                p: m.p_value,
            })
            .collect();
    }
    comparison
        .tasks
        .iter()
        .map(|t| Difference {
            name: t.task.clone(),
            difference: t.difference,
            ci: bounds(t.difference_ci),
            p: t.delong.map(|d| d.p_value),
        })
        .collect()
}

/// What a set of per-seed differences says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// No difference at all in any seed (the two configurations gave the same scores).
    Identical,
    /// Same sign in every seed and p < 0.05 in every seed.
    Holds,
    /// Same sign in every seed; significant in some or none.
    SameSign { significant: usize },
    /// The sign changes between seeds.
    Flips,
    /// Fewer than one defined difference.
    Unknown,
}

/// Whether the differences of the seeds agree (a zero difference counts as its own sign).
pub fn agreement(diffs: &[Difference]) -> Agreement {
    let defined: Vec<&Difference> = diffs.iter().filter(|d| d.difference.is_some()).collect();
    if defined.is_empty() {
        return Agreement::Unknown;
    }
    if defined.len() == diffs.len() && defined.iter().all(|d| d.difference == Some(0.0)) {
        return Agreement::Identical;
    }
    let sign = |d: &Difference| d.difference.map(|x| x.partial_cmp(&0.0));
    let first = sign(defined[0]);
    if defined.iter().any(|d| sign(d) != first) {
        return Agreement::Flips;
    }
    let significant = defined
        .iter()
        .filter(|d| d.p.is_some_and(|p| p < 0.05))
        .count();
    if significant == defined.len() && defined.len() == diffs.len() {
        Agreement::Holds
    } else {
        Agreement::SameSign { significant }
    }
}

/// Mean absolute error in years of an age predictions file against the manifest's ages, with
/// a 95% patient-bootstrap interval (`cxr-eval score`'s default replicates and seed), and the
/// MAE on the same images of always predicting the training split's mean age.
pub fn age_mae(predictions: &Predictions, manifest: &Manifest) -> Option<Endpoint> {
    let ages = predictions.task("age")?;
    let by_id: HashMap<&str, (Option<i32>, &str)> = manifest
        .rows
        .iter()
        .map(|r| (r.image_id.as_str(), (r.age, r.patient_id.as_str())))
        .collect();
    let (errors, patients): (Vec<f64>, Vec<&str>) = predictions
        .image_ids
        .iter()
        .zip(ages)
        .filter_map(|(id, &pred)| {
            let (age, patient) = *by_id.get(id.as_str())?;
            Some(((pred - age? as f64).abs(), patient))
        })
        .unzip();
    if errors.is_empty() {
        return None;
    }
    let trivial = training_mean_age(manifest).map(|mean| {
        let ages = predictions
            .image_ids
            .iter()
            .filter_map(|id| by_id.get(id.as_str())?.0);
        ages.map(|age| (age as f64 - mean).abs()).sum::<f64>() / errors.len() as f64
    });
    let (unit_patient, patient_ids) = bootstrap::index_patients(patients);
    let cfg = Bootstrap::DEFAULT;
    let replicates = bootstrap::replicate_means(&errors, &unit_patient, patient_ids.len(), &cfg);
    let ci = bootstrap::interval(replicates.into_iter().map(Some), cfg.level);
    Some(Endpoint {
        name: "age".into(),
        metric: Metric::AgeMae {
            images: errors.len(),
        },
        value: Some(errors.iter().sum::<f64>() / errors.len() as f64),
        ci: bounds(ci),
        trivial,
        ..Endpoint::default()
    })
}

/// The mean age of the manifest's training split (images with a known age).
fn training_mean_age(manifest: &Manifest) -> Option<f64> {
    let ages: Vec<f64> = manifest
        .rows
        .iter()
        .filter(|r| r.split == cxr_core::Split::Train)
        .filter_map(|r| r.age.map(f64::from))
        .collect();
    (!ages.is_empty()).then(|| ages.iter().sum::<f64>() / ages.len() as f64)
}
