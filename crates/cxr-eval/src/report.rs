//! The numbers people read: per-task AUCs with intervals, means, comparisons; as a table on the
//! terminal and as JSON and CSV files for scripts and papers.
//!
//! Every AUC comes with its bootstrap interval when one was asked for, every mean names the tasks
//! it averages, and undefined AUCs (one class only) are shown as `n/a` and counted, never
//! silently dropped or replaced by a number. Means are over observations (the manifest's label
//! columns, `No Finding` included, as CheXpert's 14) only: the sex and view
//! tasks answer a different question and are reported beside them.
//!
//! A task with fewer than `min_positives` positives or negatives (10 by default) is scored and
//! shown, flagged, but left out of the means: with 3 positives an AUC moves by a third when one
//! of them is ranked differently, and a mean over such tasks is noise however many seeds ran.

use crate::auc::{roc_auc_known, Ranked};
use crate::bootstrap::{self, Bootstrap, Interval};
use crate::delong::{self, DeLong};
use crate::labels::{Aggregate, EvalSet, TaskData, TaskKind};
use anyhow::Result;
use cxr_core::{atomic, COMPETITION_5};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the numbers came from, shared by score and compare reports.
#[derive(Debug, Clone, Serialize)]
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
    pub bootstrap: Option<Bootstrap>,
    /// Tasks with fewer positives or negatives than this are left out of means.
    pub min_positives: usize,
}

/// One task's AUC.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task: String,
    /// The predictions column it was read from.
    pub column: String,
    /// Units with a known label, positives and negatives among them.
    pub n: usize,
    pub n_pos: usize,
    pub n_neg: usize,
    /// `None` (JSON `null`) when the task has one class only.
    pub auc: Option<f64>,
    pub ci: Option<Interval>,
    /// Fewer than `min_positives` positives or negatives: left out of means.
    pub too_few: bool,
}

/// The mean AUC over named tasks.
#[derive(Debug, Clone, Serialize)]
pub struct MeanResult {
    pub name: String,
    pub tasks: Vec<String>,
    pub auc: f64,
    pub ci: Option<Interval>,
}

/// `cxr-eval score`'s result.
#[derive(Debug, Clone, Serialize)]
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
    }
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
/// [`scorable`] members. Returns (name, indices into `tasks`).
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

