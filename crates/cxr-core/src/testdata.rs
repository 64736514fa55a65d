//! Where the tests find the project's read-only real data and golden files: the shared folder.
//!
//! The folder holds `data/` (NIH and CheXpert label files and images, DICOM samples) and
//! `golden/` (files made by PyTorch and scikit-learn that the tools must agree with). It is not
//! part of the repository; one setting says where it is, read the same way by every test (here)
//! and every script (`SHARED=${CXR_SHARED:-../shared}`):
//!
//! - the environment variable `CXR_SHARED`, a relative path being taken from the repository root
//!   (the Makefile exports it from its `SHARED` variable: `make test SHARED=/elsewhere`);
//! - otherwise `shared/` beside the repository (`../shared` from its root), as CI lays it out.
//!
//! A missing shared folder is a loud failure, never a skipped test: without the real data the
//! tests would prove nothing.

use std::path::{Path, PathBuf};

/// The environment variable that names the shared folder.
pub const SHARED_ENV: &str = "CXR_SHARED";

/// The repository root (this crate sits at `crates/cxr-core`).
fn repo_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(Path::parent).unwrap_or(manifest)
}

/// The default shared folder: `shared/` beside the repository.
fn default_shared() -> PathBuf {
    let root = repo_root();
    root.parent().unwrap_or(root).join("shared")
}

/// The shared folder (the one holding `data/` and `golden/`): `$CXR_SHARED` where it is set and
/// not empty (relative to the repository root), `shared/` beside the repository otherwise. Not
/// checked: [`shared_path`] says what to do when something is missing.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os(SHARED_ENV) {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => default_shared(),
    }
}

/// `rel` inside the shared folder (`"data/nih"`, `"golden/auc/auc_cases.csv"`), which must
/// exist.
///
/// # Panics
///
/// When it does not, with where it was looked for and how to point the tests at the folder: for
/// tests, to which a missing shared folder is a failure.
#[track_caller]
pub fn shared_path(rel: &str) -> PathBuf {
    let dir = shared_dir();
    let path = dir.join(rel);
    if !path.exists() {
        let from = match std::env::var_os(SHARED_ENV) {
            Some(v) if !v.is_empty() => format!("{SHARED_ENV}={}", v.to_string_lossy()),
            _ => format!("{SHARED_ENV} unset, so shared/ beside the repository"),
        };
        panic!(
            "shared test data missing: no {rel} in {} ({from}). These tests need the project's \
             read-only real data and golden files: set {SHARED_ENV} to the folder that holds \
             data/ and golden/ (make test SHARED=DIR does), or put shared/ beside the repository \
             (expected at {})",
            dir.display(),
            default_shared().display()
        );
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_beside_the_repository() {
        let shared = default_shared();
        assert_eq!(shared.file_name().unwrap(), "shared");
        assert!(repo_root().join("Cargo.lock").is_file());
        assert_eq!(shared.parent(), repo_root().parent());
    }
}
