//! cxr-eval's DeLong test and patient bootstrap against numbers computed independently with
//! numpy, scipy and scikit-learn by `tests/reference/eval_check.py` (DeLong by the O(mn) placement matrix;
//! each bootstrap replicate's AUC by `roc_auc_score` with sample weights, the interval by
//! `numpy.percentile`, the draws by a Python SplitMix64). Re-run the script to regenerate.

use cxr_core::Observation;
use cxr_eval::bootstrap::Bootstrap;
use cxr_eval::delong::paired_test;
use cxr_eval::labels::{Aggregate, EvalSet, Task, TaskData, TaskKind};
use cxr_eval::report::{self, Setup};
use std::path::Path;

const DELONG_AUC_A: f64 = 0.7384259259259259;
const DELONG_AUC_B: f64 = 0.6655092592592593;
const DELONG_VAR_A: f64 = 0.004165242206204363;
const DELONG_VAR_B: f64 = 0.005123867487368895;
const DELONG_COV: f64 = 0.0010956563807308576;
const DELONG_Z: f64 = 0.8654959140896288;
const DELONG_P: f64 = 0.3867666575778228;
const BOOT_A1_LOW: f64 = 0.6117331464987715;
const BOOT_A1_HIGH: f64 = 0.8529750786289249;
const BOOT_A1_USED: usize = 2000;
const BOOT_MEAN_DIFF_LOW: f64 = -0.013015704158912351;
const BOOT_MEAN_DIFF_HIGH: f64 = 0.17457329916305972;
const BOOT_MEAN_DIFF_P: f64 = 0.09895052473763119;
const BOOT_MEAN_DIFF_USED: usize = 2000;

const N: usize = 60;
const PATIENTS: usize = 25;

/// The data of `tests/reference/eval_check.py`: 60 units of 25 patients, two tasks, models A and B.
fn data() -> [(Vec<bool>, Vec<f64>, Vec<f64>); 2] {
    let lab1: Vec<bool> = (0..N).map(|i| (i * 7) % 5 < 2).collect();
    let lab2: Vec<bool> = (0..N).map(|i| (i * 3) % 4 == 0).collect();
    let shift = |l: bool, d: f64| if l { d } else { 0.0 };
    let a1 = (0..N)
        .map(|i| ((i * 13) % 17) as f64 / 17.0 + shift(lab1[i], 0.25))
        .collect();
    let a2 = (0..N)
        .map(|i| ((i * 11) % 23) as f64 / 23.0 + shift(lab2[i], 0.15))
        .collect();
    let b1 = (0..N)
        .map(|i| ((i * 5) % 19) as f64 / 19.0 + shift(lab1[i], 0.2))
        .collect();
    let b2 = (0..N)
        .map(|i| ((i * 11) % 23) as f64 / 23.0 + shift(lab2[i], 0.05))
        .collect();
    [(lab1, a1, b1), (lab2, a2, b2)]
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 * want.abs().max(1e-3)
}

#[test]
fn delong_matches_the_placement_matrix_computation() {
    let [(labels, a, b), _] = data();
    let t = paired_test(&labels, &a, &b).unwrap();
    for (name, got, want) in [
        ("auc_a", t.auc_a, DELONG_AUC_A),
        ("auc_b", t.auc_b, DELONG_AUC_B),
        ("var_a", t.var_a, DELONG_VAR_A),
        ("var_b", t.var_b, DELONG_VAR_B),
        ("cov", t.covariance, DELONG_COV),
        ("z", t.z, DELONG_Z),
        ("p", t.p_value, DELONG_P),
    ] {
        assert!(
            close(got, want),
            "{name}: cxr-eval {got}, numpy/scipy {want}"
        );
    }
}

fn eval_set(models: usize) -> EvalSet {
    let tasks = data()
        .into_iter()
        .zip(["Edema", "Atelectasis"])
        .map(|((labels, a, b), name)| TaskData {
            task: Task {
                column: name.to_string(),
                kind: TaskKind::Pathology(Observation::parse(name).unwrap()),
            },
            labels: labels.into_iter().map(Some).collect(),
            scores: if models == 0 { a } else { b },
        })
        .collect();
    EvalSet {
        aggregate: Aggregate::Image,
        unit_ids: (0..N).map(|i| format!("img{i}")).collect(),
        unit_patient: (0..N).map(|i| (i * PATIENTS / N) as u32).collect(),
        patient_ids: (0..PATIENTS).map(|p| format!("p{p}")).collect(),
        n_images: N,
        datasets: vec![cxr_core::Dataset::Chexpert],
        unlabelled: Vec::new(),
        splits: Vec::new(),
        tasks,
    }
}

fn setup(set: &EvalSet) -> Setup {
    let cfg = Bootstrap {
        replicates: 2000,
        seed: 42,
        level: 0.95,
    };
    report::setup(
        set,
        Path::new("m.parquet"),
        &cxr_core::LabelPolicy::evaluation(),
        Some(cfg),
        // The reference means average every task with an AUC.
        1,
    )
}

#[test]
fn bootstrap_interval_matches_numpy_and_scikit_learn() {
    let a = eval_set(0);
    let r = report::score(&a, Path::new("a.parquet"), setup(&a), Vec::new());
    let ci = r.tasks[0].ci.unwrap();
    assert!(
        close(ci.low, BOOT_A1_LOW) && close(ci.high, BOOT_A1_HIGH),
        "{ci:?}"
    );
    assert_eq!(ci.replicates_used, BOOT_A1_USED);
}

#[test]
fn paired_bootstrap_of_mean_difference_matches_numpy_and_scikit_learn() {
    let (a, b) = (eval_set(0), eval_set(1));
    let r = report::compare(
        &a,
        &b,
        (Path::new("a"), Path::new("b")),
        setup(&a),
        (Vec::new(), Vec::new()),
    );
    // Both tasks are competition tasks, so one mean covers them (a second would repeat it).
    assert_eq!(r.means.len(), 1);
    let mean = &r.means[0];
    assert_eq!(mean.name, "CheXpert competition (2 of 5)");
    assert_eq!(mean.tasks, ["Atelectasis", "Edema"]);
    let ci = mean.difference_ci.unwrap();
    assert!(
        close(ci.low, BOOT_MEAN_DIFF_LOW) && close(ci.high, BOOT_MEAN_DIFF_HIGH),
        "{ci:?}"
    );
    assert_eq!(ci.replicates_used, BOOT_MEAN_DIFF_USED);
    assert!(
        close(mean.p_value.unwrap(), BOOT_MEAN_DIFF_P),
        "{:?}",
        mean.p_value
    );
    // The report's per-task test is DeLong clustered by patient (checked against its own
    // independent computation in clustered_delong.rs), on these units' patients.
    let [(labels, xa, xb), _] = data();
    let patients: Vec<usize> = a.unit_patient.iter().map(|&p| p as usize).collect();
    assert_eq!(
        r.tasks[0].delong,
        cxr_eval::delong::clustered_paired_test(&labels, &xa, &xb, &patients)
    );
}
