//! The `cxr-eval` binary end to end: a small manifest and predictions written with cxr-core's
//! own writers, scored, compared and drawn as a user would.

use cxr_core::hash::{splitmix64, unit_interval};
use cxr_core::predictions::Predictions;
use cxr_core::runlog::{self, MetricRecord, Phase};
use cxr_core::{
    Dataset, LabelState, Manifest, ManifestRow, Observation, Projection, Sex, Split, View,
    OBSERVATIONS,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TASKS: [&str; 6] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Fracture",
];

fn u(i: usize, salt: u64) -> f64 {
    unit_interval(splitmix64((i as u64) << 8 | salt))
}

/// 150 images: 60 patients, studies of a frontal (PA or AP) and sometimes a lateral view.
/// Fracture is never positive; some labels are uncertain or blank.
fn manifest() -> Manifest {
    let mut rows = Vec::new();
    for i in 0..150 {
        let study = i / 2;
        let patient = study * 60 / 75;
        let mut labels = [LabelState::NotMentioned; OBSERVATIONS.len()];
        for (t, name) in TASKS.iter().enumerate() {
            let o = Observation::parse(name).unwrap();
            let x = u(study, t as u64);
            labels[o.index()] = if *name == "Fracture" {
                LabelState::Negative
            } else if x < 0.35 {
                LabelState::Positive
            } else if x < 0.85 {
                LabelState::Negative
            } else if x < 0.93 {
                LabelState::Uncertain
            } else {
                LabelState::NotMentioned
            };
        }
        let lateral = i % 2 == 1;
        rows.push(ManifestRow {
            image_id: format!(
                "CheXpert-v1.0-small/valid/patient{patient:05}/study{study}/view{}.jpg",
                i % 2 + 1
            ),
            dataset: Dataset::Chexpert,
            path: format!("valid/{i}.jpg"),
            patient_id: format!("patient{patient:05}"),
            study_id: format!("patient{patient:05}/study{study}"),
            view: if lateral {
                View::Lateral
            } else {
                View::Frontal
            },
            projection: if lateral {
                Projection::Ll
            } else if u(study, 40) < 0.6 {
                Projection::Pa
            } else {
                Projection::Ap
            },
            sex: if u(patient, 50) < 0.5 {
                Sex::Male
            } else {
                Sex::Female
            },
            age: Some(60),
            source_split: Some(Split::Valid),
            split: Split::Valid,
            labels,
        });
    }
    Manifest { rows }
}

/// Scores that follow the labels with noise `noise` (0 = perfect ordering by label).
fn predictions(m: &Manifest, noise: f64, salt: u64) -> Predictions {
    let mut tasks: Vec<String> = TASKS
        .iter()
        .map(|t| format!("prob_{}", t.replace(' ', "_")))
        .collect();
    tasks.push("sex".into());
    let mut scores: Vec<Vec<f64>> = TASKS
        .iter()
        .enumerate()
        .map(|(t, name)| {
            let o = Observation::parse(name).unwrap();
            m.rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let signal = if r.label(o) == LabelState::Positive {
                        1.0
                    } else {
                        0.0
                    };
                    ((1.0 - noise) * signal + noise * u(i, 100 + salt + t as u64) * 2.0) as f32
                        as f64
                })
                .collect()
        })
        .collect();
    scores.push(
        m.rows
            .iter()
            .enumerate()
            .map(|(i, r)| if r.sex == Sex::Male { 0.7 } else { 0.3 } + 0.5 * u(i, 99))
            .collect(),
    );
    let ids = m.rows.iter().map(|r| r.image_id.clone()).collect();
    Predictions::new(ids, tasks, scores).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest();
        m.write(&dir.path().join("manifest.parquet")).unwrap();
        predictions(&m, 0.6, 0)
            .write(&dir.path().join("a.parquet"))
            .unwrap();
        predictions(&m, 0.6, 0)
            .write_csv(&dir.path().join("a.csv"))
            .unwrap();
        predictions(&m, 0.8, 7)
            .write(&dir.path().join("b.parquet"))
            .unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cxr-eval"))
            .current_dir(self.dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn assert_png_and_svg(dir: &Path, stem: &str) {
    let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{stem}.png: {} bytes",
        png.len()
    );
    let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<text") && svg.len() > 5_000,
        "{stem}.svg"
    );
}

