//! AUCs against scikit-learn's, from the shared golden files (`$CXR_SHARED/golden/auc`, see
//! `cxr_core::testdata`): heavy ties, a single positive, negative logits, single-class cases
//! (undefined), CheXpert-sized columns and 20,000 rows with two-decimal scores.

use cxr_core::testdata::{shared_dir, shared_path};
use cxr_eval::auc::{roc_auc, RocCurve};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    shared_path("golden/auc/auc_cases.csv");
    shared_path("golden/auc/auc_expected.json");
    shared_dir().join("golden/auc")
}

type Cases = BTreeMap<String, (Vec<bool>, Vec<f64>)>;

fn cases() -> (Cases, serde_json::Value) {
    let dir = golden_dir();
    let mut reader = csv::Reader::from_path(dir.join("auc_cases.csv")).unwrap();
    let mut cases: Cases = BTreeMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        let case = cases.entry(record[0].to_string()).or_default();
        case.0.push(match &record[1] {
            "1" => true,
            "0" => false,
            other => panic!("label {other}"),
        });
        case.1.push(record[2].parse().unwrap());
    }
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("auc_expected.json")).unwrap())
            .unwrap();
    (cases, expected)
}

#[test]
fn every_golden_case_agrees_with_scikit_learn() {
    let (cases, expected) = cases();
    let mut checked = 0;
    for (name, (labels, scores)) in &cases {
        let want = expected[name]["auc"].as_f64();
        let got = roc_auc(labels, scores);
        match (want, got) {
            (None, None) => {}
            (Some(w), Some(g)) => {
                assert!((w - g).abs() <= 1e-12, "{name}: sklearn {w}, cxr-eval {g}")
            }
            _ => panic!("{name}: sklearn {want:?}, cxr-eval {got:?}"),
        }
        // The drawn curve has the same area.
        let known: Vec<Option<bool>> = labels.iter().map(|&l| Some(l)).collect();
        if let (Some(w), Some(curve)) = (want, RocCurve::new(&known, scores)) {
            assert!(
                (curve.area() - w).abs() <= 1e-12,
                "{name}: curve area {}",
                curve.area()
            );
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} golden cases found");
    assert!(
        expected["single_class_pos"]["auc"].is_null() && cases.contains_key("single_class_pos")
    );
}

#[test]
fn mean_over_defined_columns_matches_nanmean() {
    let (cases, expected) = cases();
    let matrix = &expected["_n234_matrix"];
    let aucs: Vec<Option<f64>> = matrix["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (l, s) = &cases[c.as_str().unwrap()];
            roc_auc(l, s)
        })
        .collect();
    assert_eq!(
        aucs.iter().filter(|a| a.is_none()).count(),
        1,
        "n234_col00 has no positive"
    );
    let defined: Vec<f64> = aucs.into_iter().flatten().collect();
    let mean = defined.iter().sum::<f64>() / defined.len() as f64;
    let want = matrix["nanmean_defined_columns"].as_f64().unwrap();
    assert!((mean - want).abs() <= 1e-12, "{mean} vs {want}");
}
