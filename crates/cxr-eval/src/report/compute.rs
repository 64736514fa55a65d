//! From an [`EvalSet`] to the numbers of a score or a comparison: AUCs, patient-bootstrap
//! intervals, DeLong tests, Holm's adjustment and the means, with the rules for what enters a
//! mean. Nothing here formats: the types it fills are what `metrics.json` and `comparison.json`
//! hold and what the tables show.

use super::types::{
    CompareReport, MeanComparison, MeanResult, Observations, ScoreReport, Setup, TaskComparison,
    TaskResult,
};
use crate::auc::{roc_auc_known, Ranked};
use crate::bootstrap::{self, Bootstrap};
use crate::delong::{self, DeLong};
use crate::labels::{EvalSet, Task, TaskData, TaskKind};
use cxr_core::COMPETITION_5;
use std::path::Path;

/// Builds [`Setup`]'s description of `set`.
pub fn setup(
    set: &EvalSet,
    manifest: &Path,
    policy: &cxr_core::LabelPolicy,
    bootstrap: Option<Bootstrap>,
    min_positives: usize,
) -> Setup {
    Setup {
        manifest: manifest.display().to_string(),
        policy: policy.to_string(),
        aggregate: set.aggregate,
        n_images: set.n_images,
        splits: set
            .splits
            .iter()
            .map(|s| (s.split.to_string(), s.images))
            .collect(),
        n_units: set.unit_ids.len(),
        n_patients: set.patient_ids.len(),
        bootstrap,
        min_positives,
        observations: observations(set),
    }
}

/// The observations of `set`'s tasks and of its unscored tasks, with the images' datasets.
fn observations(set: &EvalSet) -> Observations {
    Observations {
        datasets: set.datasets.iter().map(|d| d.to_string()).collect(),
        shared: observation_names(set.tasks.iter().map(|t| &t.task)),
        unlabelled: observation_names(set.unlabelled.iter()),
    }
}

/// The names of the pathology tasks among `tasks` (sex and view are not observations).
fn observation_names<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<String> {
    tasks
        .filter(|t| matches!(t.kind, TaskKind::Pathology(_)))
        .map(|t| t.kind.name().to_string())
        .collect()
}

/// Whether each task enters the means: its AUC is defined and it has at least `min` positives
/// and `min` negatives.
fn scorable(tasks: &[TaskData], aucs: &[Option<f64>], min: usize) -> Vec<bool> {
    tasks
        .iter()
        .zip(aucs)
        .map(|(t, auc)| auc.is_some() && !too_few(t, min))
        .collect()
}

fn too_few(task: &TaskData, min: usize) -> bool {
    task.n_pos().min(task.n_neg()) < min
}

/// The task sets averaged: the CheXpert competition tasks and all observations, each over its
/// [`scorable`] members. Returns (name, indices into `tasks`); the names are the mean's
/// identity in the JSON files, not decoration.
fn mean_sets(tasks: &[TaskData], scorable: &[bool]) -> Vec<(String, Vec<usize>)> {
    let pathology = |i: usize| matches!(tasks[i].task.kind, TaskKind::Pathology(_));
    let competition: Vec<usize> = COMPETITION_5
        .iter()
        .filter_map(|o| {
            tasks
                .iter()
                .position(|t| t.task.kind == TaskKind::Pathology(*o))
        })
        .filter(|&i| scorable[i])
        .collect();
    let all: Vec<usize> = (0..tasks.len())
        .filter(|&i| pathology(i) && scorable[i])
        .collect();
    let mut sets = Vec::new();
    if !competition.is_empty() {
        let name = if competition.len() == COMPETITION_5.len() {
            "CheXpert competition 5".to_string()
        } else {
            format!("CheXpert competition ({} of 5)", competition.len())
        };
        sets.push((name, competition));
    }
    // When every defined observation is a competition task the second mean would repeat the first.
    let same_tasks = |c: &[usize]| {
        let mut c = c.to_vec();
        c.sort_unstable();
        c == all
    };
    if !all.is_empty() && sets.first().is_none_or(|(_, c)| !same_tasks(c)) {
        sets.push((format!("all {} scorable observations", all.len()), all));
    }
    sets
}

fn names(tasks: &[TaskData], idx: &[usize]) -> Vec<String> {
    idx.iter()
        .map(|&i| tasks[i].task.kind.name().to_string())
        .collect()
}

