//! `cxr-index dicom` on a folder as a hospital export leaves it: a real chest radiograph (the
//! SIIM sample from the shared data: CR, PA, JPEG baseline, its age written `62`), small images
//! written here with dicom-object (a lateral, a frontal known only by its coded view, an
//! oblique), and files that must not become rows: a structured report, a copy of an image, a
//! text file, an image without PatientID and a hidden file.

mod common;

use common::{index_ok_with_notes, obs, stderr_of};
use cxr_core::{Dataset, LabelState, Manifest, Projection, Sex, Split, View};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use std::path::Path;

const SIIM_SOP: &str = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819";
const SIIM_STUDY: &str = "1.2.276.0.7230010.3.1.2.8323329.6904.1517875201.850818";
const SIIM_PATIENT: &str = "16d7f894-55d7-4d95-8957-d18987f0e981";

fn element(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

/// A 2x2 8-bit DX image of `patient` (none if empty) in `study`, with `more` elements.
fn image(
    patient: &str,
    study: &str,
    sop: &str,
    more: Vec<DataElement<InMemDicomObject>>,
) -> InMemDicomObject {
    let mut object = InMemDicomObject::from_element_iter([
        element(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
        ),
        element(tags::SOP_INSTANCE_UID, VR::UI, sop),
        element(tags::MODALITY, VR::CS, "DX"),
        element(tags::STUDY_INSTANCE_UID, VR::UI, study),
        element(tags::SAMPLES_PER_PIXEL, VR::US, 1u16),
        element(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        element(tags::ROWS, VR::US, 2u16),
        element(tags::COLUMNS, VR::US, 2u16),
        element(tags::BITS_ALLOCATED, VR::US, 8u16),
        element(tags::BITS_STORED, VR::US, 8u16),
        element(tags::HIGH_BIT, VR::US, 7u16),
        element(tags::PIXEL_REPRESENTATION, VR::US, 0u16),
        element(tags::PIXEL_DATA, VR::OB, vec![0u8, 64, 128, 255]),
    ]);
    if !patient.is_empty() {
        object.put(element(tags::PATIENT_ID, VR::LO, patient));
    }
    for e in more {
        object.put(e);
    }
    object
}

fn write(path: &Path, object: InMemDicomObject) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let meta = FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN);
    object.with_meta(meta).unwrap().write_to_file(path).unwrap();
}

