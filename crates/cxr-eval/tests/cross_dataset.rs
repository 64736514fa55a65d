//! A CheXpert model scored on NIH ChestX-ray14 through the `cxr-eval` binary: the manifest holds
//! NIH's real labels (the shared folder's unmodified `Data_Entry_2017_v2020.csv.gz`) for the
//! images bundled with it; the predictions are synthetic scores for CheXpert's 14 observations,
//! as `cxr-train predict` names them. What is checked: exactly the observations both datasets
//! label are scored, named in the table, `metrics.json` and `cxr-eval report`; each AUC is the
//! AUC of that column against the label file's own findings; an observation with no positive
//! among the scored images is reported as such, never as a number.

use cxr_core::auc::roc_auc;
use cxr_core::hash::{splitmix64, unit_interval};
use cxr_core::predictions::Predictions;
use cxr_core::testdata::shared_path;
use cxr_core::{
    Dataset, LabelState, Manifest, ManifestRow, Observation, Projection, Split, CHEXPERT_14,
};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::{Command, Output};

/// What CheXpert's model and NIH share, in CheXpert's order.
const SHARED: [&str; 8] = [
    "No Finding",
    "Cardiomegaly",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
];
const CHEXPERT_ONLY: [&str; 6] = [
    "Enlarged Cardiomediastinum",
    "Lung Opacity",
    "Lung Lesion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// One image's row of NIH's label file.
struct NihImage {
    id: String,
    patient: String,
    follow_up: String,
    projection: Projection,
    /// `Finding Labels`, split at `|`, as NIH spells them (`Effusion`, `No Finding`).
    findings: Vec<String>,
}

impl NihImage {
    /// Whether the label file lists a finding that is `o` (NIH's `Effusion` is CheXpert's
    /// `Pleural Effusion`).
    fn has(&self, o: Observation) -> bool {
        self.findings
            .iter()
            .any(|f| Observation::parse(f).unwrap() == o)
    }
}

/// The label file's rows for `images`, and every name its `Finding Labels` column uses.
fn label_file(images: &HashSet<String>) -> (Vec<NihImage>, BTreeSet<String>) {
    let file = std::fs::File::open(shared_path("data/nih/Data_Entry_2017_v2020.csv.gz")).unwrap();
    // The header has 11 tokens for 9 columns; the first seven are the ones read here.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(flate2::read::GzDecoder::new(file));
    let (mut rows, mut vocabulary) = (Vec::new(), BTreeSet::new());
    for record in reader.records() {
        let record = record.unwrap();
        let findings: Vec<String> = record[1].split('|').map(str::to_string).collect();
        vocabulary.extend(findings.iter().cloned());
        if images.contains(&record[0]) {
            rows.push(NihImage {
                id: record[0].to_string(),
                follow_up: record[2].to_string(),
                patient: record[3].to_string(),
                projection: Projection::parse(&record[6]).unwrap(),
                findings,
            });
        }
    }
    assert_eq!(rows.len(), images.len(), "every bundled image has a row");
    (rows, vocabulary)
}

/// The image file names in `data/nih/<folder>`.
fn bundled(folder: &str) -> HashSet<String> {
    std::fs::read_dir(shared_path(&format!("data/nih/{folder}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// NIH rows as a manifest: every name of the label file's vocabulary negative unless listed.
fn manifest(images: &[NihImage], vocabulary: &BTreeSet<String>) -> Manifest {
    let rows = images
        .iter()
        .map(|image| {
            let mut row = ManifestRow {
                projection: image.projection,
                split: Split::Official,
                ..ManifestRow::unlabelled(
                    Dataset::Nih,
                    &image.id,
                    &image.id,
                    &image.patient,
                    &format!("{}/{}", image.patient, image.follow_up),
                )
            };
            for name in vocabulary {
                let o = Observation::parse(name).unwrap();
                row.labels[o.index()] = if image.findings.contains(name) {
                    LabelState::Positive
                } else {
                    LabelState::Negative
                };
            }
            row
        })
        .collect();
    Manifest { rows }
}

/// Scores for CheXpert's 14 named as cxr-train names them: for what NIH labels, a noisy
/// signal of the label file's finding; for the rest, noise.
fn predictions(images: &[NihImage]) -> Predictions {
    let scores = CHEXPERT_14
        .iter()
        .map(|&o| {
            images
                .iter()
                .enumerate()
                .map(|(i, image)| {
                    let noise = unit_interval(splitmix64((i as u64) << 8 | o.index() as u64));
                    if image.has(o) {
                        0.35 + noise
                    } else {
                        noise
                    }
                })
                .collect()
        })
        .collect();
    Predictions::new(
        images.iter().map(|image| image.id.clone()).collect(),
        CHEXPERT_14.iter().map(|o| o.name().to_string()).collect(),
        scores,
    )
    .unwrap()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxr-eval"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// NIH's real label file names exactly what cxr-core says NIH labels: its 14 findings and
/// No Finding.
#[test]
fn nih_labels_what_its_label_file_names() {
    let (_, vocabulary) = label_file(&HashSet::new());
    let named: BTreeSet<Observation> = vocabulary
        .iter()
        .map(|n| Observation::parse(n).unwrap())
        .collect();
    let labelled: BTreeSet<Observation> = Dataset::Nih
        .labelled_observations()
        .iter()
        .copied()
        .collect();
    assert_eq!(named, labelled);
}

#[test]
fn a_chexpert_model_on_nih_is_scored_over_the_observations_both_label() {
    let dir = tempfile::tempdir().unwrap();
    let (images, vocabulary) = label_file(&bundled("images"));
    manifest(&images, &vocabulary)
        .write(&dir.path().join("nih.parquet"))
        .unwrap();
    let preds = predictions(&images);
    preds.write(&dir.path().join("preds.parquet")).unwrap();
    // The layout of a pipeline's experiment: eval/<test set>/<run>/metrics.json.
    let eval = "exp/eval/nih/chexpert__s0";
    let table = ok(&run(
        dir.path(),
        &[
            "score",
            "preds.parquet",
            "-m",
            "nih.parquet",
            "--bootstrap",
            "0",
            "--no-plots",
            "--out",
            eval,
        ],
    ));
    let shared = format!(
        "shared     scored over the 8 observations the predictions and nih share: {}\n",
        SHARED.join(", ")
    );
    let unscored = format!(
        "unscored   not scored: the 6 predicted observations nih never labels: {}\n",
        CHEXPERT_ONLY.join(", ")
    );
    assert!(
        table.contains(&shared) && table.contains(&unscored),
        "{table}"
    );
    assert!(table.contains("labels     nih.parquet (nih), "), "{table}");

    let metrics = json(&dir.path().join(eval).join("metrics.json"));
    let observations = &metrics["observations"];
    assert_eq!(strings(&observations["datasets"]), ["nih"]);
    assert_eq!(strings(&observations["shared"]), SHARED);
    assert_eq!(strings(&observations["unlabelled"]), CHEXPERT_ONLY);

    // Each AUC is that column's AUC against the label file's findings, over all 500 images.
    let tasks = metrics["tasks"].as_array().unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(names, SHARED);
    let mut direct = Vec::new();
    for t in tasks {
        let o = Observation::parse(t["task"].as_str().unwrap()).unwrap();
        let truth: Vec<bool> = images.iter().map(|image| image.has(o)).collect();
        let want = roc_auc(&truth, preds.task(o.name()).unwrap()).unwrap();
        let got = t["auc"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{o}: {got} against {want}");
        let positives = truth.iter().filter(|&&p| p).count();
        assert_eq!(
            (t["n"].as_u64(), t["n_pos"].as_u64()),
            (Some(500), Some(positives as u64))
        );
        assert!(positives >= 10, "{o}: {positives} positives");
        direct.push((o.name(), want));
    }
    let mean_of = |names: &[&str]| {
        names
            .iter()
            .map(|n| direct.iter().find(|(d, _)| d == n).unwrap().1)
            .sum::<f64>()
            / names.len() as f64
    };
    let means = metrics["means"].as_array().unwrap();
    let competition = [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    ];
    assert_eq!(means[0]["name"], "CheXpert competition 5");
    assert_eq!(strings(&means[0]["tasks"]), competition);
    assert!((means[0]["auc"].as_f64().unwrap() - mean_of(&competition)).abs() < 1e-12);
    assert_eq!(means[1]["name"], "all 8 scorable observations");
    assert!((means[1]["auc"].as_f64().unwrap() - mean_of(&SHARED)).abs() < 1e-12);

    // A comparison of two such models names the same set.
    preds.write(&dir.path().join("again.parquet")).unwrap();
    let compared = ok(&run(
        dir.path(),
        &[
            "compare",
            "preds.parquet",
            "again.parquet",
            "-m",
            "nih.parquet",
            "--bootstrap",
            "0",
            "--no-plots",
            "--out",
            "compare",
        ],
    ));
    assert!(compared.contains(&shared), "{compared}");
    let comparison = json(&dir.path().join("compare/comparison.json"));
    assert_eq!(comparison["observations"], *observations);

    // The study report says what its means are over.
    std::fs::write(
        dir.path().join("exp/experiment.json"),
        r#"{"title": "Cross-dataset", "configs": ["chexpert"], "seeds": [0],
            "test_sets": [{"name": "nih", "title": "NIH ChestX-ray14"}]}"#,
    )
    .unwrap();
    ok(&run(dir.path(), &["report", "exp", "--out", "report.md"]));
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        report.contains(&format!(
            "Observations: scored over the 8 observations the predictions and nih share: {}; \
             not scored: the 6 predicted observations nih never labels: {}.",
            SHARED.join(", "),
            CHEXPERT_ONLY.join(", ")
        )),
        "{report}"
    );
}

/// NIH's 15 full-resolution AP films all have a finding: No Finding has no positive among them,
/// so it has no AUC (shown and counted as such, left out of the means), never 0.5.
#[test]
fn an_observation_without_positives_in_the_target_is_reported_not_scored() {
    let dir = tempfile::tempdir().unwrap();
    let (images, vocabulary) = label_file(&bundled("images-full"));
    let ap: Vec<NihImage> = images
        .into_iter()
        .filter(|image| image.projection == Projection::Ap)
        .collect();
    assert_eq!(ap.len(), 15);
    manifest(&ap, &vocabulary)
        .write(&dir.path().join("nih.parquet"))
        .unwrap();
    predictions(&ap)
        .write(&dir.path().join("preds.parquet"))
        .unwrap();
    let table = ok(&run(
        dir.path(),
        &[
            "score",
            "preds.parquet",
            "-m",
            "nih.parquet",
            "--bootstrap",
            "0",
            "--min-positives",
            "1",
            "--out",
            "eval",
            "--no-plots",
        ],
    ));
    let row = table
        .lines()
        .find(|l| l.starts_with("No Finding"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.ends_with("n/a  one class only: no positives"), "{row}");
    assert!(
        table.contains("undefined: 1 task with one class only: No Finding"),
        "{table}"
    );
    let metrics = json(&dir.path().join("eval/metrics.json"));
    let no_finding = &metrics["tasks"][0];
    assert_eq!(no_finding["task"], "No Finding");
    assert_eq!(
        (&no_finding["n_pos"], &no_finding["n_neg"]),
        (&serde_json::json!(0), &serde_json::json!(15))
    );
    assert!(no_finding["auc"].is_null());
    assert_eq!(strings(&metrics["undefined"]), ["No Finding"]);
    // Still one of the shared observations, and out of every mean.
    assert_eq!(strings(&metrics["observations"]["shared"]), SHARED);
    for mean in metrics["means"].as_array().unwrap() {
        assert!(!strings(&mean["tasks"]).contains(&"No Finding"), "{mean}");
    }
    assert_eq!(metrics["means"][1]["name"], "all 7 scorable observations");
}
