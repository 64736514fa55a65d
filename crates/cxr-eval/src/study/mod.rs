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
//!
//! Reading is kept apart from writing Markdown: `experiment.rs` types `experiment.json`;
//! `load.rs` reads a directory's files into typed numbers (score and compare results through
//! [`crate::report`]'s own types, so the files have one definition and a malformed one is an
//! error naming it); `numbers.rs` holds those numbers and the arithmetic over them (age MAE,
//! agreement over seeds); `render.rs` turns them into the report's Markdown.

mod experiment;
mod load;
mod numbers;
mod render;

pub use experiment::{Experiment, TestSet};
pub use numbers::{
    age_mae, agreement, differences, endpoints, Agreement, Difference, Endpoint, Metric, RunNumbers,
};

use anyhow::{Context, Result};
use cxr_core::atomic;
use std::path::{Path, PathBuf};

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
        let loaded = load::load(dir)?;
        render::section(&loaded, &report_dir, &mut text);
    }
    atomic::write_bytes(out, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::render::{describe, relative};
    use super::*;
    use crate::bootstrap::Interval;
    use crate::delong::DeLong;
    use crate::labels::Aggregate;
    use crate::report::{
        CompareReport, MeanResult, Observations, ScoreReport, Setup, TaskComparison, TaskResult,
    };
    use cxr_core::predictions::Predictions;
    use cxr_core::Manifest;

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
        assert_eq!(e.metric, Metric::AgeMae { images: 4 });
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

    fn setup() -> Setup {
        Setup {
            manifest: "m.parquet".into(),
            policy: "u-ignore".into(),
            aggregate: Aggregate::Image,
            n_images: 92,
            splits: [("test".to_string(), 92)].into(),
            n_units: 92,
            n_patients: 92,
            bootstrap: None,
            min_positives: 10,
            observations: Observations {
                datasets: vec!["chexpert".into()],
                shared: Vec::new(),
                unlabelled: Vec::new(),
            },
        }
    }

    fn interval(low: f64, high: f64) -> Option<Interval> {
        Some(Interval {
            low,
            high,
            replicates_used: 1000,
        })
    }

    fn task(name: &str, auc: f64, ci: Option<Interval>, counts: (usize, usize)) -> TaskResult {
        TaskResult {
            task: name.into(),
            column: name.into(),
            n: counts.0 + counts.1,
            n_pos: counts.0,
            n_neg: counts.1,
            auc: Some(auc),
            ci,
            too_few: counts.0.min(counts.1) < 10,
        }
    }

    fn score(tasks: Vec<TaskResult>, means: Vec<MeanResult>) -> ScoreReport {
        ScoreReport {
            predictions: "p.parquet".into(),
            setup: setup(),
            too_few: tasks
                .iter()
                .filter(|t| t.too_few)
                .map(|t| t.task.clone())
                .collect(),
            tasks,
            undefined: Vec::new(),
            means,
            skipped_columns: Vec::new(),
        }
    }

    #[test]
    fn endpoints_prefer_means_and_fall_back_to_tasks() {
        let with_means = score(
            vec![
                task("Edema", 0.8, interval(0.7, 0.9), (12, 80)),
                task("Mass", 0.6, None, (3, 89)),
            ],
            vec![MeanResult {
                name: "all 1 defined observations".into(),
                tasks: vec!["Edema".into()],
                auc: 0.8,
                ci: interval(0.7, 0.9),
            }],
        );
        let (head, tasks) = endpoints(&with_means);
        assert_eq!(head.len(), 1);
        assert_eq!(head[0].ci, Some((0.7, 0.9)));
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].counts, Some((12, 80)));
        assert!(!tasks[0].too_few && tasks[1].too_few);
        assert_eq!(tasks[1].trivial, Some(0.5));
        let view = score(
            vec![task("view (PA vs AP)", 0.9, None, (61, 14))],
            Vec::new(),
        );
        let (head, tasks) = endpoints(&view);
        assert_eq!(head, tasks);
        let cmp = CompareReport {
            a: "a.parquet".into(),
            b: "b.parquet".into(),
            setup: setup(),
            tasks: vec![TaskComparison {
                task: "sex".into(),
                n: 92,
                n_pos: 40,
                n_neg: 52,
                auc_a: Some(0.8),
                auc_b: Some(0.7),
                difference: Some(0.1),
                delong: Some(DeLong {
                    auc_a: 0.8,
                    auc_b: 0.7,
                    var_a: 0.001,
                    var_b: 0.001,
                    covariance: 0.0,
                    z: 2.0,
                    p_value: 0.04,
                }),
                p_holm: None,
                difference_ci: interval(0.0, 0.2),
                too_few: false,
            }],
            means: Vec::new(),
            only_in_a: Vec::new(),
            only_in_b: Vec::new(),
        };
        let d = differences(&cmp);
        assert_eq!((d[0].difference, d[0].p), (Some(0.1), Some(0.04)));
    }

    /// A `metrics.json` that is not what `cxr-eval score` writes (here: a task without its
    /// `auc`) fails the report with an error naming the file and the field, where it once
    /// showed `?` and `n/a`.
    #[test]
    fn a_malformed_metrics_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path().join("exp");
        let run = exp.join("eval/test/base__s0");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            exp.join("experiment.json"),
            r#"{"title": "T", "configs": ["base"], "seeds": [0]}"#,
        )
        .unwrap();
        let mut json = serde_json::to_value(score(
            vec![task("Edema", 0.8, interval(0.7, 0.9), (12, 80))],
            Vec::new(),
        ))
        .unwrap();
        let out = dir.path().join("report.md");
        // As written, the file reads back.
        std::fs::write(run.join("metrics.json"), json.to_string()).unwrap();
        write_report(std::slice::from_ref(&exp), "T", None, &out).unwrap();
        json["tasks"][0].as_object_mut().unwrap().remove("auc");
        std::fs::write(run.join("metrics.json"), json.to_string()).unwrap();
        let e = format!(
            "{:#}",
            write_report(std::slice::from_ref(&exp), "T", None, &out).unwrap_err()
        );
        assert!(e.contains("eval/test/base__s0/metrics.json: "), "{e}");
        assert!(e.contains("missing field `auc`"), "{e}");
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
