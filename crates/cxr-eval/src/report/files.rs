//! The report types as files: `metrics.json` and `comparison.json` (the types serialized; what
//! `cxr-eval report` reads back, through [`ScoreReport::read`] and [`CompareReport::read`]) and
//! their CSV twins for spreadsheets and papers (one row per task and per mean). Writing and
//! reading live together so that the format has one home.

use super::types::{
    CompareReport, MeanComparison, MeanResult, ScoreReport, TaskComparison, TaskResult,
};
use anyhow::{Context, Result};
use cxr_core::atomic;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

const SCORE_COLUMNS: [&str; 10] = [
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
];

const COMPARE_COLUMNS: [&str; 14] = [
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
];

impl ScoreReport {
    /// `metrics.json` and `metrics.csv` in `dir`, written atomically.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(SCORE_COLUMNS)?;
        for t in &self.tasks {
            csv.write_record(score_task_row(t))?;
        }
        for m in &self.means {
            csv.write_record(score_mean_row(m))?;
        }
        write_pair(
            dir,
            "metrics",
            &serde_json::to_vec_pretty(self)?,
            &csv.into_inner()?,
        )
    }

    /// A `metrics.json` written by [`ScoreReport::write`]; any field missing or of the wrong
    /// type is an error naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path, "cxr-eval score's metrics")
    }
}

impl CompareReport {
    /// `comparison.json` and `comparison.csv` in `dir`, written atomically.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(COMPARE_COLUMNS)?;
        for t in &self.tasks {
            csv.write_record(compare_task_row(t))?;
        }
        for m in &self.means {
            csv.write_record(compare_mean_row(m))?;
        }
        write_pair(
            dir,
            "comparison",
            &serde_json::to_vec_pretty(self)?,
            &csv.into_inner()?,
        )
    }

    /// A `comparison.json` written by [`CompareReport::write`]; any field missing or of the
    /// wrong type is an error naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path, "cxr-eval compare's comparison")
    }
}

fn score_task_row(t: &TaskResult) -> [String; 10] {
    [
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
    ]
}

fn score_mean_row(m: &MeanResult) -> [String; 10] {
    [
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
    ]
}

fn compare_task_row(t: &TaskComparison) -> [String; 14] {
    [
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
    ]
}

fn compare_mean_row(m: &MeanComparison) -> [String; 14] {
    [
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
    ]
}

/// An empty CSV cell for `None`.
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

/// `path` read as `what` (a report type), every error naming the file.
fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let why = if e.is_data() {
            format!("{}: not {what}", path.display())
        } else {
            format!("{} is not JSON", path.display())
        };
        anyhow::Error::new(e).context(why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Bootstrap;
    use crate::labels::{Aggregate, EvalSet, SplitCount, Task, TaskData, TaskKind};
    use crate::report::{compare, score, setup};
    use cxr_core::{Observation, Split};

    /// 40 studies of 20 patients (two each), two observations with some unknown labels.
    fn set(noise: usize) -> EvalSet {
        let task = |name: &str, shift: usize| {
            let positive = |i: usize| (i + shift).is_multiple_of(3);
            TaskData {
                task: Task {
                    column: name.into(),
                    kind: TaskKind::Pathology(Observation::parse(name).unwrap()),
                },
                labels: (0..40)
                    .map(|i| (i % 7 != 3).then_some(positive(i)))
                    .collect(),
                scores: (0..40)
                    .map(|i| f64::from(u8::from(positive(i))) + ((i * noise) % 5) as f64 / 4.0)
                    .collect(),
            }
        };
        EvalSet {
            aggregate: Aggregate::StudyMax,
            unit_ids: (0..40).map(|i| format!("s{i}")).collect(),
            unit_patient: (0..40).map(|i| i / 2).collect(),
            patient_ids: (0..20).map(|i| format!("p{i}")).collect(),
            n_images: 80,
            datasets: vec![cxr_core::Dataset::Chexpert],
            unlabelled: Vec::new(),
            splits: vec![SplitCount {
                split: Split::Valid,
                images: 80,
                first: (0, "i0".into()),
            }],
            tasks: vec![task("Edema", 0), task("Atelectasis", 1)],
        }
    }

    fn setup_of(set: &EvalSet) -> crate::report::Setup {
        let bootstrap = Bootstrap {
            replicates: 200,
            ..Bootstrap::DEFAULT
        };
        let policy = cxr_core::LabelPolicy::evaluation();
        setup(set, Path::new("m.parquet"), &policy, Some(bootstrap), 3)
    }

    /// What `write` wrote, `read` reads back whole: serialized again, it is the same JSON (as
    /// serde_json parses numbers: without its `float_roundtrip` feature the last digit of an
    /// `f64` may differ from the written one, in the old untyped reading as here). Without a
    /// field it is an error naming the file and the field.
    #[test]
    fn reports_read_back_as_written_and_refuse_a_missing_field() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (set(1), set(3));
        let scored = score(&a, Path::new("a.parquet"), setup_of(&a), vec!["age".into()]);
        let compared = compare(
            &a,
            &b,
            (Path::new("a.parquet"), Path::new("b.parquet")),
            setup_of(&a),
            (vec!["Mass".into()], Vec::new()),
        );
        assert!(scored.tasks.iter().all(|t| t.ci.is_some()), "{scored:?}");
        assert!(
            compared.tasks.iter().all(|t| t.delong.is_some()),
            "{compared:?}"
        );
        scored.write(dir.path()).unwrap();
        compared.write(dir.path()).unwrap();
        let metrics = dir.path().join("metrics.json");
        let comparison = dir.path().join("comparison.json");
        let bytes = |p: &Path| std::fs::read(p).unwrap();
        let json = |p: &Path| serde_json::from_slice::<serde_json::Value>(&bytes(p)).unwrap();
        let again = serde_json::to_value(ScoreReport::read(&metrics).unwrap()).unwrap();
        assert_eq!(again, json(&metrics));
        let again = serde_json::to_value(CompareReport::read(&comparison).unwrap()).unwrap();
        assert_eq!(again, json(&comparison));
        for (path, field) in [
            (&metrics, "min_positives"),
            (&metrics, "bootstrap"),
            (&comparison, "aggregate"),
        ] {
            let mut without = json(path);
            without.as_object_mut().unwrap().remove(field);
            std::fs::write(path, without.to_string()).unwrap();
            let e = if path.ends_with("metrics.json") {
                ScoreReport::read(path).map(drop)
            } else {
                CompareReport::read(path).map(drop)
            };
            let e = format!("{:#}", e.unwrap_err());
            assert!(e.starts_with(&format!("{}: not ", path.display())), "{e}");
            assert!(e.contains(&format!("missing field `{field}`")), "{e}");
        }
        std::fs::write(&metrics, "{").unwrap();
        let e = format!("{:#}", ScoreReport::read(&metrics).unwrap_err());
        assert!(
            e.starts_with(&format!("{} is not JSON", metrics.display())),
            "{e}"
        );
    }
}
