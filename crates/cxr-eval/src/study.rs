//! `cxr-eval report`: one Markdown report for the study's experiments.
//!
//! Why: the paper's claims are comparisons (in-domain pretraining vs random init, U-Ones vs
//! U-Ignore, ...) made from single runs. The pipelines train every configuration with several
//! seeds and score and compare each seed's run; this module gathers those files into the tables
//! a reader needs: test AUCs with 95% patient-bootstrap intervals per seed, paired tests against
//! the baseline (paired-bootstrap p for mean AUCs, DeLong for single tasks), and whether a
//! difference keeps its sign, and its significance, across seeds. A difference that flips sign
//! between seeds is seed noise, whatever its p-value in one seed.
//!
//! An experiment directory holds `experiment.json` (written by its pipeline, see
//! `pipelines/common.mk`) and, for every test set `T` (`official`: the dataset's own evaluation
//! set, the headline; `test`: held-out patients of the training file), configuration `C`, seed
//! `S` and compared pair `A`, `B`:
//!
//! ```text
//! eval/T/C__sS/metrics.json            cxr-eval score of the run's predictions on T
//! compare/T/A_vs_B__sS/comparison.json cxr-eval compare of A against B, same seed
//! preds/T/C__sS.parquet                the predictions (age is summarised from these: MAE with
//!                                      a 95% patient-bootstrap interval)
//! figures/*.png                        cxr-eval curves of the runs
//! ```
//!
//! Missing files are reported as missing, never skipped silently.
//!
//! Numbers are shown against what a model that learned nothing gets (AUC 0.5; for age, the
//! error of predicting the training patients' mean age) and per-task AUCs beside their count of
//! test positives, flagged where too few to average: a reader should see at a glance whether
//! anything was learned, and how much a number can be trusted.

use anyhow::{Context, Result};
use cxr_core::predictions::Predictions;
use cxr_core::{atomic, Manifest};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::bootstrap::{self, Bootstrap};

/// `experiment.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Experiment {
    pub title: String,
    /// The question the experiment answers, one paragraph.
    #[serde(default)]
    pub question: String,
    /// The configuration others are tested against, when `comparisons` is empty (none: no
    /// tests).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Pairs `[A, B]` tested on the same images: A minus B.
    #[serde(default)]
    pub comparisons: Vec<[String; 2]>,
    /// The sets the runs were scored on, each with its own tables, in order; by default the
    /// held-out test patients only.
    #[serde(default)]
    pub test_sets: Vec<TestSet>,
    pub configs: Vec<String>,
    pub seeds: Vec<u64>,
    /// Free-form notes (data used, what was left out and why).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The manifest the runs were scored with (for age MAE).
    #[serde(default)]
    pub manifest: Option<PathBuf>,
}

/// A set of images the runs were scored on.
#[derive(Debug, Clone, Deserialize)]
pub struct TestSet {
    /// The folder under `eval/`, `compare/` and `preds/` (the manifest's split name).
    pub name: String,
    /// What the set is, for the heading of its tables.
    pub title: String,
}

impl Experiment {
    /// The pairs compared: `comparisons`, or every configuration against `baseline`.
    pub fn pairs(&self) -> Vec<[String; 2]> {
        if !self.comparisons.is_empty() {
            return self.comparisons.clone();
        }
        let Some(base) = &self.baseline else {
            return Vec::new();
        };
        self.configs
            .iter()
            .filter(|c| *c != base)
            .map(|c| [c.clone(), base.clone()])
            .collect()
    }

    /// The test sets, `test` when the pipeline names none.
    pub fn sets(&self) -> Vec<TestSet> {
        if !self.test_sets.is_empty() {
            return self.test_sets.clone();
        }
        vec![TestSet {
            name: "test".into(),
            title: "Held-out test patients".into(),
        }]
    }
}

/// One number of a run: an AUC (or MAE) with its interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoint {
    pub name: String,
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

/// One paired comparison against the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub name: String,
    pub difference: Option<f64>,
    pub ci: Option<(f64, f64)>,
    pub p: Option<f64>,
}

