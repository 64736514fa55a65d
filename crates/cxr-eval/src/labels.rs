//! Joining predictions to the manifest's labels: which column is which task, which images count
//! as positive or negative, and what one scored unit (an image or a study) is.
//!
//! Ground truth comes from the manifest, never from the predictions file, so every model of a
//! study is scored against the same labels under the same [`LabelPolicy`]. The default policy
//! for scoring, [`LabelPolicy::evaluation`], counts only explicit positives and negatives:
//! uncertain and not-mentioned labels leave the image out of that task.
//!
//! Non-pathology tasks, scored when the predictions have a column for them:
//! - `sex`: male = 1, female = 0, unknown left out.
//! - `view` or `projection`: PA = 1, AP = 0 (NIH's "View Position" task); lateral (LL, RL) and
//!   unknown projections are left out. Both column names mean this same task.
//! - `age` is a regression output: it is recognised and skipped, as AUC does not apply.
//!
//! Observations a row's dataset never labels are left out of that row's task, whatever the
//! policy says of blank labels ([`Dataset::labelled_observations`]): NIH has no Lung Opacity
//! column, so its "not mentioned" there is no negative. A predicted observation that none of the
//! scored images' datasets labels is not scored at all: [`EvalSet::unlabelled`] names it, and
//! the tasks scored are what the predictions and the datasets share (a CheXpert model on NIH:
//! the 8 observations both label).
//!
//! Study-level scoring (`Aggregate::StudyMax`, `StudyMean`) follows CheXpert, whose truth is per
//! study: a study's score is the max or mean of its images' scores, and its label is the largest
//! known target among its images (positive over negative; images whose target is unknown under
//! the policy are ignored, and a study with no known target is left out). CheXpert's rows of one
//! study carry the same labels, so this only decides what happens with inconsistent data.

use anyhow::{bail, Result};
use cxr_core::predictions::Predictions;
use cxr_core::{
    sex_target, view_target, Dataset, LabelPolicy, Manifest, ManifestRow, Observation, Split,
};
use std::collections::HashMap;
use std::path::Path;

/// What a predictions column predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Pathology(Observation),
    /// P(male).
    Sex,
    /// P(PA) among PA and AP images.
    Projection,
}

impl TaskKind {
    /// The task's display name: the observation's name, `sex`, or `view (PA vs AP)`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Pathology(o) => o.name(),
            TaskKind::Sex => "sex (male vs female)",
            TaskKind::Projection => "view (PA vs AP)",
        }
    }

    /// Whether images of `dataset` can have a label for this task: a pathology only when the
    /// dataset labels that observation; sex and view always (an unknown one is left out by
    /// [`TaskKind::target`]).
    pub fn labelled_by(self, dataset: Dataset) -> bool {
        match self {
            TaskKind::Pathology(o) => dataset.labels(o),
            TaskKind::Sex | TaskKind::Projection => true,
        }
    }

    /// The target of one manifest row under `policy`: `Some(true)` positive, `Some(false)`
    /// negative, `None` left out, as is every row whose dataset does not label the task.
    pub fn target(self, row: &ManifestRow, policy: &LabelPolicy) -> Option<bool> {
        match self {
            TaskKind::Pathology(_) if !self.labelled_by(row.dataset) => None,
            TaskKind::Pathology(o) => {
                let t = policy.target(o, row.label(o));
                t.known.then_some(t.value > 0.5)
            }
            TaskKind::Sex => sex_target(row.sex),
            TaskKind::Projection => view_target(row.projection),
        }
    }
}

/// A predictions column resolved to its task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The column's name in the predictions file.
    pub column: String,
    pub kind: TaskKind,
}

/// Columns recognised but not scored.
const SKIPPED: [&str; 1] = ["age"];