/// The export: three images to index, five files to list and one hidden file to pass over.
fn export(root: &Path) {
    let siim = cxr_core::testdata::shared_path("data/dicom/siim_sample_pa.dcm");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::copy(siim, root.join("a/siim.dcm")).unwrap();

    let coded_view = InMemDicomObject::from_element_iter([element(
        tags::CODE_MEANING,
        VR::LO,
        "antero-posterior",
    )]);
    let coded = vec![
        DataElement::new(
            tags::VIEW_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![coded_view]),
        ),
        element(tags::PATIENT_SEX, VR::CS, "F"),
        element(tags::PATIENT_BIRTH_DATE, VR::DA, "19700601"),
        element(tags::STUDY_DATE, VR::DA, "20200101"),
    ];
    write(
        &root.join("b/coded.dcm"),
        image("P2", "1.2.826.0.1.2", "1.2.826.0.1.2.1", coded),
    );
    let lateral = vec![
        element(tags::VIEW_POSITION, VR::CS, "LL"),
        element(tags::PATIENT_SEX, VR::CS, "F"),
        element(tags::PATIENT_AGE, VR::AS, "049Y"),
    ];
    write(
        &root.join("b/lateral.dcm"),
        image("P2", "1.2.826.0.1.2", "1.2.826.0.1.2.2", lateral),
    );

    std::fs::create_dir_all(root.join("c")).unwrap();
    std::fs::copy(root.join("b/lateral.dcm"), root.join("c/copy.dcm")).unwrap();
    std::fs::copy(root.join("b/lateral.dcm"), root.join(".hidden.dcm")).unwrap();
    std::fs::write(root.join("c/notes.txt"), "exported 2020-01-02\n").unwrap();
    let report = InMemDicomObject::from_element_iter([
        element(tags::SOP_CLASS_UID, VR::UI, uids::BASIC_TEXT_SR_STORAGE),
        element(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.2.9"),
        element(tags::MODALITY, VR::CS, "SR"),
        element(tags::PATIENT_ID, VR::LO, "P2"),
        element(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.826.0.1.2"),
    ]);
    write(&root.join("c/report.dcm"), report);

    write(
        &root.join("d/nopatient.dcm"),
        image("", "1.2.826.0.1.4", "1.2.826.0.1.4.1", vec![]),
    );
    let oblique = vec![
        element(tags::VIEW_POSITION, VR::CS, "LAO"),
        element(tags::PATIENT_SEX, VR::CS, "O"),
        element(tags::PATIENT_AGE, VR::AS, "003M"),
    ];
    write(
        &root.join("d/oblique.dcm"),
        image("P3", "1.2.826.0.1.3", "1.2.826.0.1.3.1", oblique),
    );
}

fn args(root: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "dicom".to_string(),
        "--root".to_string(),
        root.display().to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_dicom_folder_indexes_its_images_and_lists_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("export");
    export(&root);
    let labels = dir.path().join("labels.csv");
    std::fs::write(
        &labels,
        format!(
            "StudyInstanceUID,Report,Pleural Effusion,Cardiomegaly,No Finding\n\
             {SIIM_STUDY},\"normal, no effusion\",0.0,,1.0\n\
             1.2.826.0.1.2,,1.0,-1.0,\n\
             9.9.9,,1.0,,\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("m.parquet");
    let (stdout, notes) =
        index_ok_with_notes(&args(&root, &out, &["--labels", labels.to_str().unwrap()]));

    let m = Manifest::read(&out).unwrap();
    let paths: Vec<&str> = m.rows.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["a/siim.dcm", "b/coded.dcm", "b/lateral.dcm"]);
    assert!(m.rows.iter().all(|r| r.dataset == Dataset::Dicom));
    let siim = &m.rows[0];
    assert_eq!(
        (
            siim.image_id.as_str(),
            siim.patient_id.as_str(),
            siim.study_id.as_str()
        ),
        (SIIM_SOP, SIIM_PATIENT, SIIM_STUDY)
    );
    assert_eq!(
        (siim.view, siim.projection, siim.sex, siim.age),
        (View::Frontal, Projection::Pa, Sex::Male, Some(62))
    );
    let coded = &m.rows[1];
    assert_eq!(
        (coded.image_id.as_str(), coded.patient_id.as_str()),
        ("1.2.826.0.1.2.1", "P2")
    );
    assert_eq!(
        (coded.view, coded.projection, coded.sex, coded.age),
        (View::Frontal, Projection::Ap, Sex::Female, Some(49))
    );
    let lateral = &m.rows[2];
    assert_eq!(
        (lateral.view, lateral.projection, lateral.age),
        (View::Lateral, Projection::Ll, Some(49))
    );
    assert!(m.rows.iter().all(|r| r.source_split.is_none()));

    // Labels by study: both images of 1.2.826.0.1.2 carry its row.
    assert_eq!(siim.label(obs("Pleural Effusion")), LabelState::Negative);
    assert_eq!(siim.label(obs("No Finding")), LabelState::Positive);
    assert_eq!(siim.label(obs("Cardiomegaly")), LabelState::NotMentioned);
    for row in [coded, lateral] {
        assert_eq!(row.label(obs("Pleural Effusion")), LabelState::Positive);
        assert_eq!(row.label(obs("Cardiomegaly")), LabelState::Uncertain);
        assert_eq!(row.label(obs("Edema")), LabelState::NotMentioned);
    }
    assert!(
        notes.contains("columns not read (no observation of that name): Report")
            && notes.contains("1 of 3 rows of")
            && notes.contains("match no image found; the first: `9.9.9` (line 4)"),
        "{notes}"
    );

    // The files not indexed, in path order, on stderr and beside the manifest.
    let report = dir.path().join("m.parquet.skipped.csv");
    assert!(
        stdout.contains("not indexed  5 files")
            && stdout.contains(&format!(
                "listed 5 files not indexed in {}",
                report.display()
            )),
        "{stdout}"
    );
    let listed = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 6, "{listed}");
    assert_eq!(lines[0], "path,reason");
    let expect = [
        (
            "c/copy.dcm,",
            "the same image (SOPInstanceUID 1.2.826.0.1.2.2) as b/lateral.dcm",
        ),
        ("c/notes.txt,", "not read as DICOM"),
        ("c/report.dcm,", "DICOM without pixel data"),
        ("d/nopatient.dcm,", "no PatientID"),
        (
            "d/oblique.dcm,",
            "ViewPosition `LAO` is neither frontal nor lateral",
        ),
    ];
    for (line, (path, reason)) in lines[1..].iter().zip(expect) {
        assert!(line.starts_with(path) && line.contains(reason), "{line}");
    }
    assert!(lines[3].contains("Modality SR"), "{}", lines[3]);
    assert!(
        notes.contains("cxr-index: not indexed: c/notes.txt: not read as DICOM"),
        "{notes}"
    );
    assert!(!listed.contains("hidden"));
}

/// `--unknown-view frontal` keeps the oblique; labels keyed by path; `--fractions 0,0,1` puts
/// the whole export in `test`, to be scored.
#[test]
fn oblique_views_kept_as_frontal_and_labels_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("export");
    export(&root);
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, "path,Edema\nb/lateral.dcm,1.0\n").unwrap();
    let out = dir.path().join("m.parquet");
    let labels = labels.display().to_string();
    let extra = [
        "--labels",
        &labels,
        "--unknown-view",
        "frontal",
        "--fractions",
        "0,0,1",
    ];
    let (stdout, notes) = index_ok_with_notes(&args(&root, &out, &extra));
    assert!(stdout.contains("not indexed  4 files"), "{stdout}");
    assert!(
        notes.contains("3 images have no row in") && !notes.contains("match no image"),
        "{notes}"
    );
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.len(), 4);
    assert!(m.rows.iter().all(|r| r.split == Split::Test));
    let oblique = m.rows.iter().find(|r| r.path == "d/oblique.dcm").unwrap();
    assert_eq!(
        (oblique.view, oblique.projection, oblique.sex, oblique.age),
        (View::Frontal, Projection::Unknown, Sex::Unknown, Some(0))
    );
    for row in &m.rows {
        let edema = if row.path == "b/lateral.dcm" {
            LabelState::Positive
        } else {
            LabelState::NotMentioned
        };
        assert_eq!(row.label(obs("Edema")), edema, "{}", row.path);
    }
}