fn ci_of(v: &Value) -> Option<(f64, f64)> {
    Some((v.get("low")?.as_f64()?, v.get("high")?.as_f64()?))
}

/// The headline numbers of a `metrics.json`: its means, or its tasks when it has no mean (sex,
/// view); and every task's AUC.
pub fn endpoints(metrics: &Value) -> RunNumbers {
    let list = |key: &str, name: &str| -> Vec<Endpoint> {
        metrics
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|m| {
                        let count = |k: &str| m.get(k).and_then(Value::as_u64).map(|c| c as usize);
                        Endpoint {
                            name: m.get(name).and_then(Value::as_str).unwrap_or("?").into(),
                            value: m.get("auc").and_then(Value::as_f64),
                            ci: m.get("ci").and_then(ci_of),
                            counts: count("n_pos").zip(count("n_neg")),
                            too_few: m.get("too_few").and_then(Value::as_bool) == Some(true),
                            trivial: Some(0.5),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let means = list("means", "name");
    let tasks = list("tasks", "task");
    if means.is_empty() {
        (tasks.clone(), tasks)
    } else {
        (means, tasks)
    }
}

/// The comparisons of a `comparison.json`, matching [`endpoints`]: mean differences with the
/// paired-bootstrap p, or per-task differences with DeLong's p when there is no mean.
pub fn differences(comparison: &Value) -> Vec<Difference> {
    let means: Vec<Difference> = comparison
        .get("means")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| Difference {
                    name: m.get("name").and_then(Value::as_str).unwrap_or("?").into(),
                    difference: m.get("difference").and_then(Value::as_f64),
                    ci: m.get("difference_ci").and_then(ci_of),
                    p: m.get("p_value").and_then(Value::as_f64),
                })
                .collect()
        })
        .unwrap_or_default();
    if !means.is_empty() {
        return means;
    }
    comparison
        .get("tasks")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| Difference {
                    name: t.get("task").and_then(Value::as_str).unwrap_or("?").into(),
                    difference: t.get("difference").and_then(Value::as_f64),
                    ci: t.get("difference_ci").and_then(ci_of),
                    p: t.get("delong")
                        .and_then(|d| d.get("p_value"))
                        .and_then(Value::as_f64),
                })
                .collect()
        })
        .unwrap_or_default()
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