/// Resolve the task columns of a predictions file: pathologies by [`Observation::parse`] (which
/// takes `prob_` prefixes, `_` for spaces and NIH's names), then `sex`, `view`, `projection`.
/// Returns the tasks and the columns skipped (`age`); an unknown column is an error naming the
/// file, since a misspelt pathology silently left out would change the mean AUC.
pub fn resolve_tasks(predictions: &Predictions, path: &Path) -> Result<(Vec<Task>, Vec<String>)> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut skipped = Vec::new();
    for column in &predictions.tasks {
        let bare = column.trim();
        let bare = bare
            .strip_prefix("prob_")
            .unwrap_or(bare)
            .to_ascii_lowercase();
        let kind = match bare.as_str() {
            "sex" => TaskKind::Sex,
            "view" | "projection" => TaskKind::Projection,
            s if SKIPPED.contains(&s) => {
                skipped.push(column.clone());
                continue;
            }
            _ => match Observation::parse(column) {
                Ok(o) => TaskKind::Pathology(o),
                Err(_) => bail!(
                    "{}: column `{column}` is not a known task; task columns are named by an \
                     observation (e.g. `Pleural Effusion`, `prob_Pleural_Effusion`, NIH's \
                     `Effusion`) or are `sex`, `view`, `projection` or `age`. Rename or drop it",
                    path.display()
                ),
            },
        };
        if let Some(other) = tasks.iter().find(|t| t.kind == kind) {
            bail!(
                "{}: columns `{}` and `{column}` both predict {}; keep one",
                path.display(),
                other.column,
                kind.name()
            );
        }
        tasks.push(Task {
            column: column.clone(),
            kind,
        });
    }
    Ok((tasks, skipped))
}

/// What one scored unit is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// Every image on its own.
    Image,
    /// A study's score is the max of its images' scores.
    StudyMax,
    /// A study's score is the mean of its images' scores.
    StudyMean,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Image => "image",
            Aggregate::StudyMax => "study-max",
            Aggregate::StudyMean => "study-mean",
        }
    }
}

/// One task's labels and scores per unit.
#[derive(Debug, Clone)]
pub struct TaskData {
    pub task: Task,
    /// Per unit: `Some(true)` positive, `Some(false)` negative, `None` left out.
    pub labels: Vec<Option<bool>>,
    pub scores: Vec<f64>,
}

impl TaskData {
    pub fn n_pos(&self) -> usize {
        self.labels.iter().filter(|l| **l == Some(true)).count()
    }
    pub fn n_neg(&self) -> usize {
        self.labels.iter().filter(|l| **l == Some(false)).count()
    }
}

/// Predictions joined to labels: units (images or studies) in manifest order, each with its
/// patient, and every task's labels and scores per unit.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub aggregate: Aggregate,
    /// Image ids, or study ids when aggregated.
    pub unit_ids: Vec<String>,
    /// Index into `patient_ids` of each unit's patient: the bootstrap resamples these.
    pub unit_patient: Vec<u32>,
    pub patient_ids: Vec<String>,
    /// Images scored (before aggregation).
    pub n_images: usize,
    /// The manifest splits of the images scored, in [`Split::ALL`] order, each with its count.
    pub splits: Vec<SplitCount>,
    /// The datasets of the images scored, in [`Dataset::ALL`] order.
    pub datasets: Vec<Dataset>,
    /// The tasks scored: those of the predictions that the datasets label.
    pub tasks: Vec<TaskData>,
    /// Predicted tasks that none of the datasets labels, in the predictions' order: not scored.
    pub unlabelled: Vec<Task>,
}

/// How many scored images come from one manifest split, and the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCount {
    pub split: Split,
    pub images: usize,
    /// Row in the predictions file and image id of the first image of this split.
    pub first: (usize, String),
}

/// Which manifest splits may be scored: `train` and more than one split at once need leave.
#[derive(Debug, Clone, Copy, Default)]
pub struct SplitRule {
    /// Score images of the `train` split (models are fitted to them).
    pub allow_train: bool,
    /// Score images of several splits together (e.g. `test` with `official`).
    pub allow_mixed: bool,
}

impl SplitRule {
    /// Refuse, naming `predictions_path`, images of the train split and mixtures of splits that
    /// the rule does not allow.
    pub fn check(self, splits: &[SplitCount], predictions_path: &Path) -> Result<()> {
        let total: usize = splits.iter().map(|s| s.images).sum();
        if let (false, Some(train)) = (
            self.allow_train,
            splits.iter().find(|s| s.split == Split::Train),
        ) {
            bail!(
                "{}: {} of {total} predicted images are in the manifest's `train` split (the \
                 first is `{}`, row {}); AUCs on the images a model was fitted to say nothing \
                 about how it does on new patients. Predict the `test` or `official` split \
                 (cxr-train predict --split test), or pass --allow-train-split if the model never \
                 trained on this manifest's train split (e.g. it was trained on another dataset)",
                predictions_path.display(),
                train.images,
                train.first.1,
                train.first.0
            );
        }
        if !self.allow_mixed && splits.len() > 1 {
            bail!(
                "{}: the predicted images come from {} manifest splits ({}); one AUC over \
                 several splits describes none of them (`official` has its own labels, `valid` \
                 chose the checkpoint). Score each split on its own (cxr-train predict --split), \
                 or pass --allow-mixed-splits to pool them",
                predictions_path.display(),
                splits.len(),
                describe_splits(splits)
            );
        }
        Ok(())
    }
}

