//! Running the `cxr-index` binary, for the end-to-end tests of every dataset.

#![allow(dead_code)] // each test file uses its own share of these

use cxr_core::{Manifest, ManifestRow, Observation};
use std::process::{Command, Output};

pub fn index<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxr-index"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

/// Run, require success, and return stdout.
pub fn index_ok<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> String {
    let out = index(args);
    assert!(
        out.status.success(),
        "cxr-index {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run, require success, and return stdout and stderr.
pub fn index_ok_with_notes<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> (String, String) {
    let out = index(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "cxr-index {args:?} failed:\n{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// Run, require failure, and return stderr.
pub fn stderr_of<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> String {
    let out = index(args);
    assert!(
        !out.status.success(),
        "cxr-index {args:?} should have failed"
    );
    String::from_utf8(out.stderr).unwrap()
}

pub fn obs(name: &str) -> Observation {
    Observation::parse(name).unwrap()
}

pub fn count(m: &Manifest, f: impl Fn(&ManifestRow) -> bool) -> usize {
    m.rows.iter().filter(|r| f(r)).count()
}
