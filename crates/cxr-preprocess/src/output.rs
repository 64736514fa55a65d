//! The output directory: what lives there besides the shards, and who may write it when.
//!
//! - `preprocess.json` records the settings the shards were made with (size, resize, rows per
//!   shard, JPEG scaling, DICOM intensity rule and a fingerprint of the manifest's ids and paths). A re-run that would
//!   mix shards of another size or manifest into the directory is refused instead of "resuming".
//!   It is written once the first shard has been made in memory, just before that shard is
//!   written (with nothing to make, at the end), so a run whose settings fail before that (a
//!   shard too large for memory, say) leaves the directory free for other settings.
//! - `errors.csv` (`row,path,reason`) lists every image left out, gathered from the shards'
//!   sidecars; it is written together with `index.json`, once every shard exists, so both always
//!   describe the complete output.
//! - `.cxr-preprocess.lock`: array tasks share the directory, and the last two to finish may both
//!   find every shard done. The files they would both write go through fixed temporary names, so
//!   the settings check and the index are written under an exclusive `flock` on this file. The
//!   kernel drops the lock when its process dies, so a `kill -9` never leaves it stuck.

use anyhow::{bail, ensure, Context, Result};
use cxr_core::atomic;
use cxr_core::shard::{
    info_file, ImageError, ShardIndex, ShardInfo, ShardSettings, FORMAT, SETTINGS_FILE,
};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::Path;

pub const ERRORS_FILE: &str = "errors.csv";
const LOCK_FILE: &str = ".cxr-preprocess.lock";

/// What the output directory checks and records of [`ShardSettings`] (the settings file's
/// format is cxr-core's: `cxr-train` reads it too).
pub trait OutputSettings {
    /// Record these settings in a new output directory, or check that an existing one was
    /// made with the same. Every shard is written after a successful claim, so two runs with
    /// different settings never both write into one directory.
    fn claim(&self, out: &Path) -> Result<()>;
    /// Check, without writing anything, that the directory was not made with other settings:
    /// `true` if it records these, `false` if it records none yet.
    fn check(&self, out: &Path) -> Result<bool>;
    /// Shard `k`'s sidecar if the shard is complete; an error if the sidecar contradicts
    /// these settings (a directory tampered with, or shards copied from another run). The
    /// shard file is not hashed here: see [`OutputSettings::state`].
    fn done(&self, out: &Path, k: usize) -> Result<Option<ShardInfo>>;
    /// Whether shard `k` is done, missing, or written but failing its sidecar's checksum.
    fn state(&self, out: &Path, k: usize) -> Result<ShardState>;
}

impl OutputSettings for ShardSettings {
    fn claim(&self, out: &Path) -> Result<()> {
        let _lock = lock(out)?;
        if !self.check(out)? {
            let json = serde_json::to_vec_pretty(self).expect("serialisable");
            atomic::write_bytes(&out.join(SETTINGS_FILE), &json)?;
        }
        Ok(())
    }

    fn check(&self, out: &Path) -> Result<bool> {
        match ShardSettings::read(out)? {
            None => Ok(false),
            Some(found) if found == *self => Ok(true),
            Some(found) => bail!(
                "{} already holds shards made with other settings ({}); \
                 choose another --out, or delete that directory to start over",
                out.display(),
                differences(&found, self).join(", ")
            ),
        }
    }

    fn done(&self, out: &Path, k: usize) -> Result<Option<ShardInfo>> {
        let Some(info) = ShardInfo::read_done(out, k) else {
            return Ok(None);
        };
        let rows = self.rows_of(k);
        ensure!(
            info.first_row == rows.start && info.rows == rows.len(),
            "{}: covers rows {}..{} but shard {k} should cover {}..{}; \
             the directory mixes runs with different settings: delete it and run again",
            out.join(cxr_core::shard::info_file(k)).display(),
            info.first_row,
            info.first_row + info.rows,
            rows.start,
            rows.end
        );
        Ok(Some(info))
    }