/// Every task's AUC over its known labels (`None`: one class only).
fn aucs(tasks: &[TaskData]) -> Vec<Option<f64>> {
    tasks
        .iter()
        .map(|t| roc_auc_known(&t.labels, &t.scores))
        .collect()
}

/// The mean of the AUCs at `idx` (all defined: [`mean_sets`] holds only scorable tasks).
fn mean_auc(aucs: &[Option<f64>], idx: &[usize]) -> f64 {
    idx.iter()
        .map(|&i| aucs[i].unwrap_or_default())
        .sum::<f64>()
        / idx.len() as f64
}

/// Per patient-bootstrap replicate, the AUC of each of `tasks` (whose units are `set`'s).
fn replicates<'a>(
    tasks: impl Iterator<Item = &'a TaskData>,
    set: &EvalSet,
    cfg: &Bootstrap,
) -> Vec<Vec<Option<f64>>> {
    let ranked: Vec<Ranked> = tasks.map(|t| Ranked::new(&t.labels, &t.scores)).collect();
    bootstrap::replicate_aucs(&ranked, &set.unit_patient, set.patient_ids.len(), cfg)
}

/// The intervals' coverage: the bootstrap's, 95% without one (no interval is computed then).
fn level(setup: &Setup) -> f64 {
    setup.bootstrap.map_or(0.95, |b| b.level)
}

/// Score one model: AUC per task, patient-bootstrap intervals, means.
pub fn score(
    set: &EvalSet,
    predictions: &Path,
    setup: Setup,
    skipped_columns: Vec<String>,
) -> ScoreReport {
    let aucs = aucs(&set.tasks);
    let min = setup.min_positives;
    let sets = mean_sets(&set.tasks, &scorable(&set.tasks, &aucs, min));
    let replicates = setup
        .bootstrap
        .map(|cfg| replicates(set.tasks.iter(), set, &cfg));
    let level = level(&setup);
    let ci = |value: &dyn Fn(&[Option<f64>]) -> Option<f64>| {
        let r = replicates.as_ref()?;
        bootstrap::interval(r.iter().map(|rep| value(rep)), level)
    };
    let tasks: Vec<TaskResult> = set
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| TaskResult {
            task: t.task.kind.name().to_string(),
            column: t.task.column.clone(),
            n: t.n_pos() + t.n_neg(),
            n_pos: t.n_pos(),
            n_neg: t.n_neg(),
            auc: aucs[i],
            ci: ci(&|rep| rep[i]),
            too_few: aucs[i].is_some() && too_few(t, min),
        })
        .collect();
    let means = sets
        .into_iter()
        .map(|(name, idx)| MeanResult {
            auc: mean_auc(&aucs, &idx),
            ci: ci(&|rep| bootstrap::mean_of(rep, &idx)),
            tasks: names(&set.tasks, &idx),
            name,
        })
        .collect();
    ScoreReport {
        predictions: predictions.display().to_string(),
        setup,
        undefined: (0..set.tasks.len())
            .filter(|&i| aucs[i].is_none())
            .map(|i| set.tasks[i].task.kind.name().to_string())
            .collect(),
        too_few: tasks
            .iter()
            .filter(|t| t.too_few)
            .map(|t| t.task.clone())
            .collect(),
        tasks,
        means,
        skipped_columns,
    }
}

/// Holm's step-down adjustment of the defined p-values.
fn holm(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_some()).collect();
    order.sort_by(|&a, &b| {
        p[a].unwrap_or_default()
            .total_cmp(&p[b].unwrap_or_default())
    });
    let k = order.len();
    let mut out = vec![None; p.len()];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((k - rank) as f64 * p[i].unwrap_or_default()).min(1.0));
        out[i] = Some(running);
    }
    out
}

/// DeLong's test of one task's two score columns, clustered by patient (Obuchowski 1997): a
/// patient's images or studies are not independent, and the unclustered variance would make p
/// too small.
fn clustered_delong(ta: &TaskData, tb: &TaskData, unit_patient: &[u32]) -> Option<DeLong> {
    let (mut labels, mut sa, mut sb, mut patients) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (((l, x), y), p) in ta
        .labels
        .iter()
        .zip(&ta.scores)
        .zip(&tb.scores)
        .zip(unit_patient)
    {
        if let Some(l) = l {
            labels.push(*l);
            sa.push(*x);
            sb.push(*y);
            patients.push(*p as usize);
        }
    }
    delong::clustered_paired_test(&labels, &sa, &sb, &patients)
}

