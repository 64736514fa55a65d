//! End-to-end tests of the `cxr-index` binary on real label files (from `$CXR_SHARED/data`, by
//! default `../shared/data` beside the repository, which CI provides; see `cxr_core::testdata`)
//! and on a synthetic CheXpert train.csv with every quirk of the real one.

mod common;

use common::{count, index, index_ok, obs, stderr_of};
use cxr_core::{LabelState, Manifest, Projection, Sex, Split, View};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> PathBuf {
    cxr_core::testdata::shared_path("data")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// `chexpert --csv A [--csv B...] --out OUT EXTRA...` as arguments.
fn chexpert(csvs: &[&Path], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["chexpert".to_string()];
    for csv in csvs {
        args.extend(["--csv".to_string(), csv.display().to_string()]);
    }
    args.extend(["--out".to_string(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn assert_patients_in_one_split(m: &Manifest) {
    let mut seen = HashMap::new();
    for r in &m.rows {
        let s = *seen.entry(&r.patient_id).or_insert(r.split);
        assert_eq!(s, r.split, "patient {} in two splits", r.patient_id);
    }
}

#[test]
fn chexpert_valid_golden() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let root = shared().join("chexpert");
    let csv = root.join("CheXpert-v1.0-small/valid.csv");
    index_ok(&chexpert(&[&csv], &out, &[]));
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.len(), 234);
    let patients: std::collections::HashSet<_> = m.rows.iter().map(|r| &r.patient_id).collect();
    assert_eq!(patients.len(), 200);
    assert_eq!(count(&m, |r| r.view == View::Frontal), 202);
    assert_eq!(count(&m, |r| r.view == View::Lateral), 32);
    assert_eq!(
        count(&m, |r| r.label(obs("Fracture")) == LabelState::Positive),
        0
    );
    assert_eq!(
        count(&m, |r| r.label(obs("Pleural Effusion"))
            == LabelState::Positive),
        67
    );
    assert!(m
        .rows
        .iter()
        .all(|r| r.split == Split::Official && r.source_split == Some(Split::Valid)));
    assert!(m
        .rows
        .iter()
        .all(|r| r.label(obs("Mass")) == LabelState::NotMentioned));
    let first = &m.rows[0];
    assert_eq!(
        first.image_id,
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"
    );
    assert_eq!(
        (first.patient_id.as_str(), first.study_id.as_str()),
        ("patient64541", "patient64541/study1")
    );
    assert_eq!(
        (first.sex, first.age, first.projection),
        (Sex::Male, Some(73), Projection::Ap)
    );
}

#[test]
fn nih_full_golden() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nih.parquet");
    let summary = dir.path().join("summary.json");
    let csv = shared().join("nih/Data_Entry_2017_v2020.csv.gz");
    index_ok(&[
        "nih",
        "--csv",
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    let golden = fixtures().join("nih-summary.golden.json");
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    if std::env::var_os("CXR_BLESS").is_some() {
        std::fs::write(&golden, serde_json::to_string_pretty(&got).unwrap()).unwrap();
    }
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&golden).unwrap()).unwrap();
    assert_eq!(
        got,
        want,
        "summary differs from {} (CXR_BLESS=1 rewrites it)",
        golden.display()
    );
    assert_eq!(got["rows"], 112_120);
    assert_eq!(got["patients"], 30_805);
    assert_eq!(got["projections"]["PA"], 67_310);
    assert_eq!(got["projections"]["AP"], 44_810);

    let m = Manifest::read(&out).unwrap();
    assert_patients_in_one_split(&m);
    let row = &m.rows[1];
    assert_eq!(row.image_id, "00000001_001.png");
    assert_eq!(
        (row.patient_id.as_str(), row.study_id.as_str()),
        ("00000001", "00000001/001")
    );
    assert_eq!(row.label(obs("Emphysema")), LabelState::Positive);
    assert_eq!(row.label(obs("Effusion")), LabelState::Negative);
    assert_eq!(row.label(obs("Lung Opacity")), LabelState::NotMentioned);
}

#[test]
fn synthetic_chexpert_train_quirks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let root = fixtures().join("chexpert-synthetic");
    let stdout = index_ok(&[
        "chexpert",
        "--root",
        root.to_str().unwrap(),
        "--csv",
        "CheXpert-v1.0-small/train.csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("no image     12"), "{stdout}");
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.len(), 12);
    assert_eq!(count(&m, |r| r.projection == Projection::Ll), 1);
    assert_eq!(count(&m, |r| r.projection == Projection::Rl), 1);
    assert_eq!(count(&m, |r| r.projection == Projection::Unknown), 1);
    assert_eq!(count(&m, |r| r.sex == Sex::Unknown), 2);
    assert_eq!(count(&m, |r| r.age == Some(0)), 2);
    let second = &m.rows[1];
    assert_eq!(second.label(obs("Cardiomegaly")), LabelState::Uncertain);
    assert_eq!(second.label(obs("Lung Opacity")), LabelState::Positive);
    assert_eq!(second.label(obs("No Finding")), LabelState::NotMentioned);
    assert_eq!(m.rows[0].label(obs("Pneumothorax")), LabelState::Negative);
    assert_eq!(count(&m, |r| r.study_id == "patient00002/study1"), 2);
    assert!(m.rows.iter().all(|r| r.source_split == Some(Split::Train)));
    assert_patients_in_one_split(&m);

    let frontal = dir.path().join("frontal.parquet");
    index_ok(&chexpert(
        &[&root.join("CheXpert-v1.0-small/train.csv")],
        &frontal,
        &["--frontal-only", "--projection", "PA"],
    ));
    let m = Manifest::read(&frontal).unwrap();
    assert_eq!(m.len(), 3);
    assert!(m
        .rows
        .iter()
        .all(|r| r.view == View::Frontal && r.projection == Projection::Pa));
}

/// Write `body` under the CheXpert header to a temp CSV and return its path.
fn chexpert_csv(dir: &Path, body: &str) -> PathBuf {
    let header = std::fs::read_to_string(
        fixtures().join("chexpert-synthetic/CheXpert-v1.0-small/train.csv"),
    )
    .unwrap();
    let header = header.lines().next().unwrap();
    let path = dir.join("train.csv");
    std::fs::write(&path, format!("{header}\n{body}")).unwrap();
    path
}

const GOOD: &str = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n";

#[test]
fn bad_values_name_file_line_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let cases = [
        (
            GOOD.replace("Frontal,AP,1.0", "Frontal,AP,2.0"),
            "No Finding",
            "`2.0`",
        ),
        (GOOD.replace(",68,", ",abc,"), "Age", "`abc`"),
        (GOOD.replace(",Female,", ",F,"), "Sex", "`F`"),
        (GOOD.replace(",AP,", ",XY,"), "AP/PA", "`XY`"),
    ];
    for (bad, column, value) in cases {
        let csv = chexpert_csv(dir.path(), &format!("{GOOD}{bad}"));
        let err = stderr_of(&chexpert(&[&csv], &out, &[]));
        assert!(
            err.contains("train.csv:3") && err.contains(column) && err.contains(value),
            "{err}"
        );
        assert!(!out.exists(), "nothing may be written on error");

        let stdout = index_ok(&chexpert(&[&csv], &out, &["--lenient"]));
        assert!(stdout.contains("skipped      1 bad rows"), "{stdout}");
        assert_eq!(Manifest::read(&out).unwrap().len(), 1);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn missing_column_and_path_escape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let csv = dir.path().join("cut.csv");
    std::fs::write(&csv, "Path,Sex,Age\nx,Male,3\n").unwrap();
    let err = stderr_of(&chexpert(&[&csv], &out, &[]));
    assert!(
        err.contains("cut.csv") && err.contains("missing column `Frontal/Lateral`"),
        "{err}"
    );

    let escape = GOOD.replace("CheXpert-v1.0-small/train/", "../../etc/patient00001/");
    let csv = chexpert_csv(dir.path(), &escape);
    let err = stderr_of(&chexpert(&[&csv], &out, &[]));
    assert!(
        err.contains("train.csv:2") && err.contains("../../etc"),
        "{err}"
    );
}

#[test]
fn a_patient_in_two_official_splits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let train = chexpert_csv(dir.path(), GOOD);
    let valid = dir.path().join("valid.csv");
    let text = std::fs::read_to_string(&train)
        .unwrap()
        .replace("/train/", "/valid/");
    std::fs::write(&valid, text).unwrap();
    let err = stderr_of(&chexpert(&[&train, &valid], &out, &[]));
    assert!(
        err.contains("patient00001") && err.contains("share one split"),
        "{err}"
    );
}

/// NIH's official test list puts whole patients in split `official`; a list that splits a
/// patient, names nothing of the dataset or nothing at all is refused.
#[test]
fn an_official_list_holds_whole_patients() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let csv = shared().join("nih/Data_Entry_2017_v2020.csv.gz");
    let list = dir.path().join("test_list.txt");
    let run = |lines: &str| {
        std::fs::write(&list, lines).unwrap();
        index(&[
            "nih",
            "--csv",
            csv.to_str().unwrap(),
            "--official-list",
            list.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // Patient 00000001 has three images.
    let ok = run("00000001_000.png\n00000001_001.png\n00000001_002.png\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let m = Manifest::read(&out).unwrap();
    let official: Vec<&str> = m
        .rows
        .iter()
        .filter(|r| r.split == Split::Official)
        .map(|r| r.image_id.as_str())
        .collect();
    assert_eq!(
        official,
        ["00000001_000.png", "00000001_001.png", "00000001_002.png"]
    );
    assert_patients_in_one_split(&m);

    let err = String::from_utf8_lossy(&run("00000001_001.png\n").stderr).into_owned();
    assert!(
        err.contains("patient 00000001") && err.contains("share one split"),
        "{err}"
    );
    let err = String::from_utf8_lossy(&run("patient64541/view1.jpg\n").stderr).into_owned();
    assert!(
        err.contains("none of the images in the official list"),
        "{err}"
    );
    let err = String::from_utf8_lossy(&run("\n\n").stderr).into_owned();
    assert!(err.contains("names no image"), "{err}");
}

#[test]
fn images_on_disk_are_counted_required_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let nih = shared().join("nih");
    let csv = nih.join("Data_Entry_2017_v2020.csv.gz");
    let (root, csv, out_s) = (
        nih.to_str().unwrap(),
        csv.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let err = stderr_of(&[
        "nih",
        "--root",
        root,
        "--csv",
        csv,
        "--out",
        out_s,
        "--require-images",
    ]);
    assert!(
        err.contains("111620 of 112120 images are missing") && err.contains("00000001_000.png"),
        "{err}"
    );
    index_ok(&[
        "nih",
        "--root",
        root,
        "--csv",
        csv,
        "--out",
        out_s,
        "--drop-missing",
    ]);
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.len(), 500);
    assert!(m
        .rows
        .iter()
        .all(|r| r.path.starts_with("images/") && nih.join(&r.path).is_file()));
    assert_eq!(count(&m, |r| r.projection == Projection::Pa), 417);
}

/// Errors meant for users: `cxr-index: error: ...` and exit status 1, each cause once, never a
/// backtrace, whatever RUST_BACKTRACE says.
#[test]
fn errors_print_no_backtrace_and_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    for backtrace in ["1", "full"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cxr-index"))
            .current_dir(dir.path())
            .args(["nih", "--csv", "absent.csv", "--out", "m.parquet"])
            .env("RUST_BACKTRACE", backtrace)
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.starts_with("cxr-index: error: absent.csv: "), "{text}");
        assert!(!text.to_lowercase().contains("backtrace"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
    }
}

/// The repo's 500-row NIH demo label file, copied to `dir` as `x.csv`.
fn nih_demo_csv(dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/nih-demo/Data_Entry_2017_v2020.demo.csv");
    let path = dir.join("x.csv");
    std::fs::copy(from, &path).unwrap();
    path
}

fn nih_args(csvs: &[&Path], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = chexpert(csvs, out, extra);
    args[0] = "nih".to_string();
    args
}

/// `cxr-index nih --csv x.csv --out x.csv` replaced the label file with the manifest and exited
/// 0. An output that is an input, by any path to it, is refused before anything is read.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = nih_demo_csv(dir.path());
    let before = std::fs::read(&csv).unwrap();
    let soft = dir.path().join("soft.csv");
    let hard = dir.path().join("hard.csv");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&csv, &soft).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&csv, &soft).unwrap();
    std::fs::hard_link(&csv, &hard).unwrap();

    let err = stderr_of(&nih_args(&[&csv], &csv, &[]));
    let x = csv.display();
    assert_eq!(
        err.trim_end(),
        format!(
            "cxr-index: error: --out {x} is also an input (--csv {x}): refusing to overwrite it; \
             choose another output path"
        )
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let dotted = dir.path().join("sub/../x.csv");
    for out in [&dotted, &hard, &soft] {
        let err = stderr_of(&nih_args(&[&csv], out, &[]));
        assert!(
            err.contains(&format!(
                "--out {} is the same file as an input (--csv {x})",
                out.display()
            )),
            "{err}"
        );
    }
    let m = dir.path().join("m.parquet");
    let err = stderr_of(&nih_args(&[&csv], &m, &["--summary-json", &x.to_string()]));
    assert!(
        err.contains("--summary-json") && err.contains("also an input"),
        "{err}"
    );
    let err = stderr_of(&nih_args(
        &[&csv],
        &m,
        &["--summary-json", &m.display().to_string()],
    ));
    assert!(err.contains("are the same file"), "{err}");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "00000075_000.png\n").unwrap();
    let official = ["--official-list", list.to_str().unwrap()];
    let err = stderr_of(&nih_args(&[&csv], &list, &official));
    assert!(err.contains("is also an input (--official-list"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "00000075_000.png\n"
    );
    assert_eq!(
        std::fs::read(&csv).unwrap(),
        before,
        "the label file must be untouched"
    );
    assert!(!m.exists());
}

/// Indexing a label file twice gave 400 rows for 200 images; two files with one image under
/// different labels let scoring keep either. Both rows are named, file and line.
#[test]
fn duplicate_image_ids_are_refused_naming_both_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = nih_demo_csv(dir.path());
    let out = dir.path().join("m.parquet");
    let x = csv.display();

    let err = stderr_of(&nih_args(&[&csv, &csv], &out, &[]));
    assert!(
        err.contains(&format!(
            "image `00000075_000.png` is in the label files twice: {x}:2 and {x}:2 (the same \
             file given twice?)"
        )),
        "{err}"
    );

    let text = std::fs::read_to_string(&csv).unwrap();
    let header = text.lines().next().unwrap();
    let other = dir.path().join("y.csv");
    let row = "00000100_000.png,No Finding,0,100,60,M,PA,2500,2048,0.171,0.171";
    std::fs::write(&other, format!("{header}\n{row}\n")).unwrap();
    let err = stderr_of(&nih_args(&[&csv, &other], &out, &[]));
    assert!(
        err.contains(&format!(
            "image `00000100_000.png` is in the label files twice: {x}:3 and {}:2;",
            other.display()
        )),
        "{err}"
    );

    // Within one file, and under --lenient too.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(40, lines[7]);
    std::fs::write(&other, lines.join("\n")).unwrap();
    let id = lines[7].split(',').next().unwrap();
    let err = stderr_of(&nih_args(&[&other], &out, &["--lenient"]));
    let y = other.display();
    assert!(
        err.contains(&format!(
            "image `{id}` is in the label files twice: {y}:8 and {y}:41;"
        )),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written");

    // CheXpert: the image id is the path.
    let train = chexpert_csv(dir.path(), &format!("{GOOD}{GOOD}"));
    let err = stderr_of(&chexpert(&[&train], &out, &[]));
    assert!(
        err.contains("train.csv:2 and") && err.contains("train.csv:3;"),
        "{err}"
    );
}

/// A header-only label file, and options that keep no row, gave an empty manifest and exit 0.
#[test]
fn label_files_and_manifests_without_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = nih_demo_csv(dir.path());
    let out = dir.path().join("m.parquet");
    let text = std::fs::read_to_string(&csv).unwrap();
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, format!("{}\n", text.lines().next().unwrap())).unwrap();
    let err = stderr_of(&nih_args(&[&empty], &out, &[]));
    assert!(
        err.contains(&format!("{}: no rows", empty.display())),
        "{err}"
    );
    let err = stderr_of(&nih_args(&[&csv, &empty], &out, &[]));
    assert!(err.contains("empty.csv: no rows"), "{err}");
    let err = stderr_of(&nih_args(&[&csv], &out, &["--projection", "LL"]));
    assert!(
        err.contains("no rows to write") && err.contains("500 rows read"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `--out` an existing directory: the write fails, and its temporary file must not stay behind.
#[test]
fn a_failed_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = nih_demo_csv(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = stderr_of(&nih_args(&[&csv], &out, &[]));
    assert!(err.contains("out: Is a directory"), "{err}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out", "x.csv"]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}