    fn state(&self, out: &Path, k: usize) -> Result<ShardState> {
        let Some(info) = self.done(out, k)? else {
            return Ok(ShardState::Missing);
        };
        match info.verify(out, &out.join(info_file(k))) {
            Ok(()) => Ok(ShardState::Done(info)),
            Err(e @ cxr_core::Error::Shard { .. }) => Ok(ShardState::Corrupted(e.to_string())),
            // Gone since `done` looked: a run remaking it, or someone cleaning up.
            Err(cxr_core::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(ShardState::Missing)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What differs between the settings `a` found and `b` asked for, for the refusal.
fn differences(a: &ShardSettings, other: &ShardSettings) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |name: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{name} {a} there, {b} now"));
        }
    };
    check("format", a.format.clone(), other.format.clone());
    check("size", a.size.to_string(), other.size.to_string());
    check(
        "resize",
        format!("{:?}", a.resize),
        format!("{:?}", other.resize),
    );
    check(
        "shard rows",
        a.shard_rows.to_string(),
        other.shard_rows.to_string(),
    );
    check(
        "JPEG decode",
        a.jpeg_decode.clone(),
        other.jpeg_decode.clone(),
    );
    check(
        "DICOM intensity",
        a.dicom_intensity.clone(),
        other.dicom_intensity.clone(),
    );
    check(
        "manifest rows",
        a.manifest_rows.to_string(),
        other.manifest_rows.to_string(),
    );
    if a.manifest_rows == other.manifest_rows && a.manifest_sha256 != other.manifest_sha256 {
        diffs.push("the manifest's image ids or paths differ".to_string());
    }
    diffs
}

/// What an output directory holds of one shard.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardState {
    /// Shard and sidecar are there, and the shard matches the sidecar's checksum.
    Done(ShardInfo),
    /// No (complete) sidecar: the shard is still to make.
    Missing,
    /// The shard does not match its sidecar's checksum (damaged, or changed since): the reason.
    /// A run makes it again; nothing may read it.
    Corrupted(String),
}

/// Hold the output directory's lock until the returned file is dropped.
fn lock(out: &Path) -> Result<File> {
    let path = out.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating lock file {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// What finishing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Every shard exists; `index.json` and `errors.csv` were (re)written.
    Indexed {
        shards: usize,
        images: usize,
        errors: usize,
    },
    /// These shards are still missing (other array tasks, or an interrupted run).
    Missing(Vec<usize>),
}

/// Write `errors.csv` and `index.json` if every shard of the run exists, after checking every
/// shard file against its sidecar's checksum: an index is never written over a corrupted shard.
pub fn finish(out: &Path) -> Result<Finish> {
    finish_trusting(out, &HashSet::new())
}

/// [`finish`], without hashing again the shards in `verified` (ones this process has just
/// written or checked).
pub fn finish_trusting(out: &Path, verified: &HashSet<usize>) -> Result<Finish> {
    let _lock = lock(out)?;
    let settings = ShardSettings::read(out)?.with_context(|| {
        format!(
            "{} has no {SETTINGS_FILE}: it is not a cxr-preprocess output directory",
            out.display()
        )
    })?;
    let states = (0..settings.shard_count())
        .into_par_iter()
        .map(|k| match settings.done(out, k)? {
            Some(info) if verified.contains(&k) => Ok(ShardState::Done(info)),
            Some(_) => settings.state(out, k),
            None => Ok(ShardState::Missing),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut shards = Vec::new();
    let mut missing = Vec::new();
    for (k, state) in states.into_iter().enumerate() {
        match state {
            ShardState::Done(info) => shards.push(info),
            ShardState::Missing => missing.push(k),
            ShardState::Corrupted(reason) => bail!(
                "{} cannot be indexed: shard {k} must first be made again by the command that made \
                 it (--index-only cannot): {reason}",
                out.display()
            ),
        }
    }
    if !missing.is_empty() {
        return Ok(Finish::Missing(missing));
    }
    let errors: Vec<&ImageError> = shards.iter().flat_map(|s| &s.errors).collect();
    write_errors(&out.join(ERRORS_FILE), &errors)?;
    let error_count = errors.len();
    let index = ShardIndex {
        format: FORMAT.to_string(),
        size: settings.size,
        resize: settings.resize,
        shard_rows: settings.shard_rows,
        manifest_rows: settings.manifest_rows,
        shards,
    };
    index.write(out)?;
    Ok(Finish::Indexed {
        shards: index.shards.len(),
        images: index.images(),
        errors: error_count,
    })
}

fn write_errors(path: &Path, errors: &[&ImageError]) -> Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["row", "path", "reason"])?;
    for e in errors {
        csv.write_record([e.row.to_string().as_str(), &e.path, &e.reason])?;
    }
    let bytes = csv.into_inner().context("writing errors report")?;
    atomic::write_bytes(path, &bytes)?;
    Ok(())
}