#[test]
fn score_prints_aucs_intervals_means_and_undefined_tasks() {
    let f = Fixture::new();
    let table = ok(&f.run(&[
        "score",
        "a.parquet",
        "--manifest",
        "manifest.parquet",
        "--out",
        "eval",
    ]));
    assert!(
        table.contains("Fracture") && table.contains("n/a") && table.contains("one class only"),
        "{table}"
    );
    assert!(
        table.contains("undefined: 1 task with one class only: Fracture"),
        "{table}"
    );
    assert!(table.contains("mean, CheXpert competition 5"), "{table}");
    assert!(
        table.contains("over Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion"),
        "{table}"
    );
    assert!(
        table.contains("sex (male vs female)")
            && table.contains("2000 bootstrap replicates over 60 patients"),
        "{table}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("eval/metrics.json")).unwrap()).unwrap();
    let fracture = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "Fracture")
        .unwrap();
    assert!(fracture["auc"].is_null() && fracture["n_pos"] == 0);
    assert_eq!(json["undefined"], serde_json::json!(["Fracture"]));
    let edema = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "Edema")
        .unwrap();
    let (auc, lo, hi) = (
        edema["auc"].as_f64().unwrap(),
        edema["ci"]["low"].as_f64().unwrap(),
        edema["ci"]["high"].as_f64().unwrap(),
    );
    assert!(lo < auc && auc < hi, "{edema}");
    let csv = std::fs::read_to_string(f.path("eval/metrics.csv")).unwrap();
    assert!(
        csv.starts_with("kind,task,n,n_pos") && csv.contains("\nmean,CheXpert competition 5,"),
        "{csv}"
    );
    assert_png_and_svg(&f.path("eval"), "roc");
    // Only the table: --no-plots needs no --out.
    let printed = ok(&f.run(&[
        "score",
        "a.parquet",
        "--manifest",
        "manifest.parquet",
        "--no-plots",
    ]));
    assert!(
        printed.contains("mean, CheXpert competition 5"),
        "{printed}"
    );
}

#[test]
fn csv_and_parquet_predictions_score_identically_on_any_thread_count() {
    let f = Fixture::new();
    ok(&f.run_env(
        &[
            "score",
            "a.parquet",
            "-m",
            "manifest.parquet",
            "--out",
            "pq",
            "--no-plots",
        ],
        &[("RAYON_NUM_THREADS", "1")],
    ));
    ok(&f.run_env(
        &[
            "score",
            "a.csv",
            "-m",
            "manifest.parquet",
            "--out",
            "csv",
            "--no-plots",
        ],
        &[("RAYON_NUM_THREADS", "3")],
    ));
    let strip = |p: &str| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.path(p)).unwrap()).unwrap();
        v["predictions"] = serde_json::Value::Null;
        v
    };
    assert_eq!(strip("pq/metrics.json"), strip("csv/metrics.json"));
    assert!(!f.path("pq/roc.png").exists(), "--no-plots");
}

#[test]
fn study_aggregation_scores_studies() {
    let f = Fixture::new();
    let table = ok(&f.run(&[
        "score",
        "a.parquet",
        "-m",
        "manifest.parquet",
        "--aggregate",
        "study-max",
        "--bootstrap",
        "0",
    ]));
    assert!(
        table.contains("unit: study (study-max; 150 images in 75 studies)"),
        "{table}"
    );
    assert!(table.contains("intervals  none"), "{table}");
}