fn describe(a: Agreement, n: usize) -> String {
    if n == 1 && !matches!(a, Agreement::Unknown | Agreement::Identical) {
        return "one seed only: run more seeds to tell".into();
    }
    match a {
        Agreement::Identical => format!("identical in all {n} seeds"),
        Agreement::Holds => format!("holds: same sign and p < 0.05 in all {n} seeds"),
        Agreement::SameSign { significant } => format!(
            "same sign in all {n} seeds, p < 0.05 in {significant} of {n}{}",
            if significant == 0 { ": not shown" } else { "" }
        ),
        Agreement::Flips => "sign changes between seeds: does not survive them".into(),
        Agreement::Unknown => "n/a".into(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
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
        name: format!(
            "age MAE in years, {} images (lower is better)",
            errors.len()
        ),
        value: Some(errors.iter().sum::<f64>() / errors.len() as f64),
        ci: ci.map(|ci| (ci.low, ci.high)),
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

/// A run's headline numbers and per-task AUCs, as [`endpoints`] returns them.
type RunNumbers = (Vec<Endpoint>, Vec<Endpoint>);

/// Everything read for one experiment.
struct Loaded {
    exp: Experiment,
    dir: PathBuf,
    /// The pairs compared, as [`Experiment::pairs`] gives them.
    pairs: Vec<[String; 2]>,
    /// One entry per test set.
    sets: Vec<SetNumbers>,
    missing: Vec<String>,
}

/// What was read for one test set.
struct SetNumbers {
    set: TestSet,
    /// `[config][seed]` headline numbers and per-task AUCs (`None`: missing file).
    runs: Vec<Vec<Option<RunNumbers>>>,
    /// `[pair][seed]` comparisons.
    diffs: Vec<Vec<Option<Vec<Difference>>>>,
    /// The scoring's rule for leaving tasks out of means (from the first `metrics.json`).
    min_positives: Option<usize>,
    /// The manifest splits of the scored images (`metrics.json`'s `splits`), each different
    /// description once: `test (48 images)`. Several mean the runs scored different images.
    splits: Vec<String>,
}

impl SetNumbers {
    /// The first run's number called `name`: a per-task AUC with `task`, else a headline one.
    fn first(&self, name: &str, task: bool) -> Option<&Endpoint> {
        self.runs
            .iter()
            .flatten()
            .flatten()
            .flat_map(|(headline, tasks)| if task { tasks } else { headline })
            .find(|e| e.name == name)
    }
}

fn run_name(config: &str, seed: u64) -> String {
    format!("{config}__s{seed}")
}

/// The folder of a comparison of `a` against `b` (pipelines/common.mk names it the same way).
fn pair_name([a, b]: &[String; 2], seed: u64) -> String {
    run_name(&format!("{a}_vs_{b}"), seed)
}

fn load(dir: &Path) -> Result<Loaded> {
    let exp_path = dir.join("experiment.json");
    let exp: Experiment = serde_json::from_value(read_json(&exp_path)?).with_context(|| {
        format!(
            "{}: needs title, configs and seeds (written by the pipelines' experiment.json rule)",
            exp_path.display()
        )
    })?;
    let manifest = match &exp.manifest {
        Some(m) if m.exists() => Some(Manifest::read(m)?),
        _ => None,
    };
    let pairs = exp.pairs();
    let mut missing = Vec::new();
    let mut sets = Vec::new();
    for set in exp.sets() {
        let numbers = load_set(dir, &exp, &pairs, set, manifest.as_ref(), &mut missing)?;
        sets.push(numbers);
    }
    Ok(Loaded {
        exp,
        dir: dir.to_path_buf(),
        pairs,
        sets,
        missing,
    })
}

/// The scores and comparisons of one test set; missing files are added to `missing`.
fn load_set(
    dir: &Path,
    exp: &Experiment,
    pairs: &[[String; 2]],
    set: TestSet,
    manifest: Option<&Manifest>,
    missing: &mut Vec<String>,
) -> Result<SetNumbers> {
    let mut min_positives = None;
    let mut splits: Vec<String> = Vec::new();
    let mut runs = Vec::new();
    for config in &exp.configs {
        let mut row = Vec::new();
        for &seed in &exp.seeds {
            let name = run_name(config, seed);
            let metrics = dir
                .join("eval")
                .join(&set.name)
                .join(&name)
                .join("metrics.json");
            let preds = dir
                .join("preds")
                .join(&set.name)
                .join(format!("{name}.parquet"));
            let entry = if metrics.exists() {
                let json = read_json(&metrics)?;
                min_positives = min_positives.or_else(|| {
                    json.get("min_positives")
                        .and_then(Value::as_u64)
                        .map(|n| n as usize)
                });
                if let Some(found) = json.get("splits").and_then(Value::as_object) {
                    let text = found
                        .iter()
                        .map(|(split, n)| format!("`{split}` ({n} images)"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if !splits.contains(&text) {
                        splits.push(text);
                    }
                }
                Some(endpoints(&json))
            } else if let (true, Some(m)) = (preds.exists(), manifest) {
                let p = Predictions::read(&preds)?;
                age_mae(&p, m).map(|e| (vec![e], Vec::new()))
            } else {
                None
            };
            if entry.is_none() {
                missing.push(metrics.display().to_string());
            }
            row.push(entry);
        }
        runs.push(row);
    }
    let mut diffs = Vec::new();
    for pair in pairs {
        let mut row = Vec::new();
        for &seed in &exp.seeds {
            let cmp = dir
                .join("compare")
                .join(&set.name)
                .join(pair_name(pair, seed))
                .join("comparison.json");
            row.push(if cmp.exists() {
                Some(differences(&read_json(&cmp)?))
            } else {
                missing.push(cmp.display().to_string());
                None
            });
        }
        diffs.push(row);
    }
    Ok(SetNumbers {
        set,
        runs,
        diffs,
        min_positives,
        splits,
    })
}

fn fmt3(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn fmt_with_ci(v: Option<f64>, ci: Option<(f64, f64)>) -> String {
    match (v, ci) {
        (Some(v), Some((l, h))) => format!("{v:.3} [{l:.3}, {h:.3}]"),
        (v, _) => fmt3(v),
    }
}

fn fmt_diff(d: &Difference) -> String {
    match (d.difference, d.ci) {
        (Some(x), Some((l, h))) => format!("{x:+.3} [{l:+.3}, {h:+.3}]"),
        (Some(x), None) => format!("{x:+.3}"),
        _ => "n/a".into(),
    }
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1e-4 => "<1e-4".into(),
        Some(p) => format!("{p:.3}"),
        None => "n/a".into(),
    }
}

/// `to` relative to the directory `from` (both made absolute first).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| -> Vec<String> {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        });
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let (f, t) = (abs(from), abs(to));
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for part in &t[common..] {
        out.push(part);
    }
    out
}

/// The PNG figures in `dir` and its subdirectories (one level), loss curves first.
fn figures(dir: &Path) -> Vec<PathBuf> {
    let pngs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "png"));
        v.sort();
        v
    };
    let mut out = pngs(dir);
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    subdirs.sort();
    for d in subdirs {
        out.extend(pngs(&d));
    }
    out
}

fn section(l: &Loaded, report_dir: &Path, out: &mut String) {
    let exp = &l.exp;
    let seeds = &exp.seeds;
    let _ = writeln!(out, "## {}\n", exp.title);
    if !exp.question.is_empty() {
        let _ = writeln!(out, "{}\n", exp.question);
    }
    for note in &exp.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !exp.notes.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "Configurations: {}; seeds: {}.\n",
        exp.configs
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for path in figures(&l.dir.join("figures")) {
        let stem = path
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        let what = match stem.as_str() {
            "loss" => "training (solid) and validation (dashed) loss",
            "valid_auc" => "validation AUC during training",
            other => other,
        };
        let group = path
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n != "figures"))
            .and_then(|p| p.file_name())
            .map_or(String::new(), |n| format!("{}: ", n.to_string_lossy()));
        let _ = writeln!(
            out,
            "![{group}{what}]({})\n",
            relative(report_dir, &path).display()
        );
    }
    let several = l.sets.len() > 1;
    for set in &l.sets {
        if several {
            let _ = writeln!(out, "### {}\n", set.set.title);
        }
        set_tables(exp, &l.pairs, set, out);
    }
    if !l.missing.is_empty() {
        let _ = writeln!(
            out,
            "Missing (not run yet, or failed): {}\n",
            l.missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// The tables of one test set: headline numbers, paired comparisons, per-task AUCs.
fn set_tables(exp: &Experiment, pairs: &[[String; 2]], l: &SetNumbers, out: &mut String) {
    match l.splits.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(out, "Scored images: manifest split {one}.\n");
        }
        several => {
            let _ = writeln!(
                out,
                "Scored images differ between runs: {}.\n",
                several.join("; ")
            );
        }
    }
    headline_tables(exp, l, out);
    if !pairs.is_empty() {
        pair_table(exp, pairs, l, out);
    }
    task_table(exp, l, out);
}

