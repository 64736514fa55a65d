//! Helpers shared by the integration tests: where the shared data is, and manifests for it.

use cxr_core::{
    Dataset, LabelState, Manifest, ManifestRow, Projection, Sex, Split, View, OBSERVATIONS,
};
use std::path::{Path, PathBuf};

/// The read-only real data beside the project (`shared/data`); a missing copy is a loud failure,
/// not a skipped test.
pub fn shared_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        dir.join("nih/images-full").is_dir(),
        "shared test data missing: expected {} (the workspace's sibling `shared/data`)",
        dir.display()
    );
    dir
}

pub fn nih_full() -> PathBuf {
    shared_data().join("nih/images-full")
}

/// The 40 NIH 1024x1024 PNGs, sorted by name.
pub fn nih_pngs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(nih_full())
        .expect("NIH images")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 40, "expected the 40 NIH full-size PNGs");
    names
}

/// A manifest with one row per path (relative to the image root), written to `file`.
pub fn write_manifest(file: &Path, paths: &[String]) {
    let rows = paths
        .iter()
        .enumerate()
        .map(|(i, path)| ManifestRow {
            image_id: format!("{i:04}-{path}"),
            dataset: Dataset::Nih,
            path: path.clone(),
            patient_id: format!("{i:08}"),
            study_id: format!("{i:08}/000"),
            view: View::Frontal,
            projection: Projection::Pa,
            sex: Sex::Unknown,
            age: None,
            source_split: None,
            split: Split::Train,
            labels: [LabelState::NotMentioned; OBSERVATIONS.len()],
        })
        .collect();
    Manifest { rows }
        .write(file)
        .expect("writing test manifest");
}
