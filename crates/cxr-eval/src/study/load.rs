//! Reading an experiment directory into typed numbers: `experiment.json`, every run's
//! `metrics.json` (or, for age, its predictions) and every pair's `comparison.json`, per test
//! set, and the figures. A file that is there must be read whole or the report fails naming
//! it; a file that is not there is recorded as missing, never skipped silently.

use super::experiment::{Experiment, TestSet};
use super::numbers::{age_mae, differences, endpoints, Difference, Endpoint, RunNumbers};
use crate::report::{CompareReport, Observations, ScoreReport};
use anyhow::Result;
use cxr_core::predictions::Predictions;
use cxr_core::Manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything read for one experiment.
pub(super) struct Loaded {
    pub exp: Experiment,
    /// The PNG figures under `figures/`, as [`figures`] lists them.
    pub figures: Vec<PathBuf>,
    /// The pairs compared, as [`Experiment::pairs`] gives them.
    pub pairs: Vec<[String; 2]>,
    /// One entry per test set.
    pub sets: Vec<SetNumbers>,
    /// Files expected but absent, in the order looked for.
    pub missing: Vec<PathBuf>,
}

/// What was read for one test set.
pub(super) struct SetNumbers {
    pub set: TestSet,
    /// `[config][seed]` headline numbers and per-task AUCs (`None`: missing file).
    pub runs: Vec<Vec<Option<RunNumbers>>>,
    /// `[pair][seed]` comparisons.
    pub diffs: Vec<Vec<Option<Vec<Difference>>>>,
    /// The scoring's rule for leaving tasks out of means (from the first `metrics.json`).
    pub min_positives: Option<usize>,
    /// The manifest splits of the scored images (`metrics.json`'s `splits`: images per split),
    /// each different one once. Several mean the runs scored different images.
    pub splits: Vec<BTreeMap<String, usize>>,
    /// The observations scored and left out (`metrics.json`'s `observations`), each different
    /// one once: on another dataset than the training one, what the means are over.
    pub observations: Vec<Observations>,
}

impl SetNumbers {
    /// Every run's numbers, configuration by configuration, seed by seed; missing ones skipped.
    fn present(&self) -> impl Iterator<Item = &RunNumbers> {
        self.runs.iter().flatten().flatten()
    }

    /// Each different headline endpoint once, in the order of the first run that has it, as
    /// that run reports it.
    pub fn headlines(&self) -> Vec<&Endpoint> {
        let mut firsts: Vec<&Endpoint> = Vec::new();
        for e in self.present().flat_map(|(headline, _)| headline) {
            if !firsts.iter().any(|f| f.same(e)) {
                firsts.push(e);
            }
        }
        firsts
    }

    /// The per-task AUCs shown behind means: each task once, in the order of the first run
    /// whose headline numbers are means (not its tasks themselves).
    pub fn tasks_behind_means(&self) -> Vec<&str> {
        let mut tasks: Vec<&str> = Vec::new();
        for run in self.present().filter(|run| run.0 != run.1) {
            for t in &run.1 {
                if !tasks.contains(&t.name.as_str()) {
                    tasks.push(&t.name);
                }
            }
        }
        tasks
    }

    /// The first run's per-task AUC of `task`.
    pub fn first_task(&self, task: &str) -> Option<&Endpoint> {
        self.present()
            .flat_map(|(_, tasks)| tasks)
            .find(|e| e.name == task)
    }
}

fn run_name(config: &str, seed: u64) -> String {
    format!("{config}__s{seed}")
}

/// The folder of a comparison of `a` against `b` (pipelines/common.mk names it the same way).
fn pair_name([a, b]: &[String; 2], seed: u64) -> String {
    run_name(&format!("{a}_vs_{b}"), seed)
}

/// Everything the report of the experiment in `dir` shows.
pub(super) fn load(dir: &Path) -> Result<Loaded> {
    let exp = Experiment::read(&dir.join("experiment.json"))?;
    let manifest = match &exp.manifest {
        Some(m) if m.exists() => Some(Manifest::read(m)?),
        _ => None,
    };
    let pairs = exp.pairs();
    let mut missing = Vec::new();
    let mut sets = Vec::new();
    for set in exp.sets() {
        let mut read = SetReader {
            eval: dir.join("eval").join(&set.name),
            preds: dir.join("preds").join(&set.name),
            compare: dir.join("compare").join(&set.name),
            manifest: manifest.as_ref(),
            missing: &mut missing,
        };
        sets.push(read.set(&exp, &pairs, set)?);
    }
    Ok(Loaded {
        figures: figures(&dir.join("figures")),
        exp,
        pairs,
        sets,
        missing,
    })
}

/// Reads the files of one test set; missing ones are added to `missing`.
struct SetReader<'a> {
    /// `eval/T`, `preds/T` and `compare/T` of the experiment.
    eval: PathBuf,
    preds: PathBuf,
    compare: PathBuf,
    manifest: Option<&'a Manifest>,
    missing: &'a mut Vec<PathBuf>,
}

impl SetReader<'_> {
    /// The scores and comparisons of one test set.
    fn set(&mut self, exp: &Experiment, pairs: &[[String; 2]], set: TestSet) -> Result<SetNumbers> {
        let mut numbers = SetNumbers {
            set,
            runs: Vec::new(),
            diffs: Vec::new(),
            min_positives: None,
            splits: Vec::new(),
            observations: Vec::new(),
        };
        for config in &exp.configs {
            let mut row = Vec::new();
            for &seed in &exp.seeds {
                row.push(self.run(&run_name(config, seed), &mut numbers)?);
            }
            numbers.runs.push(row);
        }
        for pair in pairs {
            let mut row = Vec::new();
            for &seed in &exp.seeds {
                row.push(self.comparison(&pair_name(pair, seed))?);
            }
            numbers.diffs.push(row);
        }
        Ok(numbers)
    }

    /// A run's numbers: from its `metrics.json`, else (age) from its predictions; the scoring
    /// rule and splits of a `metrics.json` are noted in `numbers`.
    fn run(&mut self, name: &str, numbers: &mut SetNumbers) -> Result<Option<RunNumbers>> {
        let metrics = self.eval.join(name).join("metrics.json");
        let preds = self.preds.join(format!("{name}.parquet"));
        let entry = if metrics.exists() {
            let report = ScoreReport::read(&metrics)?;
            let setup = &report.setup;
            numbers.min_positives = numbers.min_positives.or(Some(setup.min_positives));
            if !numbers.splits.contains(&setup.splits) {
                numbers.splits.push(setup.splits.clone());
            }
            if !numbers.observations.contains(&setup.observations) {
                numbers.observations.push(setup.observations.clone());
            }
            Some(endpoints(&report))
        } else if let (true, Some(m)) = (preds.exists(), self.manifest) {
            let p = Predictions::read(&preds)?;
            age_mae(&p, m).map(|e| (vec![e], Vec::new()))
        } else {
            None
        };
        if entry.is_none() {
            self.missing.push(metrics);
        }
        Ok(entry)
    }

    /// A pair's differences in one seed, from its `comparison.json`.
    fn comparison(&mut self, name: &str) -> Result<Option<Vec<Difference>>> {
        let path = self.compare.join(name).join("comparison.json");
        if !path.exists() {
            self.missing.push(path);
            return Ok(None);
        }
        Ok(Some(differences(&CompareReport::read(&path)?)))
    }
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