/// One table per headline endpoint (a mean AUC, a single task's AUC, age's MAE): every
/// configuration's value per seed and over seeds, beside the trivial baseline.
fn headline_tables(exp: &Experiment, l: &SetNumbers, out: &mut String) {
    let seeds = &exp.seeds;
    // Headline numbers: one table per endpoint name, in the order of the first run that has them.
    let mut names: Vec<String> = Vec::new();
    for run in l.runs.iter().flatten().flatten() {
        for e in &run.0 {
            if !names.contains(&e.name) {
                names.push(e.name.clone());
            }
        }
    }
    for name in &names {
        let is_mae = name.starts_with("age MAE");
        let first = l.first(name, false);
        let counts = first
            .and_then(|e| e.counts)
            .map_or(String::new(), |(p, n)| {
                format!("; {p} positives, {n} negatives")
            });
        let _ = writeln!(
            out,
            "**{}** (95% patient-bootstrap intervals{counts})\n",
            if is_mae {
                name.clone()
            } else {
                format!("AUC: {name}")
            },
        );
        let trivial = first.and_then(|e| e.trivial);
        let trivial_column = match (trivial, is_mae) {
            (None, _) => None,
            (Some(_), true) => Some("trivial: the training mean age"),
            (Some(_), false) => Some("trivial: chance"),
        };
        let last: Vec<&str> = ["mean over seeds"]
            .into_iter()
            .chain(trivial_column)
            .collect();
        table_head(out, &["configuration"], seeds, &["seed {s}"], &last);
        for (c, config) in exp.configs.iter().enumerate() {
            let has = |run: &Option<RunNumbers>| {
                run.as_ref()
                    .is_some_and(|(h, _)| h.iter().any(|e| &e.name == name))
            };
            // A configuration without this endpoint in any seed belongs to another table.
            if !l.runs[c].iter().any(has) {
                continue;
            }
            let mut line = format!("| `{config}` |");
            let mut values = Vec::new();
            for run in &l.runs[c] {
                let e = run
                    .as_ref()
                    .and_then(|(h, _)| h.iter().find(|e| &e.name == name));
                match e {
                    Some(e) => {
                        values.extend(e.value);
                        let _ = write!(line, " {} |", fmt_with_ci(e.value, e.ci));
                    }
                    None => line.push_str(" missing |"),
                }
            }
            let mean =
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
            let _ = write!(line, " {} |", fmt3(mean));
            if trivial.is_some() {
                let _ = write!(line, " {} |", fmt3(trivial));
            }
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
}

/// A Markdown table's header and rule: the `first` columns, `per_seed` for each seed (`{s}`
/// replaced by the seed) and the `last` ones.
fn table_head(out: &mut String, first: &[&str], seeds: &[u64], per_seed: &[&str], last: &[&str]) {
    let mut columns: Vec<String> = first.iter().map(|c| c.to_string()).collect();
    for s in seeds {
        columns.extend(per_seed.iter().map(|c| c.replace("{s}", &s.to_string())));
    }
    columns.extend(last.iter().map(|c| c.to_string()));
    let _ = writeln!(
        out,
        "| {} |\n|{}",
        columns.join(" | "),
        " --- |".repeat(columns.len())
    );
}

/// The paired comparisons: per pair and endpoint, each seed's difference and p, and whether
/// they agree over the seeds.
fn pair_table(exp: &Experiment, pairs: &[[String; 2]], l: &SetNumbers, out: &mut String) {
    let seeds = &exp.seeds;
    let _ = writeln!(
        out,
        "**Paired comparisons on the same images** (difference = first minus second \
         configuration, 95% paired patient-bootstrap interval; p: paired bootstrap for mean \
         AUCs, DeLong clustered by patient for single tasks)\n"
    );
    table_head(
        out,
        &["comparison", "endpoint"],
        seeds,
        &["seed {s}: ΔAUC", "p"],
        &["over the seeds"],
    );
    for ([a, b], diffs) in pairs.iter().zip(&l.diffs) {
        let label = format!("`{a}` vs `{b}`");
        let mut endpoint_names: Vec<String> = Vec::new();
        for d in diffs.iter().flatten().flatten() {
            if !endpoint_names.contains(&d.name) {
                endpoint_names.push(d.name.clone());
            }
        }
        if endpoint_names.is_empty() {
            let _ = writeln!(
                out,
                "| {label} | missing |{} |",
                " |".repeat(2 * seeds.len())
            );
            continue;
        }
        for name in &endpoint_names {
            let mut line = format!("| {label} | {name} |");
            let mut per_seed = Vec::new();
            for d in diffs {
                match d.as_ref().and_then(|v| v.iter().find(|d| &d.name == name)) {
                    Some(d) => {
                        let _ = write!(line, " {} | {} |", fmt_diff(d), fmt_p(d.p));
                        per_seed.push(d.clone());
                    }
                    None => {
                        line.push_str(" missing | |");
                        per_seed.push(Difference {
                            name: name.clone(),
                            difference: None,
                            ci: None,
                            p: None,
                        });
                    }
                }
            }
            let _ = writeln!(
                line,
                " {} |",
                describe(agreement(&per_seed), per_seed.len())
            );
            out.push_str(&line);
        }
    }
    out.push('\n');
}

/// Per-task AUCs, mean over seeds, when runs score several tasks behind a mean.
fn task_table(exp: &Experiment, l: &SetNumbers, out: &mut String) {
    // Per-task AUCs, when runs score several tasks behind a mean.
    let mut tasks: Vec<String> = Vec::new();
    for run in l.runs.iter().flatten().flatten() {
        if run.0 != run.1 {
            for t in &run.1 {
                if !tasks.contains(&t.name) {
                    tasks.push(t.name.clone());
                }
            }
        }
    }
    if !tasks.is_empty() {
        let _ = writeln!(
            out,
            "**AUC per task, mean over seeds** (trivial: 0.5; n/a: one class only in this \
             set{})\n",
            l.min_positives.map_or(String::new(), |n| format!(
                "; †: fewer than {n} positives or negatives, too few to score reliably: shown, \
                 left out of every mean above"
            ))
        );
        let _ = writeln!(
            out,
            "| task | positives |{}\n| --- | --- |{}",
            exp.configs
                .iter()
                .map(|c| format!(" `{c}` |"))
                .collect::<String>(),
            " --- |".repeat(exp.configs.len())
        );
        for task in &tasks {
            let first = l.first(task, true);
            let positives = first
                .and_then(|e| e.counts)
                .map_or("?".to_string(), |(p, n)| format!("{p} of {}", p + n));
            let mark = if first.is_some_and(|e| e.too_few) {
                " †"
            } else {
                ""
            };
            let mut line = format!("| {task}{mark} | {positives} |");
            for runs in &l.runs {
                let values: Vec<f64> = runs
                    .iter()
                    .flatten()
                    .filter_map(|(_, t)| t.iter().find(|e| &e.name == task)?.value)
                    .collect();
                let mean =
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
                let _ = write!(line, " {} |", fmt3(mean));
            }
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
}

/// Write the report of `experiments` to `out` (Markdown; images linked relative to it), with
/// `intro` (Markdown) after the title.
pub fn write_report(
    experiments: &[PathBuf],
    title: &str,
    intro: Option<&str>,
    out: &Path,
) -> Result<()> {
    let report_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("cannot create {}", report_dir.display()))?;
    let mut text = format!("# {title}\n\n");
    if let Some(intro) = intro {
        text.push_str(intro.trim_end());
        text.push_str("\n\n");
    }
    for dir in experiments {
        let loaded = load(dir)?;
        section(&loaded, &report_dir, &mut text);
    }
    atomic::write_bytes(out, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(x: f64, p: f64) -> Difference {
        Difference {
            name: "m".into(),
            difference: Some(x),
            ci: None,
            p: Some(p),
        }
    }

    /// Six images of three patients, two without an age or a prediction.
    #[test]
    fn age_mae_with_a_patient_bootstrap_interval() {
        use cxr_core::{Dataset, ManifestRow};
        let row = |i: usize, patient: &str, age: Option<i32>| ManifestRow {
            age,
            ..ManifestRow::unlabelled(Dataset::Nih, &format!("i{i}"), "x.png", patient, "s")
        };
        let manifest = Manifest {
            rows: vec![
                row(0, "a", Some(40)),
                row(1, "a", Some(42)),
                row(2, "b", Some(70)),
                row(3, "c", None),
                row(4, "c", Some(20)),
                row(5, "c", Some(30)),
            ],
        };
        let predictions = Predictions {
            image_ids: ["i0", "i1", "i2", "i3", "i4", "i9"]
                .map(String::from)
                .to_vec(),
            tasks: vec!["age".into()],
            scores: vec![vec![41.0, 40.0, 60.0, 50.0, 26.0, 1.0]],
        };
        let e = age_mae(&predictions, &manifest).unwrap();
        // Errors 1, 2, 10, 6: i3 has no age, i9 is not in the manifest.
        assert_eq!(e.value, Some(19.0 / 4.0));
        assert!(e.name.contains("4 images"), "{}", e.name);
        let (low, high) = e.ci.unwrap();
        // Replicate means lie between the smallest and the largest error, and the interval
        // holds the estimate; it is the same at every call (seeded).
        let mae = 19.0 / 4.0;
        assert!((1.0..mae).contains(&low), "{low}");
        assert!(high > mae && high <= 10.0, "{high}");
        assert_eq!(age_mae(&predictions, &manifest).unwrap().ci, e.ci);
        // Every row is in the training split: mean age (40 + 42 + 70 + 20 + 30) / 5 = 40.4;
        // predicting it for the four scored images errs by 0.4, 1.6, 29.6 and 20.4 years.
        assert!((e.trivial.unwrap() - 13.0).abs() < 1e-9, "{:?}", e.trivial);
    }

    #[test]
    fn agreement_over_seeds() {
        assert_eq!(
            agreement(&[diff(0.02, 0.01), diff(0.03, 0.001)]),
            Agreement::Holds
        );
        assert_eq!(
            agreement(&[diff(0.02, 0.01), diff(0.01, 0.3)]),
            Agreement::SameSign { significant: 1 }
        );
        assert_eq!(
            agreement(&[diff(0.02, 0.01), diff(-0.01, 0.3)]),
            Agreement::Flips
        );
        assert_eq!(agreement(&[]), Agreement::Unknown);
        assert_eq!(
            agreement(&[diff(0.0, 1.0), diff(0.0, 1.0)]),
            Agreement::Identical
        );
        assert_eq!(
            describe(Agreement::Holds, 1),
            "one seed only: run more seeds to tell"
        );
    }

    #[test]
    fn endpoints_prefer_means_and_fall_back_to_tasks() {
        let with_means = serde_json::json!({
            "tasks": [{"task": "Edema", "auc": 0.8, "ci": {"low": 0.7, "high": 0.9},
                       "n_pos": 12, "n_neg": 80, "too_few": false},
                      {"task": "Mass", "auc": 0.6, "ci": null, "n_pos": 3, "n_neg": 89,
                       "too_few": true}],
            "means": [{"name": "all 1 defined observations", "auc": 0.8,
                       "ci": {"low": 0.7, "high": 0.9}}]
        });
        let (head, tasks) = endpoints(&with_means);
        assert_eq!(head.len(), 1);
        assert_eq!(head[0].ci, Some((0.7, 0.9)));
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].counts, Some((12, 80)));
        assert!(!tasks[0].too_few && tasks[1].too_few);
        assert_eq!(tasks[1].trivial, Some(0.5));
        let view =
            serde_json::json!({"tasks": [{"task": "view (PA vs AP)", "auc": 0.9}], "means": []});
        let (head, tasks) = endpoints(&view);
        assert_eq!(head, tasks);
        let cmp = serde_json::json!({"tasks": [{"task": "sex", "difference": 0.1,
            "difference_ci": {"low": 0.0, "high": 0.2}, "delong": {"z": 2.0, "p_value": 0.04}}],
            "means": []});
        let d = differences(&cmp);
        assert_eq!((d[0].difference, d[0].p), (Some(0.1), Some(0.04)));
    }

    #[test]
    fn relative_paths_climb_and_descend() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("out");
        let b = dir.path().join("exp/figures/loss.png");
        std::fs::create_dir_all(&a).unwrap();
        assert_eq!(relative(&a, &b), PathBuf::from("../exp/figures/loss.png"));
    }
}
