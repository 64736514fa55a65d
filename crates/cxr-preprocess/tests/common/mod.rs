//! Helpers shared by the integration tests: where the shared data is, and manifests for it.

use cxr_core::testdata::{shared_dir, shared_path};
use cxr_core::{Dataset, Manifest, ManifestRow, Projection};
use std::path::{Path, PathBuf};

/// The read-only real data (`$CXR_SHARED/data`, by default `shared/data` beside the repository:
/// `cxr_core::testdata`); a missing copy is a loud failure, not a skipped test.
pub fn shared_data() -> PathBuf {
    // NIH's full-size images, which every test here reads, stand for the whole copy.
    shared_path("data/nih/images-full");
    shared_dir().join("data")
}

/// A JPEG fixture of the decoder's (`crates/cxr-image/tests/data`, which says how each was made).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cxr-image/tests/data")
        .join(name)
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
