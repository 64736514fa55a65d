//! Which rows have an image on disk.
//!
//! Users often hold only part of a dataset (the demo has 500 of NIH's 112,120 images), so missing
//! images are counted, not fatal, unless `--require-images` asks for all of them.

use cxr_core::{Dataset, ManifestColumns, ManifestRow};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Point NIH rows at wherever their file lies under `root` (`images/`, `images_001/images/`, ...),
/// found by one walk of the tree (the first in path order where a name is there twice). Rows
/// whose file is not found keep `images/NAME`.
pub fn locate_nih(root: &Path, rows: &ManifestColumns) -> std::io::Result<ManifestColumns> {
    let mut found: HashMap<String, String> = HashMap::new();
    for rel in files_under(root)? {
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        found
            .entry(name)
            .or_insert_with(|| rel.to_string_lossy().replace('\\', "/"));
    }
    let located = rows.rows().map(|row| match found.get(row.image_id) {
        Some(rel) if row.dataset == Dataset::Nih => ManifestRow {
            path: rel.as_str(),
            ..row
        },
        _ => row,
    });
    Ok(located.collect())
}

/// Every file under `root`, as paths relative to it, in sorted order (so that what is built from
/// them is the same on every machine); hidden files and folders (`.name`) are left out.
pub fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files)?;
    Ok(files)
}

fn walk(root: &Path, rel: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            walk(root, &path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// Positions of rows with no file under `root`.
pub fn missing(root: &Path, rows: &ManifestColumns) -> Vec<usize> {
    rows.rows()
        .enumerate()
        .filter(|(_, r)| !r.image_path(root).is_ok_and(|p| p.is_file()))
        .map(|(i, _)| i)
        .collect()
}