/// Each split with its image count and first image, for messages.
pub fn describe_splits(splits: &[SplitCount]) -> String {
    splits
        .iter()
        .map(|s| {
            format!(
                "{}: {} images, the first `{}` at row {}",
                s.split, s.images, s.first.1, s.first.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Join `predictions` (read from `predictions_path`) to `manifest` and build the units.
pub fn join(
    predictions: &Predictions,
    predictions_path: &Path,
    tasks: &[Task],
    manifest: &Manifest,
    manifest_path: &Path,
    policy: &LabelPolicy,
    aggregate: Aggregate,
) -> Result<EvalSet> {
    let positions = manifest.positions();
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(predictions.len()); // (manifest row, prediction row)
    let mut missing = 0usize;
    let mut first_missing = None;
    for (i, id) in predictions.image_ids.iter().enumerate() {
        match positions.get(id.as_str()) {
            Some(&pos) => rows.push((pos, i)),
            None => {
                missing += 1;
                first_missing.get_or_insert((i, id));
            }
        }
    }
    if let Some((i, id)) = first_missing {
        bail!(
            "{}: image `{id}` (row {i}) is not in the manifest {}; {missing} of {} predicted \
             images are missing. Score predictions against the manifest the run was trained \
             and predicted with",
            predictions_path.display(),
            manifest_path.display(),
            predictions.len()
        );
    }
    if rows.is_empty() {
        bail!("{}: no predictions to score", predictions_path.display());
    }
    let mut splits: Vec<SplitCount> = Vec::new();
    for &(pos, i) in &rows {
        let split = manifest.rows[pos].split;
        match splits.iter_mut().find(|s| s.split == split) {
            Some(s) => s.images += 1,
            None => splits.push(SplitCount {
                split,
                images: 1,
                first: (i, predictions.image_ids[i].clone()),
            }),
        }
    }
    splits.sort_unstable_by_key(|s| s.split);
    let mut datasets: Vec<Dataset> = rows
        .iter()
        .map(|&(pos, _)| manifest.rows[pos].dataset)
        .collect();
    datasets.sort_unstable();
    datasets.dedup();
    let (tasks, unlabelled): (Vec<&Task>, Vec<&Task>) = tasks
        .iter()
        .partition(|t| datasets.iter().any(|&d| t.kind.labelled_by(d)));
    if tasks.is_empty() {
        let labelled: Vec<&str> = datasets
            .iter()
            .flat_map(|d| d.labelled_observations())
            .map(|o| o.name())
            .collect();
        bail!(
            "{}: none of its task columns ({}) is an observation that {} labels ({}); there is \
             nothing to score. Score these predictions against a manifest of a dataset that \
             labels what the model predicts",
            predictions_path.display(),
            unlabelled
                .iter()
                .map(|t| t.column.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            dataset_names(&datasets),
            if labelled.is_empty() {
                "it labels none".to_string()
            } else {
                format!("it labels {}", labelled.join(", "))
            }
        );
    }
    // Manifest order, so results never depend on the order of the predictions file's rows.
    rows.sort_unstable();
    let columns: Vec<&[f64]> = tasks
        .iter()
        .map(|t| {
            predictions
                .task(&t.column)
                .expect("tasks resolved from these predictions")
        })
        .collect();

    // Units: each image, or each study (in order of first appearance).
    let mut unit_of_row = Vec::with_capacity(rows.len());
    let mut unit_ids: Vec<String> = Vec::new();
    let mut unit_patient_id: Vec<&str> = Vec::new();
    let mut study_index: HashMap<&str, usize> = HashMap::new();
    for &(pos, _) in &rows {
        let row = &manifest.rows[pos];
        let unit = match aggregate {
            Aggregate::Image => {
                unit_ids.push(row.image_id.clone());
                unit_patient_id.push(&row.patient_id);
                unit_ids.len() - 1
            }
            Aggregate::StudyMax | Aggregate::StudyMean => {
                let next = unit_ids.len();
                let u = *study_index.entry(row.study_id.as_str()).or_insert(next);
                if u == next {
                    unit_ids.push(row.study_id.clone());
                    unit_patient_id.push(&row.patient_id);
                } else if unit_patient_id[u] != row.patient_id {
                    bail!(
                        "{}: study `{}` has images of patients `{}` and `{}`; fix the manifest \
                         (re-create it with cxr-index) or score with --aggregate image",
                        manifest_path.display(),
                        row.study_id,
                        unit_patient_id[u],
                        row.patient_id
                    );
                }
                u
            }
        };
        unit_of_row.push(unit);
    }
    let n_units = unit_ids.len();
    let (unit_patient, patient_ids) = crate::bootstrap::index_patients(unit_patient_id);
    let patient_ids = patient_ids.into_iter().map(str::to_string).collect();

    let mut images_per_unit = vec![0u32; n_units];
    for &u in &unit_of_row {
        images_per_unit[u] += 1;
    }
    let task_data = tasks
        .iter()
        .zip(&columns)
        .map(|(task, column)| {
            let mut labels: Vec<Option<bool>> = vec![None; n_units];
            let mut scores = vec![
                match aggregate {
                    Aggregate::StudyMax => f64::NEG_INFINITY,
                    _ => 0.0,
                };
                n_units
            ];
            for (&(pos, i), &u) in rows.iter().zip(&unit_of_row) {
                if let Some(t) = task.kind.target(&manifest.rows[pos], policy) {
                    labels[u] = Some(labels[u].unwrap_or(false) || t);
                }
                match aggregate {
                    Aggregate::Image => scores[u] = column[i],
                    Aggregate::StudyMax => scores[u] = scores[u].max(column[i]),
                    Aggregate::StudyMean => scores[u] += column[i],
                }
            }
            if aggregate == Aggregate::StudyMean {
                for (s, &k) in scores.iter_mut().zip(&images_per_unit) {
                    *s /= f64::from(k);
                }
            }
            TaskData {
                task: (*task).clone(),
                labels,
                scores,
            }
        })
        .collect();
    Ok(EvalSet {
        aggregate,
        unit_ids,
        unit_patient,
        patient_ids,
        n_images: rows.len(),
        splits,
        datasets,
        tasks: task_data,
        unlabelled: unlabelled.into_iter().cloned().collect(),
    })
}

/// `nih`, `chexpert and nih`: the datasets as the manifest spells them, for messages.
fn dataset_names(datasets: &[Dataset]) -> String {
    datasets
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cxr_core::{Dataset, LabelState, Projection, Sex, Split, OBSERVATIONS};

    /// A manifest row with the given study, patient and Edema state.
    pub(crate) fn row(image: &str, study: &str, patient: &str, edema: LabelState) -> ManifestRow {
        let mut labels = [LabelState::NotMentioned; OBSERVATIONS.len()];
        labels[Observation::parse("Edema").unwrap().index()] = edema;
        ManifestRow {
            projection: Projection::Pa,
            sex: Sex::Male,
            age: Some(50),
            split: Split::Valid,
            labels,
            ..ManifestRow::unlabelled(Dataset::Chexpert, image, image, patient, study)
        }
    }

    fn predictions(ids: &[&str], column: &str, scores: &[f64]) -> Predictions {
        Predictions::new(
            ids.iter().map(|s| s.to_string()).collect(),
            vec![column.into()],
            vec![scores.to_vec()],
        )
        .unwrap()
    }

    fn eval(
        p: &Predictions,
        m: &Manifest,
        policy: &LabelPolicy,
        aggregate: Aggregate,
    ) -> Result<EvalSet> {
        let (tasks, _) = resolve_tasks(p, Path::new("p.csv"))?;
        join(
            p,
            Path::new("p.csv"),
            &tasks,
            m,
            Path::new("m.parquet"),
            policy,
            aggregate,
        )
    }

    #[test]
    fn columns_resolve_to_tasks() {
        let p = Predictions::new(
            vec!["a".into()],
            ["prob_Pleural_Effusion", "Edema", "sex", "view", "age"]
                .map(String::from)
                .to_vec(),
            vec![vec![0.0]; 5],
        )
        .unwrap();
        let (tasks, skipped) = resolve_tasks(&p, Path::new("p.csv")).unwrap();
        let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.name()).collect();
        assert_eq!(
            kinds,
            [
                "Pleural Effusion",
                "Edema",
                "sex (male vs female)",
                "view (PA vs AP)"
            ]
        );
        assert_eq!(skipped, ["age"]);
    }

    #[test]
    fn unknown_and_duplicate_columns_are_errors_naming_the_file() {
        let p = predictions(&["a"], "Pneumonitis", &[0.1]);
        let err = resolve_tasks(&p, Path::new("run/preds.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run/preds.csv") && err.contains("`Pneumonitis`"),
            "{err}"
        );
        let p = Predictions::new(
            vec!["a".into()],
            vec!["Effusion".into(), "prob_Pleural_Effusion".into()],
            vec![vec![0.0]; 2],
        )
        .unwrap();
        let err = resolve_tasks(&p, Path::new("p.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`Effusion`") && err.contains("both predict Pleural Effusion"),
            "{err}"
        );
    }

    #[test]
    fn missing_image_is_an_error_naming_file_and_first_id() {
        let m = Manifest {
            rows: vec![row("a", "s1", "p1", LabelState::Positive)],
        };
        let p = predictions(&["a", "zz", "yy"], "Edema", &[0.1, 0.2, 0.3]);
        let err = eval(&p, &m, &LabelPolicy::evaluation(), Aggregate::Image)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.csv") && err.contains("`zz` (row 1)") && err.contains("2 of 3"),
            "{err}"
        );
    }

    #[test]
    fn policy_decides_which_images_count() {
        use LabelState::*;
        let m = Manifest {
            rows: vec![
                row("a", "s1", "p1", Positive),
                row("b", "s2", "p1", Negative),
                row("c", "s3", "p2", Uncertain),
                row("d", "s4", "p3", NotMentioned),
            ],
        };
        let p = predictions(&["d", "c", "b", "a"], "Edema", &[0.4, 0.3, 0.2, 0.1]);
        let set = eval(&p, &m, &LabelPolicy::evaluation(), Aggregate::Image).unwrap();
        assert_eq!(set.unit_ids, ["a", "b", "c", "d"], "manifest order");
        assert_eq!(set.tasks[0].labels, [Some(true), Some(false), None, None]);
        assert_eq!(set.tasks[0].scores, [0.1, 0.2, 0.3, 0.4]);
        assert_eq!(set.unit_patient, [0, 0, 1, 2]);
        let ones = LabelPolicy::parse("u-ones", cxr_core::BlankRule::Negative).unwrap();
        let set = eval(&p, &m, &ones, Aggregate::Image).unwrap();
        assert_eq!(
            set.tasks[0].labels,
            [Some(true), Some(false), Some(true), Some(false)]
        );
    }

    #[test]
    fn studies_take_max_or_mean_score_and_max_label() {
        use LabelState::*;
        let m = Manifest {
            rows: vec![
                row("s1/frontal", "s1", "p1", Negative),
                row("s1/lateral", "s1", "p1", Positive),
                row("s2/frontal", "s2", "p1", Uncertain),
                row("s2/lateral", "s2", "p1", Negative),
                row("s3/frontal", "s3", "p2", Uncertain),
            ],
        };
        let ids = [
            "s1/frontal",
            "s1/lateral",
            "s2/frontal",
            "s2/lateral",
            "s3/frontal",
        ];
        let p = predictions(&ids, "Edema", &[0.2, 0.6, 0.9, 0.1, 0.5]);
        let policy = LabelPolicy::evaluation();
        let max = eval(&p, &m, &policy, Aggregate::StudyMax).unwrap();
        assert_eq!(max.unit_ids, ["s1", "s2", "s3"]);
        assert_eq!(max.n_images, 5);
        assert_eq!(max.tasks[0].scores, [0.6, 0.9, 0.5]);
        // Positive beats negative; an uncertain image is ignored; no known image: left out.
        assert_eq!(max.tasks[0].labels, [Some(true), Some(false), None]);
        assert_eq!(max.unit_patient, [0, 0, 1]);
        let mean = eval(&p, &m, &policy, Aggregate::StudyMean).unwrap();
        assert_eq!(mean.tasks[0].scores, [0.4, 0.5, 0.5]);
    }

    /// An NIH row (one image per study) with `findings` positive and NIH's other labels
    /// negative, as cxr-index writes them.
    fn nih_row(image: &str, findings: &[&str]) -> ManifestRow {
        let mut r = ManifestRow {
            split: Split::Test,
            ..ManifestRow::unlabelled(Dataset::Nih, image, image, image, image)
        };
        for &o in Dataset::Nih.labelled_observations() {
            r.labels[o.index()] = LabelState::Negative;
        }
        for f in findings {
            r.labels[Observation::parse(f).unwrap().index()] = LabelState::Positive;
        }
        r
    }

    fn columns(ids: &[&str], columns: &[&str]) -> Predictions {
        let scores = (0..columns.len())
            .map(|c| (0..ids.len()).map(|i| (i * 7 + c) as f64 % 5.0).collect())
            .collect();
        Predictions::new(
            ids.iter().map(|s| s.to_string()).collect(),
            columns.iter().map(|s| s.to_string()).collect(),
            scores,
        )
        .unwrap()
    }

    /// A CheXpert model's Lung Opacity on NIH images: NIH never labels it, so it is not scored
    /// (and not as all-negative, which blank = negative would make of it); the shared tasks are.
    #[test]
    fn observations_the_images_dataset_never_labels_are_not_scored() {
        let m = Manifest {
            rows: vec![
                nih_row("a.png", &["Effusion"]),
                nih_row("b.png", &["No Finding"]),
                nih_row("c.png", &["Mass"]),
            ],
        };
        let ids = ["a.png", "b.png", "c.png"];
        let p = columns(
            &ids,
            &["Lung Opacity", "Pleural Effusion", "sex", "Lung Lesion"],
        );
        let set = eval(&p, &m, &LabelPolicy::evaluation(), Aggregate::Image).unwrap();
        assert_eq!(set.datasets, [Dataset::Nih]);
        let scored: Vec<&str> = set.tasks.iter().map(|t| t.task.kind.name()).collect();
        assert_eq!(scored, ["Pleural Effusion", "sex (male vs female)"]);
        let unlabelled: Vec<&str> = set.unlabelled.iter().map(|t| t.column.as_str()).collect();
        assert_eq!(unlabelled, ["Lung Opacity", "Lung Lesion"]);
        assert_eq!(set.tasks[0].labels, [Some(true), Some(false), Some(false)]);

        let p = columns(&ids, &["Lung Opacity", "Support Devices"]);
        let err = eval(&p, &m, &LabelPolicy::evaluation(), Aggregate::Image)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.csv")
                && err.contains("(Lung Opacity, Support Devices)")
                && err.contains("that nih labels")
                && err.contains("it labels No Finding, Atelectasis"),
            "{err}"
        );
    }

    /// In a manifest of both datasets, a CheXpert-only observation is scored on the CheXpert
    /// images alone: NIH's blank there is left out even when blank counts as negative.
    #[test]
    fn a_row_counts_only_for_what_its_dataset_labels() {
        let blank_negative = LabelPolicy::parse("u-ignore", cxr_core::BlankRule::Negative).unwrap();
        let chexpert = row("x.jpg", "s1", "p1", LabelState::NotMentioned);
        let nih = nih_row("a.png", &["Edema"]);
        let opacity = TaskKind::Pathology(Observation::parse("Lung Opacity").unwrap());
        let edema = TaskKind::Pathology(Observation::parse("Edema").unwrap());
        assert_eq!(opacity.target(&chexpert, &blank_negative), Some(false));
        assert_eq!(opacity.target(&nih, &blank_negative), None);
        assert_eq!(edema.target(&nih, &blank_negative), Some(true));
        let m = Manifest {
            rows: vec![nih.clone(), chexpert],
        };
        let p = columns(&["a.png", "x.jpg"], &["Lung Opacity", "Mass"]);
        let set = eval(&p, &m, &blank_negative, Aggregate::Image).unwrap();
        assert_eq!(set.datasets, [Dataset::Chexpert, Dataset::Nih]);
        assert!(set.unlabelled.is_empty());
        assert_eq!(set.tasks[0].labels, [None, Some(false)]);
        assert_eq!(set.tasks[1].labels, [Some(false), None]);
    }

    #[test]
    fn sex_and_projection_targets() {
        let mut r = row("a", "s", "p", LabelState::Positive);
        let policy = LabelPolicy::evaluation();
        assert_eq!(TaskKind::Sex.target(&r, &policy), Some(true));
        assert_eq!(TaskKind::Projection.target(&r, &policy), Some(true));
        r.sex = Sex::Unknown;
        r.projection = Projection::Ll;
        assert_eq!(TaskKind::Sex.target(&r, &policy), None);
        assert_eq!(TaskKind::Projection.target(&r, &policy), None);
        r.sex = Sex::Female;
        r.projection = Projection::Ap;
        assert_eq!(TaskKind::Sex.target(&r, &policy), Some(false));
        assert_eq!(TaskKind::Projection.target(&r, &policy), Some(false));
    }
}
