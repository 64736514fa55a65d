//! Helpers shared by the integration tests: where the shared data is, and manifests for it.

use cxr_core::{Dataset, Manifest, ManifestRow, Projection};
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
            projection: Projection::Pa,
            ..ManifestRow::unlabelled(
                Dataset::Nih,
                &format!("{i:04}-{path}"),
                path,
                &format!("{i:08}"),
                &format!("{i:08}/000"),
            )
        })
        .collect();
    Manifest { rows }
        .write(file)
        .expect("writing test manifest");
}
