//! DICOM through the binary: a manifest row holding a real chest film as DICOM becomes a shard
//! image, one in a syntax this build cannot decode is reported naming the file and the syntax, and
//! the DICOM intensity rule is recorded so that shards of both rules never mix.

// The shared helpers; the PNG fixtures' are not needed here.
#[allow(dead_code)]
mod common;

use common::{shared_data, write_manifest};
use cxr_core::shard::{Resize, ShardIndex};
use cxr_image::{Decoding, DicomIntensity, Target};
use std::path::Path;
use std::process::{Command, Output};

const SIZE: usize = 64;

fn film() -> Vec<u8> {
    std::fs::read(shared_data().join("dicom/siim_sample_pa.dcm")).unwrap()
}

/// The film relabelled as JPEG-LS in its file meta (the UIDs have the same length).
fn film_as_jpeg_ls() -> Vec<u8> {
    let (from, to) = (b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.80");
    let mut bytes = film();
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
    bytes
}

fn preprocess(dir: &Path, out: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxr-preprocess"))
        .arg("--manifest")
        .arg(dir.join("m.parquet"))
        .arg("--root")
        .arg(dir.join("images"))
        .arg("--out")
        .arg(dir.join(out))
        .args(["--size", &SIZE.to_string(), "--shard-rows", "4"])
        .args(extra)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn shard_images(out: &Path) -> Vec<Vec<u8>> {
    let index = ShardIndex::read(out).unwrap();
    let mut images = Vec::new();
    for shard in index.open_all(out).unwrap() {
        images.extend((0..shard.len()).map(|i| shard.image(i).to_vec()));
    }
    images
}

#[test]
fn a_dicom_film_in_a_manifest_becomes_a_shard_image() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    // No .dcm suffix on the first: DICOM is recognised by its header, as PACS exports name files.
    std::fs::write(images.join("1.2.3.4"), film()).unwrap();
    std::fs::write(images.join("jpegls.dcm"), film_as_jpeg_ls()).unwrap();
    write_manifest(
        &dir.path().join("m.parquet"),
        &["1.2.3.4".to_string(), "jpegls.dcm".to_string()],
    );

    let output = preprocess(dir.path(), "out", &[]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    let reason = "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80) is not decoded by \
                  this build";
    assert!(
        text.contains("row 1 jpegls.dcm: ") && text.contains(reason),
        "{text}"
    );
    let errors = std::fs::read_to_string(dir.path().join("out/errors.csv")).unwrap();
    assert!(
        errors.contains("1,jpegls.dcm,") && errors.contains(reason),
        "{errors}"
    );

    // The shard holds exactly what `prepare` makes of the file, with the default rule.
    let target = Target::new(SIZE, Resize::Pad);
    let mut expected = vec![0; SIZE * SIZE];
    cxr_image::prepare(&film(), &target, Decoding::default(), &mut expected).unwrap();
    assert_eq!(shard_images(&dir.path().join("out")), [expected]);
    let settings = std::fs::read_to_string(dir.path().join("out/preprocess.json")).unwrap();
    assert!(
        settings.contains("\"dicom_intensity\": \"window\""),
        "{settings}"
    );

    // The other rule is refused in that directory, and recorded in a new one.
    let output = preprocess(dir.path(), "out", &["--dicom-intensity", "full-range"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DICOM intensity window there, full-range now"),
        "{text}"
    );
    let output = preprocess(
        dir.path(),
        "full",
        &["--dicom-intensity", "full-range", "--allow-errors"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let settings = std::fs::read_to_string(dir.path().join("full/preprocess.json")).unwrap();
    assert!(
        settings.contains("\"dicom_intensity\": \"full-range\""),
        "{settings}"
    );
    let decoding = Decoding {
        dicom: DicomIntensity::FullRange,
        ..Decoding::default()
    };
    let mut expected = vec![0; SIZE * SIZE];
    cxr_image::prepare(&film(), &target, decoding, &mut expected).unwrap();
    assert_eq!(shard_images(&dir.path().join("full")), [expected]);
}

/// Output directories made before DICOM was read record no DICOM rule: they resume as `window`.
#[test]
fn settings_without_a_dicom_rule_resume_as_window() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("film.dcm"), film()).unwrap();
    write_manifest(&dir.path().join("m.parquet"), &["film.dcm".to_string()]);
    let output = preprocess(dir.path(), "out", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let path = dir.path().join("out/preprocess.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    settings
        .as_object_mut()
        .unwrap()
        .remove("dicom_intensity")
        .unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
    let output = preprocess(dir.path(), "out", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("1 skipped as already done"));
    let output = preprocess(dir.path(), "out", &["--dicom-intensity", "full-range"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}