/// Score one model: AUC per task, patient-bootstrap intervals, means.
pub fn score(
    set: &EvalSet,
    predictions: &Path,
    setup: Setup,
    skipped_columns: Vec<String>,
) -> ScoreReport {
    let aucs: Vec<Option<f64>> = set
        .tasks
        .iter()
        .map(|t| roc_auc_known(&t.labels, &t.scores))
        .collect();
    let min = setup.min_positives;
    let sets = mean_sets(&set.tasks, &scorable(&set.tasks, &aucs, min));
    let replicates = setup.bootstrap.map(|cfg| {
        let ranked: Vec<Ranked> = set
            .tasks
            .iter()
            .map(|t| Ranked::new(&t.labels, &t.scores))
            .collect();
        bootstrap::replicate_aucs(&ranked, &set.unit_patient, set.patient_ids.len(), &cfg)
    });
    let level = setup.bootstrap.map_or(0.95, |b| b.level);
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
            ci: replicates
                .as_ref()
                .and_then(|r| bootstrap::interval(r.iter().map(|rep| rep[i]), level)),
            too_few: aucs[i].is_some() && too_few(t, min),
        })
        .collect();
    let means = sets
        .into_iter()
        .map(|(name, idx)| MeanResult {
            auc: idx
                .iter()
                .map(|&i| aucs[i].unwrap_or_default())
                .sum::<f64>()
                / idx.len() as f64,
            ci: replicates.as_ref().and_then(|r| {
                bootstrap::interval(r.iter().map(|rep| bootstrap::mean_of(rep, &idx)), level)
            }),
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

/// One task compared between models A and B.
#[derive(Debug, Clone, Serialize)]
pub struct TaskComparison {
    pub task: String,
    pub n: usize,
    pub n_pos: usize,
    pub n_neg: usize,
    pub auc_a: Option<f64>,
    pub auc_b: Option<f64>,
    /// `auc_a - auc_b`.
    pub difference: Option<f64>,
    /// DeLong's test clustered by patient (Obuchowski 1997, [`delong::clustered_paired_test`]:
    /// the variances and covariance are the clustered ones); `None` unless two patients have a
    /// positive unit and two a negative one.
    pub delong: Option<DeLong>,
    /// DeLong p-value adjusted for testing every observation (Holm's step-down); `None` for
    /// sex and view.
    pub p_holm: Option<f64>,
    /// Paired-bootstrap interval of the difference.
    pub difference_ci: Option<Interval>,
    /// Fewer than `min_positives` positives or negatives: left out of means.
    pub too_few: bool,
}

/// The mean AUCs of A and B over named tasks, and their difference.
#[derive(Debug, Clone, Serialize)]
pub struct MeanComparison {
    pub name: String,
    pub tasks: Vec<String>,
    pub auc_a: f64,
    pub auc_b: f64,
    pub difference: f64,
    /// Paired patient-bootstrap interval of the difference, and its two-sided p-value.
    pub difference_ci: Option<Interval>,
    pub p_value: Option<f64>,
}

/// `cxr-eval compare`'s result.
#[derive(Debug, Clone, Serialize)]
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
    let aucs_a: Vec<Option<f64>> = a
        .tasks
        .iter()
        .map(|t| roc_auc_known(&t.labels, &t.scores))
        .collect();
    let aucs_b: Vec<Option<f64>> = b
        .tasks
        .iter()
        .map(|t| roc_auc_known(&t.labels, &t.scores))
        .collect();
    let t = a.tasks.len();
    let replicates = setup.bootstrap.map(|cfg| {
        let ranked: Vec<Ranked> = a
            .tasks
            .iter()
            .chain(&b.tasks)
            .map(|t| Ranked::new(&t.labels, &t.scores))
            .collect();
        bootstrap::replicate_aucs(&ranked, &a.unit_patient, a.patient_ids.len(), &cfg)
    });
    let level = setup.bootstrap.map_or(0.95, |b| b.level);
    // DeLong's test clustered by patient (Obuchowski 1997): a patient's images or studies are
    // not independent, and the unclustered variance would make p too small.
    let delongs: Vec<Option<DeLong>> = a
        .tasks
        .iter()
        .zip(&b.tasks)
        .map(|(ta, tb)| {
            let (mut labels, mut sa, mut sb, mut patients) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (((l, x), y), p) in ta
                .labels
                .iter()
                .zip(&ta.scores)
                .zip(&tb.scores)
                .zip(&a.unit_patient)
            {
                if let Some(l) = l {
                    labels.push(*l);
                    sa.push(*x);
                    sb.push(*y);
                    patients.push(*p as usize);
                }
            }
            delong::clustered_paired_test(&labels, &sa, &sb, &patients)
        })
        .collect();
    // The family adjusted over is the observations; sex and view answer other questions.
    let pathology_p: Vec<Option<f64>> = delongs
        .iter()
        .zip(&a.tasks)
        .map(|(d, t)| {
            d.filter(|_| matches!(t.task.kind, TaskKind::Pathology(_)))
                .map(|d| d.p_value)
        })
        .collect();
    let adjusted = holm(&pathology_p);
    let tasks = (0..t)
        .map(|i| {
            let ta = &a.tasks[i];
            TaskComparison {
                task: ta.task.kind.name().to_string(),
                n: ta.n_pos() + ta.n_neg(),
                n_pos: ta.n_pos(),
                n_neg: ta.n_neg(),
                auc_a: aucs_a[i],
                auc_b: aucs_b[i],
                difference: aucs_a[i].zip(aucs_b[i]).map(|(x, y)| x - y),
                delong: delongs[i],
                p_holm: adjusted[i],
                difference_ci: replicates.as_ref().and_then(|r| {
                    bootstrap::interval(
                        r.iter()
                            .map(|rep| rep[i].zip(rep[t + i]).map(|(x, y)| x - y)),
                        level,
                    )
                }),
                too_few: aucs_a[i].is_some() && too_few(ta, setup.min_positives),
            }
        })
        .collect();
    let means = mean_sets(&a.tasks, &scorable(&a.tasks, &aucs_a, setup.min_positives))
        .into_iter()
        .map(|(name, idx)| {
            let mean = |aucs: &[Option<f64>]| {
                idx.iter()
                    .map(|&i| aucs[i].unwrap_or_default())
                    .sum::<f64>()
                    / idx.len() as f64
            };
            let (auc_a, auc_b) = (mean(&aucs_a), mean(&aucs_b));
            let diffs: Option<Vec<f64>> = replicates.as_ref().map(|r| {
                let idx_b: Vec<usize> = idx.iter().map(|i| t + i).collect();
                r.iter()
                    .filter_map(|rep| {
                        Some(bootstrap::mean_of(rep, &idx)? - bootstrap::mean_of(rep, &idx_b)?)
                    })
                    .collect()
            });
            MeanComparison {
                tasks: names(&a.tasks, &idx),
                name,
                auc_a,
                auc_b,
                difference: auc_a - auc_b,
                difference_ci: diffs
                    .as_ref()
                    .and_then(|d| bootstrap::interval(d.iter().map(|&x| Some(x)), level)),
                p_value: diffs
                    .as_ref()
                    .filter(|d| !d.is_empty())
                    .map(|d| bootstrap::p_value(d)),
            }
        })
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

fn fmt_auc(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |x| format!("{x:.4}"))
}

fn fmt_ci(ci: Option<Interval>, total: Option<usize>) -> String {
    match ci {
        None => String::new(),
        Some(ci) => {
            let partial = match total {
                Some(b) if ci.replicates_used < b => {
                    format!("  ({} of {b} replicates)", ci.replicates_used)
                }
                _ => String::new(),
            };
            format!("[{:.4}, {:.4}]{partial}", ci.low, ci.high)
        }
    }
}

/// A p-value with 4 decimals, or in scientific notation below 1e-4.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn header(out: &mut String, s: &Setup) {
    let unit = match s.aggregate {
        Aggregate::Image => "image".to_string(),
        agg => format!(
            "study ({}; {} images in {} studies)",
            agg.as_str(),
            s.n_images,
            s.n_units
        ),
    };
    let _ = writeln!(
        out,
        "labels     {}, policy {}, unit: {unit}",
        s.manifest, s.policy
    );
    if !s.splits.is_empty() {
        let listed: Vec<String> = s
            .splits
            .iter()
            .map(|(split, n)| format!("{split} ({n} images)"))
            .collect();
        let mut line = match listed.len() {
            1 => format!("split      {}", listed[0]),
            _ => format!("splits     {}, pooled", listed.join(", ")),
        };
        if s.splits.contains_key("train") {
            line.push_str("; training images (--allow-train-split)");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = match s.bootstrap {
        Some(b) => writeln!(
            out,
            "intervals  {:.0}% percentile, {} bootstrap replicates over {} patients (seed {})",
            b.level * 100.0,
            b.replicates,
            s.n_patients,
            b.seed
        ),
        None => writeln!(
            out,
            "intervals  none (--bootstrap 0); {} patients",
            s.n_patients
        ),
    };
}

impl ScoreReport {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "predictions {} ({} images)",
            self.predictions, self.setup.n_images
        );
        header(&mut out, &self.setup);
        let total = self.setup.bootstrap.map(|b| b.replicates);
        let ci_head = self
            .setup
            .bootstrap
            .map_or(String::new(), |b| format!("{:.0}% CI", b.level * 100.0));
        let _ = writeln!(
            out,
            "\n{:<28} {:>7} {:>6} {:>7}  {ci_head}",
            "task", "n", "pos", "AUC"
        );
        for t in &self.tasks {
            let ci = match (t.auc, t.n) {
                (None, 0) => "no known labels".to_string(),
                (None, _) => "one class only".to_string(),
                _ if t.too_few => format!("{}  (too few: not in means)", fmt_ci(t.ci, total)),
                _ => fmt_ci(t.ci, total),
            };
            let _ = writeln!(
                out,
                "{:<28} {:>7} {:>6} {:>7}  {ci}",
                t.task,
                t.n,
                t.n_pos,
                fmt_auc(t.auc)
            );
        }
        out.push('\n');
        for m in &self.means {
            let _ = writeln!(
                out,
                "{:<43} {:>7}  {}",
                format!("mean, {}", m.name),
                fmt_auc(Some(m.auc)),
                fmt_ci(m.ci, total)
            );
            let _ = writeln!(out, "  over {}", m.tasks.join(", "));
        }
        undefined_line(&mut out, &self.undefined);
        too_few_line(&mut out, &self.too_few, self.setup.min_positives);
        if !self.skipped_columns.is_empty() {
            let _ = writeln!(
                out,
                "not scored (no AUC for a regression output): {}",
                self.skipped_columns.join(", ")
            );
        }
        out
    }

    /// `metrics.json` and `metrics.csv` in `dir`, written atomically.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record([
            "kind",
            "task",
            "n",
            "n_pos",
            "n_neg",
            "auc",
            "ci_low",
            "ci_high",
            "replicates_used",
            "tasks",
        ])?;
        for t in &self.tasks {
            csv.write_record([
                "task".to_string(),
                t.task.clone(),
                t.n.to_string(),
                t.n_pos.to_string(),
                t.n_neg.to_string(),
                opt(t.auc),
                opt(t.ci.map(|c| c.low)),
                opt(t.ci.map(|c| c.high)),
                t.ci.map_or(String::new(), |c| c.replicates_used.to_string()),
                String::new(),
            ])?;
        }
        for m in &self.means {
            csv.write_record([
                "mean".to_string(),
                m.name.clone(),
                String::new(),
                String::new(),
                String::new(),
                m.auc.to_string(),
                opt(m.ci.map(|c| c.low)),
                opt(m.ci.map(|c| c.high)),
                m.ci.map_or(String::new(), |c| c.replicates_used.to_string()),
                m.tasks.join(";"),
            ])?;
        }
        write_pair(
            dir,
            "metrics",
            &serde_json::to_vec_pretty(self)?,
            &csv.into_inner()?,
        )
    }
}

