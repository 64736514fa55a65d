//! `cxr-index mimic` on small files written in MIMIC-CXR-JPG's published layout: the metadata
//! file (gzipped, as PhysioNet ships it), the CheXpert-labeller file, the official split and
//! MIMIC-IV's patients table, for five subjects with frontal and lateral images, an uncertain and
//! a blank label, a study without a label row, a blank ViewPosition the coded view resolves, and
//! one the manifest cannot record.

mod common;

use common::{index_ok, index_ok_with_notes, obs, stderr_of};
use cxr_core::{Dataset, LabelState, Manifest, Projection, Sex, Split, View};
use std::io::Write;
use std::path::Path;

const METADATA_HEADER: &str = "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,\
ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,\
ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning";

/// (dicom_id, subject_id, study_id, ViewPosition, StudyDate, ViewCodeSequence_CodeMeaning,
/// official split), in the metadata file's order.
const IMAGES: [(&str, &str, &str, &str, &str, &str, &str); 10] = [
    (
        "5c1a0e2d-9b7f3a11-04c2d8e6-7f1b2a3c-4d5e6f70",
        "10000032",
        "50414267",
        "PA",
        "21800506",
        "postero-anterior",
        "train",
    ),
    (
        "a0b1c2d3-e4f50617-28394a5b-6c7d8e9f-00112233",
        "10000032",
        "50414267",
        "LATERAL",
        "21800506",
        "lateral",
        "train",
    ),
    (
        "0f1e2d3c-4b5a6978-8796a5b4-c3d2e1f0-12345678",
        "10000032",
        "53189527",
        "AP",
        "21820101",
        "antero-posterior",
        "train",
    ),
    (
        "11223344-55667788-99aabbcc-ddeeff00-a1b2c3d4",
        "10000764",
        "57375967",
        "AP",
        "21321010",
        "antero-posterior",
        "validate",
    ),
    (
        "deadbeef-01234567-89abcdef-fedcba98-76543210",
        "10000764",
        "57375967",
        "LL",
        "21321010",
        "left lateral",
        "validate",
    ),
    (
        "c0ffee00-1a2b3c4d-5e6f7a8b-9c0d1e2f-3a4b5c6d",
        "10000898",
        "50771383",
        "PA",
        "21500101",
        "postero-anterior",
        "test",
    ),
    (
        "abcdef01-23456789-abcdef01-23456789-abcdef01",
        "10000898",
        "50771383",
        "LATERAL",
        "21500101",
        "lateral",
        "test",
    ),
    (
        "98765432-10fedcba-98765432-10fedcba-98765432",
        "10000898",
        "54205396",
        "",
        "21510303",
        "postero-anterior",
        "test",
    ),
    (
        "13572468-24681357-acebdf02-bdf02ace-02468ace",
        "10001122",
        "58000001",
        "AP AXIAL",
        "21700101",
        "",
        "train",
    ),
    (
        "feedface-cafebabe-0badf00d-8badf00d-facefeed",
        "11000011",
        "59000002",
        "PA",
        "21900101",
        "postero-anterior",
        "train",
    ),
];

const LABELS_HEADER: &str = "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,\
Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,\
Pleural Other,Pneumonia,Pneumothorax,Support Devices";

/// Per study, as the labeller writes them; 11000011/59000002 has no row, and the last row is of
/// a study the metadata does not have.
const LABELS: [&str; 7] = [
    "10000032,50414267,,,,,,,,,1.0,,,,,",
    "10000032,53189527,-1.0,1.0,,,,,,,,0.0,,,,",
    "10000764,57375967,,,1.0,,,,,,,,,-1.0,,",
    "10000898,50771383,,,,,,,,,1.0,,,,,",
    "10000898,54205396,,,,0.0,,,,1.0,,1.0,,,,1.0",
    "10001122,58000001,,,,,,,,,1.0,,,,,",
    "19999999,59999999,1.0,,,,,,,,,,,,,",
];

const PATIENTS: [&str; 4] = [
    "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "10000032,F,52,2180,2014 - 2016,2180-09-09",
    "10000764,M,86,2132,2008 - 2010,",
    "10000898,F,61,2150,2011 - 2013,",
];

/// The four files as lines, to be altered by a test and written.
struct Files {
    metadata: Vec<String>,
    labels: Vec<String>,
    split: Vec<String>,
    patients: Vec<String>,
}