#[test]
fn compare_reports_delong_and_paired_bootstrap() {
    let f = Fixture::new();
    let table = ok(&f.run(&[
        "compare",
        "a.parquet",
        "b.parquet",
        "-m",
        "manifest.parquet",
        "--out",
        "cmp",
    ]));
    assert!(
        table.contains("DeLong z") && table.contains("paired bootstrap p ="),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("cmp/comparison.json")).unwrap()).unwrap();
    let edema = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "Edema")
        .unwrap();
    assert!(
        edema["delong"]["p_value"].as_f64().unwrap() < 0.05,
        "{edema}"
    );
    assert!(
        edema["difference"].as_f64().unwrap() > 0.0,
        "A has less noise"
    );
    assert_png_and_svg(&f.path("cmp"), "roc_compare");

    // A model compared with itself: no difference, p = 1 everywhere.
    let same = ok(&f.run(&[
        "compare",
        "a.parquet",
        "a.csv",
        "-m",
        "manifest.parquet",
        "--out",
        "same",
        "--no-plots",
    ]));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("same/comparison.json")).unwrap()).unwrap();
    for t in json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["delong"].is_null())
    {
        assert_eq!(t["delong"]["p_value"], 1.0, "{same}");
    }
    assert_eq!(json["means"][0]["p_value"], 1.0);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let f = Fixture::new();
    // An image the manifest lacks.
    let mut p = Predictions::read(&f.path("a.parquet")).unwrap();
    p.image_ids[3] = "elsewhere/img.png".into();
    p.write(&f.path("missing.parquet")).unwrap();
    let e = err(&f.run(&["score", "missing.parquet", "-m", "manifest.parquet"]));
    assert!(
        e.contains("missing.parquet")
            && e.contains("`elsewhere/img.png` (row 3)")
            && e.contains("not in the manifest"),
        "{e}"
    );
    // An unknown column.
    let mut p = Predictions::read(&f.path("a.parquet")).unwrap();
    p.tasks[0] = "Pneumonitis".into();
    p.write(&f.path("unknown.parquet")).unwrap();
    let e = err(&f.run(&["score", "unknown.parquet", "-m", "manifest.parquet"]));
    assert!(
        e.contains("unknown.parquet") && e.contains("`Pneumonitis` is not a known task"),
        "{e}"
    );
    // A NaN score.
    let text = std::fs::read_to_string(f.path("a.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[5] = lines[5].replacen(",0", ",NaN", 1);
    std::fs::write(f.path("nan.csv"), lines.join("\n")).unwrap();
    let e = err(&f.run(&["score", "nan.csv", "-m", "manifest.parquet"]));
    assert!(
        e.contains("nan.csv") && e.contains("line 6") && e.contains("NaN"),
        "{e}"
    );
    // Too few replicates; a missing manifest.
    let e = err(&f.run(&[
        "score",
        "a.csv",
        "-m",
        "manifest.parquet",
        "--bootstrap",
        "50",
    ]));
    assert!(e.contains("--bootstrap 50: use 1000 to 10000"), "{e}");
    let e = err(&f.run(&["score", "a.csv", "-m", "nowhere.parquet"]));
    assert!(e.contains("nowhere.parquet"), "{e}");
    // Compare needs the same images.
    let mut p = Predictions::read(&f.path("a.parquet")).unwrap();
    p.image_ids.truncate(10);
    for s in &mut p.scores {
        s.truncate(10);
    }
    p.write(&f.path("few.parquet")).unwrap();
    let e = err(&f.run(&[
        "compare",
        "a.parquet",
        "few.parquet",
        "-m",
        "manifest.parquet",
    ]));
    assert!(
        e.contains("a.parquet: image") && e.contains("has no prediction in few.parquet"),
        "{e}"
    );
}

#[test]
fn curves_overlay_runs_and_draw_validation_auc() {
    let f = Fixture::new();
    for (run, scale) in [("imagenet", 1.0), ("in-domain", 0.85)] {
        let log = f.path(run).join(runlog::FILE_NAME);
        for step in 1..=60u64 {
            let epoch = step as f64 / 20.0;
            let noise = 0.04 * (u(step as usize, 7) - 0.5);
            let loss = scale * (0.25 + 0.45 * (-epoch).exp()) + noise;
            let rec = MetricRecord {
                step,
                epoch,
                phase: Phase::Train,
                loss,
                lr: Some(1e-4),
                images_per_s: Some(300.0),
                data_wait: None,
                auc: None,
            };
            runlog::append(&log, &rec).unwrap();
            if step % 20 == 0 {
                let auc: BTreeMap<String, Option<f64>> = TASKS
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            (*t != "Fracture").then_some(0.9 - 0.1 * scale + 0.02 * epoch),
                        )
                    })
                    .collect();
                let rec = MetricRecord {
                    step,
                    epoch,
                    phase: Phase::Valid,
                    loss: loss + 0.05,
                    lr: None,
                    images_per_s: None,
                    data_wait: None,
                    auc: Some(auc),
                };
                runlog::append(&log, &rec).unwrap();
            }
        }
    }
    ok(&f.run(&[
        "curves",
        "imagenet",
        "in-domain/metrics.jsonl",
        "--out",
        "figs",
    ]));
    assert_png_and_svg(&f.path("figs"), "loss");
    assert_png_and_svg(&f.path("figs"), "valid_auc");
    let svg = std::fs::read_to_string(f.path("figs/loss.svg")).unwrap();
    assert!(
        svg.contains("imagenet train") && svg.contains("in-domain valid"),
        "legend names the runs"
    );

    std::fs::write(f.path("broken.jsonl"), "{\"step\":1}\n").unwrap();
    let e = err(&f.run(&["curves", "broken.jsonl", "--out", "figs2"]));
    assert!(e.contains("broken.jsonl:1:"), "{e}");
}

