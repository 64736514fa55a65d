//! The patient-clustered DeLong test (Obuchowski 1997) against golden numbers computed
//! independently by `tests/fixtures/auc/clustered/make_clustered.py`: a plain O(M N) numpy
//! implementation of the paper's formulas with a direct psi(x, y) comparison, no midranks. Re-run
//! the script to regenerate `clustered_delong.golden.json`.

use cxr_core::Observation;
use cxr_eval::delong::{clustered_paired_test, paired_test, DeLong};
use cxr_eval::labels::{Aggregate, EvalSet, Task, TaskData, TaskKind};
use cxr_eval::report::{self, Setup};
use serde_json::Value;
use std::path::{Path, PathBuf};

struct Case {
    name: String,
    labels: Vec<bool>,
    a: Vec<f64>,
    b: Vec<f64>,
    clusters: Vec<usize>,
    clustered: Value,
    unclustered: Value,
}

fn cases() -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/auc/clustered/clustered_delong.golden.json");
    let json: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let cases: Vec<Case> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            labels: c["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_bool().unwrap())
                .collect(),
            a: floats(&c["a"]),
            b: floats(&c["b"]),
            clusters: c["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect(),
            clustered: c["clustered"].clone(),
            unclustered: c["unclustered"].clone(),
        })
        .collect();
    assert_eq!(cases.len(), 3, "the script writes three data sets");
    cases
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-10 * want.abs().max(1e-3)
}

fn assert_matches(case: &str, got: &DeLong, want: &Value) {
    for (field, value) in [
        ("auc_a", got.auc_a),
        ("auc_b", got.auc_b),
        ("var_a", got.var_a),
        ("var_b", got.var_b),
        ("covariance", got.covariance),
        ("se_difference", got.se_difference()),
        ("z", got.z),
        ("p_value", got.p_value),
    ] {
        let expected = want[field].as_f64().unwrap();
        assert!(
            close(value, expected),
            "{case}: {field} cxr-eval {value}, numpy {expected}"
        );
    }
}

#[test]
fn clustered_test_matches_the_independent_numpy_computation() {
    for c in cases() {
        let got = clustered_paired_test(&c.labels, &c.a, &c.b, &c.clusters).unwrap();
        assert_matches(&c.name, &got, &c.clustered);
    }
}

#[test]
fn unclustered_test_matches_the_same_numpy_script() {
    for c in cases() {
        let got = paired_test(&c.labels, &c.a, &c.b).unwrap();
        assert_matches(&c.name, &got, &c.unclustered);
    }
}

#[test]
fn one_unit_per_patient_reduces_to_delong() {
    let c = cases().pop().unwrap();
    let mut distinct = c.clusters.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), c.labels.len(), "{}", c.name);
    let clustered = clustered_paired_test(&c.labels, &c.a, &c.b, &c.clusters).unwrap();
    let plain = paired_test(&c.labels, &c.a, &c.b).unwrap();
    // Equal up to rounding: the formulas coincide, the order of the arithmetic does not.
    for (got, want) in [
        (clustered.var_a, plain.var_a),
        (clustered.var_b, plain.var_b),
        (clustered.covariance, plain.covariance),
        (clustered.z, plain.z),
        (clustered.p_value, plain.p_value),
    ] {
        assert!((got - want).abs() <= 1e-14 * want.abs(), "{got} vs {want}");
    }
    // The independent script agrees with itself too.
    assert_matches(&c.name, &clustered, &c.unclustered);
}

#[test]
fn several_correlated_images_per_patient_widen_the_standard_error() {
    let cases = cases();
    for c in &cases[..2] {
        let clustered = clustered_paired_test(&c.labels, &c.a, &c.b, &c.clusters).unwrap();
        let plain = paired_test(&c.labels, &c.a, &c.b).unwrap();
        assert_eq!(
            (clustered.auc_a, clustered.auc_b),
            (plain.auc_a, plain.auc_b)
        );
        assert!(
            clustered.var_a > plain.var_a,
            "{}: SE(A) clustered {} <= unclustered {}",
            c.name,
            clustered.var_a.sqrt(),
            plain.var_a.sqrt()
        );
        assert!(
            clustered.se_difference() > plain.se_difference(),
            "{}: SE(A - B) clustered {} <= unclustered {}",
            c.name,
            clustered.se_difference(),
            plain.se_difference()
        );
        assert!(clustered.p_value > plain.p_value, "{}", c.name);
    }
    // The second data set: significant at 0.001 by images, not by patients.
    let c = &cases[1];
    let plain = paired_test(&c.labels, &c.a, &c.b).unwrap();
    let clustered = clustered_paired_test(&c.labels, &c.a, &c.b, &c.clusters).unwrap();
    assert!(
        plain.p_value < 1e-3 && clustered.p_value > 1e-2,
        "{}: p {} by images, {} by patients",
        c.name,
        plain.p_value,
        clustered.p_value
    );
}

/// The first data set as an `EvalSet` of one task, patients renumbered 0.. as `labels::join`
/// does; model B's set has B's scores on the same units.
fn eval_set(c: &Case, scores: &[f64]) -> EvalSet {
    let mut patients: Vec<usize> = c.clusters.clone();
    patients.sort_unstable();
    patients.dedup();
    let unit_patient = c
        .clusters
        .iter()
        .map(|p| patients.binary_search(p).unwrap() as u32)
        .collect();
    // One unlabelled unit (uncertain or missing): left out of the test with its patient's others.
    let mut labels: Vec<Option<bool>> = c.labels.iter().copied().map(Some).collect();
    labels[0] = None;
    EvalSet {
        aggregate: Aggregate::Image,
        unit_ids: (0..c.labels.len()).map(|i| format!("img{i}")).collect(),
        unit_patient,
        patient_ids: patients.iter().map(|p| format!("p{p}")).collect(),
        n_images: c.labels.len(),
        datasets: vec![cxr_core::Dataset::Chexpert],
        unlabelled: Vec::new(),
        splits: Vec::new(),
        tasks: vec![TaskData {
            task: Task {
                column: "Edema".to_string(),
                kind: TaskKind::Pathology(Observation::parse("Edema").unwrap()),
            },
            labels,
            scores: scores.to_vec(),
        }],
    }
}

#[test]
fn compare_reports_the_patient_clustered_test() {
    let c = cases().swap_remove(0);
    let (a, b) = (eval_set(&c, &c.a), eval_set(&c, &c.b));
    let setup: Setup = report::setup(
        &a,
        Path::new("m.parquet"),
        &cxr_core::LabelPolicy::evaluation(),
        None,
        1,
    );
    let r = report::compare(
        &a,
        &b,
        (Path::new("a"), Path::new("b")),
        setup,
        (Vec::new(), Vec::new()),
    );
    let got = r.tasks[0].delong.unwrap();
    let n = c.labels.len();
    let want = clustered_paired_test(&c.labels[1..], &c.a[1..], &c.b[1..], &c.clusters[1..]);
    assert_eq!(Some(got), want);
    assert_ne!(Some(got), paired_test(&c.labels[1..], &c.a[1..], &c.b[1..]));
    assert_eq!(r.tasks[0].n, n - 1);
    let json = serde_json::to_value(&r.tasks[0]).unwrap();
    assert_eq!(json["delong"]["p_value"].as_f64(), Some(got.p_value));
}