#[test]
fn folders_without_images_and_outputs_over_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("export");
    export(&root);
    let image = root.join("b/lateral.dcm");
    let before = std::fs::read(&image).unwrap();
    let err = stderr_of(&args(&root, &image, &[]));
    assert!(
        err.contains(&format!(
            "is also an input (an image under --root, {})",
            image.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&image).unwrap(), before);

    let empty = dir.path().join("reports");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(root.join("c/report.dcm"), empty.join("r.dcm")).unwrap();
    let out = dir.path().join("m.parquet");
    let err = stderr_of(&args(&empty, &out, &[]));
    assert!(
        err.contains("not indexed: r.dcm: DICOM without pixel data")
            && err.contains("no DICOM image to index under"),
        "{err}"
    );
    assert!(!out.exists() && !dir.path().join("m.parquet.skipped.csv").exists());

    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, "AccessionNumber,Edema\nA1,1.0\n").unwrap();
    let err = stderr_of(&args(&root, &out, &["--labels", labels.to_str().unwrap()]));
    assert!(
        err.contains("missing column `SOPInstanceUID, or StudyInstanceUID, or path`"),
        "{err}"
    );
}

/// The help teaches by example.
#[test]
fn help_shows_an_example() {
    let out = common::index(&["dicom", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("cxr-index dicom --root") && help.contains("skipped.csv"),
        "{help}"
    );
}