#[test]
fn help_teaches_with_examples() {
    let f = Fixture::new();
    let help = ok(&f.run(&["--help"]));
    assert!(
        help.contains("Examples:") && help.contains("cxr-eval compare"),
        "{help}"
    );
    assert!(!help.contains("bench-auc"), "bench subcommands stay hidden");
    let help = ok(&f.run(&["score", "--help"]));
    assert!(
        help.contains("resample patients") && help.contains("--aggregate"),
        "{help}"
    );
}

/// `cxr-eval report` on an experiment laid out as the pipelines write it: two configurations
/// (a noisy baseline and a better model) over two seeds and two test sets, scored and compared
/// by the binary.
#[test]
fn report_gathers_seeds_tests_and_figures() {
    let f = Fixture::new();
    let m = manifest();
    let exp = f.path("exp");
    let common = [
        "-m",
        "manifest.parquet",
        "--bootstrap",
        "1000",
        "--no-plots",
    ];
    for (set, extra) in [("official", 0), ("test", 100)] {
        std::fs::create_dir_all(exp.join("preds").join(set)).unwrap();
        for seed in [0u64, 1] {
            for (config, noise) in [("base", 0.9), ("better", 0.3)] {
                let run = format!("{config}__s{seed}");
                let preds = format!("exp/preds/{set}/{run}.parquet");
                predictions(&m, noise, 10 + seed + extra)
                    .write(&f.path(&preds))
                    .unwrap();
                let eval = format!("exp/eval/{set}/{run}");
                let mut args = vec!["score", preds.as_str(), "--out", eval.as_str()];
                args.extend(common);
                ok(&f.run(&args));
            }
            let better = format!("exp/preds/{set}/better__s{seed}.parquet");
            let base = format!("exp/preds/{set}/base__s{seed}.parquet");
            let cmp = format!("exp/compare/{set}/better_vs_base__s{seed}");
            let mut args = vec![
                "compare",
                better.as_str(),
                base.as_str(),
                "--out",
                cmp.as_str(),
            ];
            args.extend(common);
            ok(&f.run(&args));
        }
    }
    std::fs::create_dir_all(exp.join("figures/pretraining")).unwrap();
    std::fs::write(exp.join("figures/loss.png"), b"png").unwrap();
    std::fs::write(exp.join("figures/pretraining/loss.png"), b"png").unwrap();
    std::fs::write(
        exp.join("experiment.json"),
        r#"{"title": "Better vs base", "question": "Is better better?",
            "comparisons": [["better", "base"]],
            "test_sets": [{"name": "official", "title": "The official set"},
                          {"name": "test", "title": "Held-out patients"}],
            "configs": ["base", "better", "absent"], "seeds": [0, 1], "notes": ["a note"]}"#,
    )
    .unwrap();
    ok(&f.run(&["report", "exp", "--out", "out/report.md", "--title", "T"]));
    let text = std::fs::read_to_string(f.path("out/report.md")).unwrap();
    for want in [
        "# T",
        "## Better vs base",
        "- a note",
        "](../exp/figures/loss.png)",
        "![pretraining: training (solid) and validation (dashed) loss](../exp/figures/pretraining/loss.png)",
        "| configuration | seed 0 | seed 1 | mean over seeds | trivial: chance |",
        "| task | positives |",
        "†: fewer than 10 positives or negatives",
        "**Paired comparisons on the same images**",
        "| `better` vs `base` |",
        "holds: same sign and p < 0.05 in all 2 seeds",
        "Scored images: manifest split `valid` (150 images).",
        "| Edema |",
        "Missing (not run yet, or failed)",
        "exp/eval/official/absent__s0/metrics.json",
        "exp/eval/test/absent__s1/metrics.json",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // One section per test set, the official one first.
    let official = text.find("### The official set").expect("official heading");
    let held_out = text
        .find("### Held-out patients")
        .expect("held-out heading");
    assert!(official < held_out, "{text}");
    // Every AUC the report shows for `better` seed 0 is the one score wrote, in its set's
    // section.
    for (set, range) in [
        ("official", official..held_out),
        ("test", held_out..text.len()),
    ] {
        let path = exp.join(format!("eval/{set}/better__s0/metrics.json"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let mean = json["means"][0]["auc"].as_f64().unwrap();
        assert!(
            text[range].contains(&format!("{mean:.3} [")),
            "{set}: {text}"
        );
    }
    // A directory without experiment.json is an error naming the file.
    std::fs::create_dir_all(f.path("empty")).unwrap();
    let e = err(&f.run(&["report", "empty", "--out", "r.md"]));
    assert!(e.contains("experiment.json"), "{e}");
}

/// A column of `inf` (or `-inf`) scored AUC 0.5 with exit status 0: infinities are refused as
/// NaN is, naming the file, the first line and the column.
#[test]
fn infinite_scores_are_refused_naming_file_line_and_column() {
    let f = Fixture::new();
    for inf in ["inf", "-inf"] {
        let mut text = String::from("image_id,Edema\n");
        for r in &manifest().rows {
            text.push_str(&format!("{},{inf}\n", r.image_id));
        }
        std::fs::write(f.path("inf.csv"), text).unwrap();
        let out = f.run(&["score", "inf.csv", "-m", "manifest.parquet"]);
        assert_eq!(out.status.code(), Some(1));
        let e = err(&out);
        assert!(
            e.contains("inf.csv")
                && e.contains("line 2 (image `")
                && e.contains(&format!("`Edema` is {inf};"))
                && e.contains("infinite"),
            "{e}"
        );
    }
}

/// The manifest with each image's split set by `split_of(row)`.
fn manifest_with_splits(split_of: impl Fn(&ManifestRow) -> Split) -> Manifest {
    let mut m = manifest();
    for r in &mut m.rows {
        r.split = split_of(r);
    }
    m
}

/// The predictions of `file` for the images `keep` accepts.
fn subset(f: &Fixture, file: &str, out: &str, keep: impl Fn(&str) -> bool) {
    let p = Predictions::read(&f.path(file)).unwrap();
    let rows: Vec<usize> = (0..p.len()).filter(|&i| keep(&p.image_ids[i])).collect();
    Predictions::new(
        rows.iter().map(|&i| p.image_ids[i].clone()).collect(),
        p.tasks.clone(),
        p.scores
            .iter()
            .map(|s| rows.iter().map(|&i| s[i]).collect())
            .collect(),
    )
    .unwrap()
    .write(&f.path(out))
    .unwrap();
}

fn json(f: &Fixture, path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(f.path(path)).unwrap()).unwrap()
}

/// Score and compare say which manifest split the images come from (table and JSON), refuse
/// training images and mixtures of splits unless told, and score `test` and `official` apart
/// without flags, as the pipelines do.
#[test]
fn splits_are_reported_and_train_or_mixed_splits_refused() {
    let f = Fixture::new();
    let quick = ["-m", "manifest.parquet", "--bootstrap", "0", "--no-plots"];
    let with = |args: &[&str], extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // The fixture's images are all in `valid`: one split, scored without a flag.
    let table = ok(&run(with(
        &["score", "a.parquet", "--out", "valid"],
        &quick,
    )));
    assert!(table.contains("split      valid (150 images)"), "{table}");
    assert_eq!(
        json(&f, "valid/metrics.json")["splits"],
        serde_json::json!({"valid": 150})
    );

    // Training images: refused, saying why, unless --allow-train-split.
    manifest_with_splits(|_| Split::Train)
        .write(&f.path("manifest.parquet"))
        .unwrap();
    for args in [
        with(&["score", "a.parquet"], &quick),
        with(&["compare", "a.parquet", "b.parquet"], &quick),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1));
        let e = err(&out);
        assert!(
            e.contains(
                "a.parquet: 150 of 150 predicted images are in the manifest's `train` split"
            ) && e.contains("say nothing about")
                && e.contains("--allow-train-split"),
            "{e}"
        );
    }
    let table = ok(&run(with(
        &[
            "score",
            "a.parquet",
            "--out",
            "train",
            "--allow-train-split",
        ],
        &quick,
    )));
    assert!(
        table.contains("split      train (150 images); training images"),
        "{table}"
    );
    assert_eq!(
        json(&f, "train/metrics.json")["splits"],
        serde_json::json!({"train": 150})
    );

    // Held-out patients and the official set together: refused unless pooled on purpose.
    let test_patient = |r: &ManifestRow| r.patient_id.as_str() < "patient00030";
    manifest_with_splits(|r| {
        if test_patient(r) {
            Split::Test
        } else {
            Split::Official
        }
    })
    .write(&f.path("manifest.parquet"))
    .unwrap();
    let m = Manifest::read(&f.path("manifest.parquet")).unwrap();
    let n_test = m.rows.iter().filter(|r| r.split == Split::Test).count();
    let n_official = 150 - n_test;
    assert!(n_test > 20 && n_official > 20, "{n_test}");
    for args in [
        with(&["score", "a.parquet"], &quick),
        with(&["compare", "a.parquet", "b.parquet"], &quick),
    ] {
        let e = err(&run(args));
        assert!(
            e.contains("a.parquet: the predicted images come from 2 manifest splits")
                && e.contains(&format!("test: {n_test} images"))
                && e.contains(&format!("official: {n_official} images"))
                && e.contains("--allow-mixed-splits"),
            "{e}"
        );
    }
    let table = ok(&run(with(
        &[
            "score",
            "a.parquet",
            "--out",
            "mixed",
            "--allow-mixed-splits",
        ],
        &quick,
    )));
    assert!(table.contains("splits     official ("), "{table}");
    assert_eq!(
        json(&f, "mixed/metrics.json")["splits"],
        serde_json::json!({"official": n_official, "test": n_test})
    );

    // One split at a time, as the pipelines score them: no flag needed.
    let split_of: std::collections::HashMap<String, Split> = m
        .rows
        .iter()
        .map(|r| (r.image_id.clone(), r.split))
        .collect();
    for (split, n) in [(Split::Test, n_test), (Split::Official, n_official)] {
        for file in ["a", "b"] {
            subset(
                &f,
                &format!("{file}.parquet"),
                &format!("{file}_{split}.parquet"),
                |id| split_of[id] == split,
            );
        }
        let (a, b) = (format!("a_{split}.parquet"), format!("b_{split}.parquet"));
        let out = format!("eval_{split}");
        ok(&run(with(&["score", &a, "--out", &out], &quick)));
        assert_eq!(
            json(&f, &format!("{out}/metrics.json"))["splits"],
            serde_json::json!({split.as_str(): n})
        );
        let out = format!("cmp_{split}");
        ok(&run(with(&["compare", &a, &b, "--out", &out], &quick)));
        assert_eq!(
            json(&f, &format!("{out}/comparison.json"))["splits"],
            serde_json::json!({split.as_str(): n})
        );
    }
}