/// Holm-adjusted DeLong p-values. The family adjusted over is the observations; sex and view
/// answer other questions and get `None`.
fn holm_over_observations(delongs: &[Option<DeLong>], tasks: &[TaskData]) -> Vec<Option<f64>> {
    let pathology_p: Vec<Option<f64>> = delongs
        .iter()
        .zip(tasks)
        .map(|(d, t)| {
            d.filter(|_| matches!(t.task.kind, TaskKind::Pathology(_)))
                .map(|d| d.p_value)
        })
        .collect();
    holm(&pathology_p)
}

/// What a comparison's rows are computed from: both models' AUCs and, with a bootstrap, each
/// replicate's AUCs of A's tasks followed by B's.
struct Paired<'a> {
    aucs_a: Vec<Option<f64>>,
    aucs_b: Vec<Option<f64>>,
    replicates: Option<Vec<Vec<Option<f64>>>>,
    level: f64,
    setup: &'a Setup,
}

impl Paired<'_> {
    /// The interval of a per-replicate difference.
    fn ci(&self, diff: impl Fn(&[Option<f64>]) -> Option<f64>) -> Option<bootstrap::Interval> {
        let r = self.replicates.as_ref()?;
        bootstrap::interval(r.iter().map(|rep| diff(rep)), self.level)
    }

    fn task(
        &self,
        i: usize,
        ta: &TaskData,
        delong: Option<DeLong>,
        p_holm: Option<f64>,
    ) -> TaskComparison {
        let (auc_a, auc_b) = (self.aucs_a[i], self.aucs_b[i]);
        let t = self.aucs_a.len();
        TaskComparison {
            task: ta.task.kind.name().to_string(),
            n: ta.n_pos() + ta.n_neg(),
            n_pos: ta.n_pos(),
            n_neg: ta.n_neg(),
            auc_a,
            auc_b,
            difference: auc_a.zip(auc_b).map(|(x, y)| x - y),
            delong,
            p_holm,
            difference_ci: self.ci(|rep| rep[i].zip(rep[t + i]).map(|(x, y)| x - y)),
            too_few: auc_a.is_some() && too_few(ta, self.setup.min_positives),
        }
    }

    fn mean(&self, name: String, idx: Vec<usize>, tasks: &[TaskData]) -> MeanComparison {
        let (auc_a, auc_b) = (mean_auc(&self.aucs_a, &idx), mean_auc(&self.aucs_b, &idx));
        let t = self.aucs_a.len();
        let idx_b: Vec<usize> = idx.iter().map(|i| t + i).collect();
        let diffs: Option<Vec<f64>> = self.replicates.as_ref().map(|r| {
            r.iter()
                .filter_map(|rep| {
                    Some(bootstrap::mean_of(rep, &idx)? - bootstrap::mean_of(rep, &idx_b)?)
                })
                .collect()
        });
        MeanComparison {
            tasks: names(tasks, &idx),
            name,
            auc_a,
            auc_b,
            difference: auc_a - auc_b,
            difference_ci: diffs
                .as_ref()
                .and_then(|d| bootstrap::interval(d.iter().map(|&x| Some(x)), self.level)),
            p_value: diffs
                .as_ref()
                .filter(|d| !d.is_empty())
                .map(|d| bootstrap::p_value(d)),
        }
    }
}

