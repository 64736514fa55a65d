//! Crash-safe file writes: write to a temporary name in the target's directory, flush to disk,
//! then rename over the target. A reader (or a re-run after `kill -9`) sees either the old file
//! or the complete new one, never a torn write.
//!
//! This is the workspace's one atomic write: manifests, shards, predictions, checkpoints and
//! optimiser states all go through it. The temporary file has a unique name (`.NAME.XXXXXX.tmp`)
//! so that two processes writing one target (two array tasks re-running one shard, say) never
//! write into each other's temporary file; the last rename wins, whole.

use crate::{Error, Result};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Write `path` atomically through a buffered writer handed to `fill`.
pub fn write_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&mut fs::File>) -> std::io::Result<()>,
{
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let prefix = format!(
        ".{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(path, e))?;
    let mut writer = BufWriter::new(tmp.as_file_mut());
    let written = fill(&mut writer).and_then(|_| writer.flush());
    drop(writer);
    // Dropping `tmp` on any error (or a failed rename: the target is a directory, say) removes
    // the temporary file.
    written
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Write `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_bytes(&path, b"old").unwrap();
        write_bytes(&path, b"new contents").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(entries(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"kept").unwrap();
        let e = write_bytes(&path, b"new contents").unwrap_err();
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
        assert_eq!(entries(dir.path()), ["out"]);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"kept");
    }
}