/// Errors meant for users: `cxr-eval: error: ...` on one line and exit status 1, each cause
/// once (the OS's message was printed twice), and no backtrace whatever RUST_BACKTRACE says.
#[test]
fn errors_are_one_line_without_backtrace_or_repeats() {
    let f = Fixture::new();
    for backtrace in ["1", "full"] {
        let env = [("RUST_BACKTRACE", backtrace), ("RUST_LIB_BACKTRACE", "1")];
        for args in [
            &["score", "absent.parquet", "-m", "manifest.parquet"][..],
            &["score", "a.parquet", "-m", "absent.parquet"],
        ] {
            let out = f.run_env(args, &env);
            assert_eq!(out.status.code(), Some(1));
            let e = err(&out);
            assert!(e.starts_with("cxr-eval: error: absent.parquet: "), "{e}");
            assert!(!e.to_lowercase().contains("backtrace"), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            assert_eq!(e.matches("(os error 2)").count(), 1, "{e}");
        }
    }
}

/// `score ev/metrics.csv --out ev` replaced the predictions with the metrics, exit 0; `report
/// --intro intro.md --out intro.md` the intro with the report. Outputs that are (or would write
/// over) inputs are refused before any work, and the inputs stay as they were.
#[test]
fn outputs_that_are_inputs_are_refused() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("ev")).unwrap();
    std::fs::copy(f.path("a.csv"), f.path("ev/metrics.csv")).unwrap();
    std::fs::create_dir_all(f.path("runs/r")).unwrap();
    for step in 1..=3u64 {
        let rec = MetricRecord {
            step,
            epoch: step as f64,
            phase: Phase::Train,
            loss: 1.0 / step as f64,
            lr: None,
            images_per_s: None,
            data_wait: None,
            auc: None,
        };
        runlog::append(&f.path("runs/r/metrics.jsonl"), &rec).unwrap();
    }
    std::fs::write(f.path("intro.md"), "# intro\n").unwrap();
    let inputs = [
        "ev/metrics.csv",
        "manifest.parquet",
        "a.parquet",
        "runs/r/metrics.jsonl",
        "intro.md",
    ];
    let before: Vec<Vec<u8>> = inputs
        .iter()
        .map(|p| std::fs::read(f.path(p)).unwrap())
        .collect();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "score",
                "ev/metrics.csv",
                "-m",
                "manifest.parquet",
                "--out",
                "ev",
            ],
            "--out ev would write ev/metrics.csv, which is an input (predictions ev/metrics.csv)",
        ),
        (
            &[
                "score",
                "a.parquet",
                "-m",
                "manifest.parquet",
                "--out",
                "manifest.parquet",
            ],
            "--out manifest.parquet is also an input (--manifest manifest.parquet)",
        ),
        (
            &[
                "compare",
                "a.parquet",
                "b.parquet",
                "-m",
                "manifest.parquet",
                "--out",
                "./a.parquet",
            ],
            "--out ./a.parquet is the same file as an input (predictions A a.parquet)",
        ),
        (
            &["curves", "runs/r", "--out", "runs/r/metrics.jsonl"],
            "--out runs/r/metrics.jsonl is also an input (RUN runs/r/metrics.jsonl)",
        ),
        (
            &["report", "runs", "--intro", "intro.md", "--out", "intro.md"],
            "--out intro.md is also an input (--intro intro.md)",
        ),
        (
            &["report", "runs", "--out", "runs/experiment.json"],
            "--out runs/experiment.json is also an input (EXPERIMENT runs/experiment.json)",
        ),
    ];
    for (args, expected) in cases {
        let out = f.run(args);
        let text = err(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert_eq!(
            text.trim_end(),
            format!(
                "cxr-eval: error: {expected}: refusing to overwrite it; choose another output path"
            ),
            "{args:?}"
        );
    }
    for (path, bytes) in inputs.iter().zip(&before) {
        assert_eq!(&std::fs::read(f.path(path)).unwrap(), bytes, "{path}");
    }
    assert!(!f.path("runs/experiment.json").exists());
    // Figures beside a run's log overwrite nothing: allowed.
    ok(&f.run(&["curves", "runs/r", "--out", "runs/r"]));
}

/// An output that cannot be renamed into place (a directory holds its name) fails, and leaves
/// no temporary file behind.
#[test]
fn a_failed_write_leaves_no_temporary_file() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("ev/metrics.json")).unwrap();
    let text = err(&f.run(&[
        "score",
        "a.parquet",
        "-m",
        "manifest.parquet",
        "--bootstrap",
        "0",
        "--no-plots",
        "--out",
        "ev",
    ]));
    assert!(text.contains("ev/metrics.json: Is a directory"), "{text}");
    let names: Vec<String> = std::fs::read_dir(f.path("ev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["metrics.json"]);
}
