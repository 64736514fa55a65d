//! Which rows have an image on disk.
//!
//! Users often hold only part of a dataset (the demo has 500 of NIH's 112,120 images), so missing
//! images are counted, not fatal, unless `--require-images` asks for all of them.

use cxr_core::{Dataset, ManifestColumns, ManifestRow};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Point NIH rows at wherever their file lies under `root` (`images/`, `images_001/images/`, ...),
/// found by one walk of the tree. Rows whose file is not found keep `images/NAME`.
pub fn locate_nih(root: &Path, rows: &ManifestColumns) -> std::io::Result<ManifestColumns> {
    let mut found = HashMap::new();
    walk(root, Path::new(""), &mut found)?;
    let found: HashMap<String, String> = found
        .into_iter()
        .map(|(name, rel)| (name, rel.to_string_lossy().replace('\\', "/")))
        .collect();
    let located = rows.rows().map(|row| match found.get(row.image_id) {
        Some(rel) if row.dataset == Dataset::Nih => ManifestRow {
            path: rel.as_str(),
            ..row
        },
        _ => row,
    });
    Ok(located.collect())
}

fn walk(root: &Path, rel: &Path, found: &mut HashMap<String, PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = rel.join(&name);
        if entry.file_type()?.is_dir() {
            walk(root, &path, found)?;
        } else {
            found.entry(name).or_insert(path);
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