impl Files {
    fn published() -> Files {
        let metadata = IMAGES
            .iter()
            .map(|(id, subject, study, view, date, code, _)| {
                let (procedure, orientation) = match *view {
                    "AP" | "AP AXIAL" => ("CHEST (PORTABLE AP)", "Recumbent"),
                    _ => ("CHEST (PA AND LAT)", "Erect"),
                };
                format!(
                    "{id},{subject},{study},{procedure},{view},3056,2544,{date},134513.000,\
                 {procedure},{code},{orientation}"
                )
            });
        let split = IMAGES
            .iter()
            .map(|(id, subject, study, .., split)| format!("{id},{study},{subject},{split}"));
        Files {
            metadata: [METADATA_HEADER.to_string()]
                .into_iter()
                .chain(metadata)
                .collect(),
            labels: [LABELS_HEADER]
                .iter()
                .chain(&LABELS)
                .map(|l| l.to_string())
                .collect(),
            split: ["dicom_id,study_id,subject_id,split".to_string()]
                .into_iter()
                .chain(split)
                .collect(),
            patients: PATIENTS.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// Write the files into `dir` under their published names (the metadata gzipped) and return
    /// the arguments naming them.
    fn write(&self, dir: &Path) -> Vec<String> {
        let text = |lines: &[String]| lines.join("\n") + "\n";
        let metadata = dir.join("mimic-cxr-2.0.0-metadata.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text(&self.metadata).as_bytes()).unwrap();
        std::fs::write(&metadata, gz.finish().unwrap()).unwrap();
        let labels = dir.join("mimic-cxr-2.0.0-chexpert.csv");
        let split = dir.join("mimic-cxr-2.0.0-split.csv");
        let patients = dir.join("patients.csv");
        std::fs::write(&labels, text(&self.labels)).unwrap();
        std::fs::write(&split, text(&self.split)).unwrap();
        std::fs::write(&patients, text(&self.patients)).unwrap();
        let mut args = vec!["mimic".to_string()];
        for (flag, path) in [
            ("--metadata", metadata),
            ("--labels", labels),
            ("--split", split),
            ("--patients", patients),
        ] {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
        args
    }
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn path_of(i: usize) -> String {
    let (id, subject, study, ..) = IMAGES[i];
    format!("files/p{}/p{subject}/s{study}/{id}.jpg", &subject[..2])
}

#[test]
fn mimic_files_join_into_one_row_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mimic.parquet");
    let summary = dir.path().join("summary.json");
    let args = Files::published().write(dir.path());
    let out_s = out.display().to_string();
    let (stdout, notes) = index_ok_with_notes(&with(
        args.clone(),
        &[
            "--out",
            &out_s,
            "--fractions",
            "1,0,0",
            "--summary-json",
            summary.to_str().unwrap(),
        ],
    ));
    assert!(
        stdout.contains("left out     1 images of neither a frontal nor a lateral view"),
        "{stdout}"
    );
    assert!(
        notes.contains("left out 1 images") && notes.contains("(ViewPosition `AP AXIAL` 1)"),
        "{notes}"
    );
    assert!(
        notes.contains("1 images are of studies without a row in")
            && notes.contains("1 of 7 rows of")
            && notes.contains(
                "match no study of the metadata file; the first: `19999999/59999999` (line 8)"
            )
            && notes.contains("1 images are of subjects not in"),
        "{notes}"
    );

    let m = Manifest::read(&out).unwrap();
    // Every image but the AP AXIAL one, in the metadata's order.
    let kept: Vec<usize> = vec![0, 1, 2, 3, 4, 5, 6, 7, 9];
    assert_eq!(m.len(), kept.len());
    for (row, &i) in m.rows.iter().zip(&kept) {
        let (id, subject, study, ..) = IMAGES[i];
        assert_eq!(row.dataset, Dataset::Mimic);
        assert_eq!(row.image_id, id);
        assert_eq!(row.path, path_of(i));
        assert_eq!(row.patient_id, subject);
        assert_eq!(row.study_id, format!("{subject}/{study}"));
    }
    assert_eq!(
        m.rows[0].path,
        "files/p10/p10000032/s50414267/5c1a0e2d-9b7f3a11-04c2d8e6-7f1b2a3c-4d5e6f70.jpg"
    );

    let views: Vec<(View, Projection)> = m.rows.iter().map(|r| (r.view, r.projection)).collect();
    use Projection::*;
    use View::*;
    assert_eq!(
        views,
        [
            (Frontal, Pa),
            (Lateral, Unknown),
            (Frontal, Ap),
            (Frontal, Ap),
            (Lateral, Ll),
            (Frontal, Pa),
            (Lateral, Unknown),
            (Frontal, Pa), // blank ViewPosition, coded `postero-anterior`
            (Frontal, Pa),
        ]
    );

    // The official split is the source split; `validate` is `valid`, `test` is `official` and
    // (with --fractions 1,0,0) every train patient stays in `train`.
    let splits: Vec<(Option<Split>, Split)> =
        m.rows.iter().map(|r| (r.source_split, r.split)).collect();
    let (train, valid, official) = (
        (Some(Split::Train), Split::Train),
        (Some(Split::Valid), Split::Valid),
        (Some(Split::Test), Split::Official),
    );
    assert_eq!(
        splits,
        [train, train, train, valid, valid, official, official, official, train]
    );

    // Labels per study: both views of 10000032/50414267 get its `No Finding`.
    let label = |row: usize, name: &str| m.rows[row].label(obs(name));
    assert_eq!(label(0, "No Finding"), LabelState::Positive);
    assert_eq!(label(1, "No Finding"), LabelState::Positive);
    assert_eq!(label(0, "Atelectasis"), LabelState::NotMentioned);
    assert_eq!(label(2, "Atelectasis"), LabelState::Uncertain);
    assert_eq!(label(2, "Cardiomegaly"), LabelState::Positive);
    assert_eq!(label(2, "Pleural Effusion"), LabelState::Negative);
    assert_eq!(label(2, "Edema"), LabelState::NotMentioned);
    assert_eq!(label(4, "Consolidation"), LabelState::Positive);
    assert_eq!(label(4, "Pneumonia"), LabelState::Uncertain);
    assert_eq!(label(7, "Edema"), LabelState::Negative);
    assert_eq!(label(7, "Lung Opacity"), LabelState::Positive);
    assert_eq!(label(7, "Support Devices"), LabelState::Positive);
    // 11000011/59000002 has no label row; NIH-only columns are never labelled.
    assert!(m.rows[8]
        .labels
        .iter()
        .all(|&s| s == LabelState::NotMentioned));
    assert!(m
        .rows
        .iter()
        .all(|r| r.label(obs("Mass")) == LabelState::NotMentioned));

    // Sex and age from MIMIC-IV: anchor_age plus the years from anchor_year to the study.
    let people: Vec<(Sex, Option<i32>)> = m.rows.iter().map(|r| (r.sex, r.age)).collect();
    assert_eq!(
        people,
        [
            (Sex::Female, Some(52)),
            (Sex::Female, Some(52)),
            (Sex::Female, Some(54)),
            (Sex::Male, Some(86)),
            (Sex::Male, Some(86)),
            (Sex::Female, Some(61)),
            (Sex::Female, Some(61)),
            (Sex::Female, Some(62)),
            (Sex::Unknown, None), // not in the patients table
        ]
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(json["rows"], 9);
    assert_eq!(json["patients"], 4);
    assert_eq!(json["studies"], 6);
    assert_eq!(json["unknown_views"], 1);
    assert_eq!(json["splits"]["official"], 3);
    assert_eq!(
        json["labels"][8][1]["uncertain"], 1,
        "{}",
        json["labels"][8]
    );

    // Without MIMIC-IV, sex and age are unknown.
    let no_patients: Vec<String> = args[..args.len() - 2].to_vec();
    index_ok(&with(no_patients, &["--out", &out_s]));
    let m = Manifest::read(&out).unwrap();
    assert!(m
        .rows
        .iter()
        .all(|r| r.sex == Sex::Unknown && r.age.is_none()));
}

#[test]
fn unknown_views_kept_as_frontal_and_source_split_filter() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let out_s = out.display().to_string();
    let args = Files::published().write(dir.path());
    index_ok(&with(
        args.clone(),
        &["--out", &out_s, "--unknown-view", "frontal"],
    ));
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.len(), 10);
    let axial = m.rows.iter().find(|r| r.image_id == IMAGES[8].0).unwrap();
    assert_eq!(
        (axial.view, axial.projection),
        (View::Frontal, Projection::Unknown)
    );

    // Default fractions: MIMIC's own validate and test stay whole; patients never straddle.
    for row in &m.rows {
        match row.source_split {
            Some(Split::Valid) => assert_eq!(row.split, Split::Valid),
            Some(Split::Test) => assert_eq!(row.split, Split::Official),
            _ => assert_ne!(row.split, Split::Official),
        }
    }

    index_ok(&with(args, &["--out", &out_s, "--source-split", "test"]));
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.len(), 3);
    assert!(m.rows.iter().all(|r| r.split == Split::Official));
}

/// The manifest's paths are where MIMIC-CXR-JPG keeps its images: with every file in place
/// `--require-images` passes; without one, it names it.
#[test]
fn paths_match_the_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mimic-cxr-jpg");
    std::fs::create_dir(&root).unwrap();
    for i in 0..IMAGES.len() {
        let path = root.join(path_of(i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    let out = dir.path().join("m.parquet").display().to_string();
    let args = Files::published().write(dir.path());
    let root_s = root.display().to_string();
    let stdout = index_ok(&with(
        args.clone(),
        &["--root", &root_s, "--out", &out, "--require-images"],
    ));
    assert!(stdout.contains("no image     0"), "{stdout}");
    std::fs::remove_file(root.join(path_of(2))).unwrap();
    let err = stderr_of(&with(
        args,
        &["--root", &root_s, "--out", &out, "--require-images"],
    ));
    assert!(
        err.contains("1 of 9 images are missing") && err.contains(&path_of(2)),
        "{err}"
    );
}

/// Run with the files of `files`; the error must name `file:line` and each of `words`.
fn refused(files: &Files, at: &str, words: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let args = files.write(dir.path());
    let err = stderr_of(&with(args, &["--out", out.to_str().unwrap()]));
    assert!(err.contains(at), "expected `{at}` in: {err}");
    for word in words {
        assert!(err.contains(word), "expected `{word}` in: {err}");
    }
    assert!(!out.exists(), "nothing may be written on error");
}

#[test]
fn bad_rows_are_named_by_file_and_line() {
    let mut files = Files::published();
    // Line 3 (the second image) loses its last field.
    let cut = files.metadata[2].rsplit_once(',').unwrap().0.to_string();
    files.metadata[2] = cut;
    refused(
        &files,
        "mimic-cxr-2.0.0-metadata.csv.gz:3: 11 fields where the header has 12",
        &[],
    );
    // ... which --lenient skips and counts.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let args = files.write(dir.path());
    let stdout = index_ok(&with(args, &["--out", out.to_str().unwrap(), "--lenient"]));
    assert!(stdout.contains("skipped      1 bad rows"), "{stdout}");
    assert_eq!(Manifest::read(&out).unwrap().len(), 8);

    let mut files = Files::published();
    files.split[4] = files.split[4].replace(",validate", ",val");
    refused(
        &files,
        "mimic-cxr-2.0.0-split.csv:5: column `split`: expected train, validate or test, found `val`",
        &[],
    );

    let mut files = Files::published();
    files.split[4] = files.split[4].replace(",validate", ",validate,extra");
    refused(
        &files,
        "mimic-cxr-2.0.0-split.csv:5: 5 fields where the header has 4",
        &[],
    );

    let mut files = Files::published();
    files.labels[2] = files.labels[2].replace("-1.0,1.0", "-1.0,2.0");
    refused(
        &files,
        "mimic-cxr-2.0.0-chexpert.csv:3: column `Cardiomegaly`: expected 1.0, 0.0, -1.0 or blank, found `2.0`",
        &[],
    );

    let mut files = Files::published();
    files.patients[2] = files.patients[2].replace(",M,", ",X,");
    refused(&files, "patients.csv:3: column `gender`", &["`X`"]);

    let mut files = Files::published();
    files.metadata[1] = files.metadata[1].replace(",21800506,", ",2180-05-06,");
    refused(
        &files,
        "mimic-cxr-2.0.0-metadata.csv.gz:2: column `StudyDate`",
        &["`2180-05-06`"],
    );
}

#[test]
fn the_files_must_agree_on_every_image() {
    let mut files = Files::published();
    files.split.remove(6);
    refused(
        &files,
        "mimic-cxr-2.0.0-metadata.csv.gz:7: column `dicom_id`: not in the split file",
        &[IMAGES[5].0],
    );

    let mut files = Files::published();
    files.split[6] = files.split[6].replace("50771383", "50771384");
    refused(
        &files,
        "mimic-cxr-2.0.0-metadata.csv.gz:7: column `dicom_id`: the split file",
        &[
            "mimic-cxr-2.0.0-split.csv:7",
            "study_id 50771384",
            IMAGES[5].0,
        ],
    );

    let mut files = Files::published();
    let again = files.labels[1].clone();
    files.labels.push(again);
    refused(
        &files,
        "mimic-cxr-2.0.0-chexpert.csv: `10000032/50414267` has two rows, lines 2 and 9",
        &[],
    );

    let mut files = Files::published();
    let again = files.split[1].clone();
    files.split.push(again);
    refused(&files, "has two rows, lines 2 and 12", &[IMAGES[0].0]);

    // The split file is by patient: a patient in two of its splits is refused.
    let mut files = Files::published();
    files.split[3] = files.split[3].replace(",train", ",test");
    refused(&files, "patient 10000032", &["share one split"]);

    let mut files = Files::published();
    files.metadata[0] = files.metadata[0].replace("ViewPosition", "View");
    refused(
        &files,
        "mimic-cxr-2.0.0-metadata.csv.gz: missing column `ViewPosition`",
        &[],
    );

    let mut files = Files::published();
    files.labels[0] = files.labels[0].replace("Edema", "Oedema");
    refused(
        &files,
        "mimic-cxr-2.0.0-chexpert.csv: missing column `Edema`",
        &[],
    );
}

/// The help teaches by example.
#[test]
fn help_shows_an_example() {
    let out = common::index(&["mimic", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("cxr-index mimic --root") && help.contains("--unknown-view"),
        "{help}"
    );
}
