//! `experiment.json`, typed: what an experiment directory holds (configurations, seeds, test
//! sets, the pairs compared), written by the pipelines (`pipelines/common.mk`). Fields a
//! pipeline may leave out have their defaults here; the others are required, and a file
//! without them is an error naming it.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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

    /// The experiment described by `path`.
    pub fn read(path: &Path) -> Result<Experiment> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let why = if e.is_data() {
                format!(
                    "{}: needs title, configs and seeds (written by the pipelines' \
                     experiment.json rule)",
                    path.display()
                )
            } else {
                format!("{} is not JSON", path.display())
            };
            anyhow::Error::new(e).context(why)
        })
    }
}