impl CompareReport {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A          {}", self.a);
        let _ = writeln!(
            out,
            "B          {}  ({} images each)",
            self.b, self.setup.n_images
        );
        header(&mut out, &self.setup);
        let total = self.setup.bootstrap.map(|b| b.replicates);
        let _ = writeln!(
            out,
            "\n{:<28} {:>6} {:>5} {:>7} {:>7} {:>8}  {:<20} {:>7} {:>8} {:>8}",
            "task",
            "n",
            "pos",
            "AUC A",
            "AUC B",
            "A - B",
            "bootstrap CI of A-B",
            "DeLong z",
            "p",
            "p (Holm)"
        );
        for t in &self.tasks {
            let diff = t
                .difference
                .map_or("n/a".to_string(), |d| format!("{d:+.4}"));
            let ci = t.difference_ci.map_or(String::new(), |c| {
                format!("[{:+.4}, {:+.4}]", c.low, c.high)
            });
            let (z, p) = match (t.delong, t.difference) {
                (Some(d), _) => (format!("{:+.2}", d.z), fmt_p(d.p_value)),
                // DeLong's variance needs two units of each class.
                (None, Some(_)) => ("n/a".to_string(), "n/a".to_string()),
                (None, None) => (String::new(), String::new()),
            };
            let holm = t.p_holm.map_or(String::new(), fmt_p);
            let _ = writeln!(
                out,
                "{:<28} {:>6} {:>5} {:>7} {:>7} {:>8}  {:<20} {:>7} {:>8} {:>8}",
                t.task,
                t.n,
                t.n_pos,
                fmt_auc(t.auc_a),
                fmt_auc(t.auc_b),
                diff,
                ci,
                z,
                p,
                holm
            );
        }
        out.push('\n');
        for m in &self.means {
            let _ = writeln!(
                out,
                "mean, {}: A {:.4}, B {:.4}, A - B {:+.4}{}{}",
                m.name,
                m.auc_a,
                m.auc_b,
                m.difference,
                m.difference_ci.map_or(String::new(), |c| {
                    let partial = fmt_ci(Some(c), total)
                        .split_once("  ")
                        .map_or(String::new(), |(_, p)| format!("  {p}"));
                    format!(
                        ", {:.0}% CI [{:+.4}, {:+.4}]{partial}",
                        self.setup.bootstrap.map_or(95.0, |b| b.level * 100.0),
                        c.low,
                        c.high
                    )
                }),
                m.p_value.map_or(String::new(), |p| format!(
                    ", paired bootstrap p = {}",
                    fmt_p(p)
                ))
            );
            let _ = writeln!(out, "  over {}", m.tasks.join(", "));
        }
        let undefined: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.auc_a.is_none())
            .map(|t| t.task.clone())
            .collect();
        undefined_line(&mut out, &undefined);
        let too_few: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.too_few)
            .map(|t| t.task.clone())
            .collect();
        too_few_line(&mut out, &too_few, self.setup.min_positives);
        if self
            .tasks
            .iter()
            .any(|t| t.delong.is_none() && t.difference.is_some())
        {
            let _ = writeln!(
                out,
                "DeLong n/a: fewer than two patients with a positive or with a negative"
            );
        }
        for (who, only) in [("A", &self.only_in_a), ("B", &self.only_in_b)] {
            if !only.is_empty() {
                let _ = writeln!(out, "only in {who} (not compared): {}", only.join(", "));
            }
        }
        out
    }

    /// `comparison.json` and `comparison.csv` in `dir`, written atomically.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record([
            "kind",
            "task",
            "n",
            "n_pos",
            "n_neg",
            "auc_a",
            "auc_b",
            "difference",
            "ci_low",
            "ci_high",
            "delong_z",
            "p_value",
            "p_holm",
            "tasks",
        ])?;
        for t in &self.tasks {
            csv.write_record([
                "task".to_string(),
                t.task.clone(),
                t.n.to_string(),
                t.n_pos.to_string(),
                t.n_neg.to_string(),
                opt(t.auc_a),
                opt(t.auc_b),
                opt(t.difference),
                opt(t.difference_ci.map(|c| c.low)),
                opt(t.difference_ci.map(|c| c.high)),
                opt(t.delong.map(|d| d.z)),
                opt(t.delong.map(|d| d.p_value)),
                opt(t.p_holm),
                String::new(),
            ])?;
        }
        for m in &self.means {
            csv.write_record([
                "mean".to_string(),
                m.name.clone(),
                String::new(),
                String::new(),
                String::new(),
                m.auc_a.to_string(),
                m.auc_b.to_string(),
                m.difference.to_string(),
                opt(m.difference_ci.map(|c| c.low)),
                opt(m.difference_ci.map(|c| c.high)),
                String::new(),
                opt(m.p_value),
                String::new(),
                m.tasks.join(";"),
            ])?;
        }
        write_pair(
            dir,
            "comparison",
            &serde_json::to_vec_pretty(self)?,
            &csv.into_inner()?,
        )
    }
}

/// The count and names of the tasks without an AUC.
fn undefined_line(out: &mut String, undefined: &[String]) {
    let _ = match undefined.len() {
        0 => writeln!(out, "undefined: none"),
        k => writeln!(
            out,
            "undefined: {k} task{} with one class only: {}",
            if k == 1 { "" } else { "s" },
            undefined.join(", ")
        ),
    };
}

/// The tasks left out of means for too few positives or negatives, and the rule.
fn too_few_line(out: &mut String, too_few: &[String], min: usize) {
    if !too_few.is_empty() {
        let _ = writeln!(
            out,
            "too few to average (fewer than {min} positives or negatives; --min-positives): {}",
            too_few.join(", ")
        );
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or(String::new(), |x| x.to_string())
}

fn write_pair(dir: &Path, stem: &str, json: &[u8], csv: &[u8]) -> Result<Vec<PathBuf>> {
    let json_path = dir.join(format!("{stem}.json"));
    let csv_path = dir.join(format!("{stem}.csv"));
    atomic::write_bytes(&json_path, json)?;
    atomic::write_bytes(&csv_path, csv)?;
    Ok(vec![json_path, csv_path])
}

#[cfg(test)]
mod tests {
    use super::*;
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