/// Compare two models on the same units: `a` and `b` must come from [`crate::labels::join`] of
/// the same images (same units in the same order) and have the same tasks in the same order.
pub fn compare(
    a: &EvalSet,
    b: &EvalSet,
    paths: (&Path, &Path),
    setup: Setup,
    only: (Vec<String>, Vec<String>),
) -> CompareReport {
    assert_eq!(a.unit_ids, b.unit_ids, "compare needs the same units");
    assert_eq!(a.tasks.len(), b.tasks.len(), "compare needs the same tasks");
    let paired = Paired {
        aucs_a: aucs(&a.tasks),
        aucs_b: aucs(&b.tasks),
        replicates: setup
            .bootstrap
            .map(|cfg| replicates(a.tasks.iter().chain(&b.tasks), a, &cfg)),
        level: level(&setup),
        setup: &setup,
    };
    let delongs: Vec<Option<DeLong>> = a
        .tasks
        .iter()
        .zip(&b.tasks)
        .map(|(ta, tb)| clustered_delong(ta, tb, &a.unit_patient))
        .collect();
    let adjusted = holm_over_observations(&delongs, &a.tasks);
    let tasks = (0..a.tasks.len())
        .map(|i| paired.task(i, &a.tasks[i], delongs[i], adjusted[i]))
        .collect();
    let scorable = scorable(&a.tasks, &paired.aucs_a, setup.min_positives);
    let means = mean_sets(&a.tasks, &scorable)
        .into_iter()
        .map(|(name, idx)| paired.mean(name, idx, &a.tasks))
        .collect();
    CompareReport {
        a: paths.0.display().to_string(),
        b: paths.1.display().to_string(),
        setup,
        tasks,
        means,
        only_in_a: only.0,
        only_in_b: only.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Aggregate;
    use crate::labels::Task;
    use cxr_core::Observation;

    fn task(name: &str, labels: Vec<Option<bool>>) -> TaskData {
        let scores = (0..labels.len()).map(|i| (i % 3) as f64).collect();
        TaskData {
            task: Task {
                column: name.to_string(),
                kind: TaskKind::Pathology(Observation::parse(name).unwrap()),
            },
            labels,
            scores,
        }
    }

    #[test]
    fn means_name_their_tasks_and_leave_out_undefined_and_rare_tasks() {
        let known: Vec<Option<bool>> = (0..6).map(|i| Some(i % 2 == 0)).collect();
        let two_positives: Vec<Option<bool>> = (0..6).map(|i| Some(i < 2)).collect();
        let set = EvalSet {
            aggregate: Aggregate::Image,
            unit_ids: (0..6).map(|i| i.to_string()).collect(),
            unit_patient: vec![0, 0, 1, 1, 2, 2],
            patient_ids: vec!["a".into(), "b".into(), "c".into()],
            n_images: 6,
            datasets: vec![cxr_core::Dataset::Chexpert],
            unlabelled: Vec::new(),
            splits: Vec::new(),
            tasks: vec![
                task("Edema", known.clone()),
                task("Pneumonia", known),
                task("Atelectasis", two_positives),
                task("Fracture", vec![Some(false); 6]),
                task("Hernia", vec![None; 6]),
            ],
        };
        let setup = setup(
            &set,
            Path::new("m"),
            &cxr_core::LabelPolicy::evaluation(),
            None,
            3,
        );
        let r = score(&set, Path::new("p"), setup, vec!["age".into()]);
        let means: Vec<(&str, Vec<&str>)> = r
            .means
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.tasks.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            means,
            [
                ("CheXpert competition (1 of 5)", vec!["Edema"]),
                ("all 2 scorable observations", vec!["Edema", "Pneumonia"]),
            ]
        );
        assert_eq!(r.undefined, ["Fracture", "Hernia"]);
        assert_eq!(r.too_few, ["Atelectasis"]);
        assert!(r.tasks[2].too_few && r.tasks[2].auc.is_some());
        // A comparison leaves out the same tasks.
        let c = compare(
            &set,
            &set,
            (Path::new("a"), Path::new("b")),
            r.setup.clone(),
            (Vec::new(), Vec::new()),
        );
        let flagged: Vec<&str> = c
            .tasks
            .iter()
            .filter(|t| t.too_few)
            .map(|t| t.task.as_str())
            .collect();
        assert_eq!(flagged, ["Atelectasis"]);
        assert_eq!(c.means[1].tasks, ["Edema", "Pneumonia"]);
        assert!(c.table().contains("too few to average"), "{}", c.table());
        let table = r.table();
        assert!(
            table.contains("one class only") && table.contains("no known labels"),
            "{table}"
        );
        assert!(
            table.contains("undefined: 2 tasks with one class only: Fracture, Hernia"),
            "{table}"
        );
        assert!(
            table.contains("too few to average (fewer than 3 positives or negatives"),
            "{table}"
        );
        assert!(
            table.contains("not scored (no AUC for a regression output): age"),
            "{table}"
        );
    }

    #[test]
    fn holm_adjusts_step_down_and_keeps_order() {
        let p = [Some(0.01), None, Some(0.04), Some(0.03)];
        let adj = holm(&p);
        // Sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max with previous = 0.06.
        assert_eq!(adj[1], None);
        assert!((adj[0].unwrap() - 0.03).abs() < 1e-15);
        assert!((adj[3].unwrap() - 0.06).abs() < 1e-15);
        assert!((adj[2].unwrap() - 0.06).abs() < 1e-15);
    }
}
