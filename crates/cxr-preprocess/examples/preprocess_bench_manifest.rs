//! Write a manifest listing every PNG and JPEG in a folder, for `bench/preprocess.sh`.
//!
//! Usage: `preprocess_bench_manifest DIR OUT.parquet [REPEAT]`: one row per file (sorted by
//! name, path relative to DIR), the whole list REPEAT times (default 1) so that a small folder
//! still makes a run long enough to time.

use cxr_core::{Dataset, Manifest, ManifestRow, Projection};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 2 || args.len() == 3,
        "usage: preprocess_bench_manifest DIR OUT.parquet [REPEAT]"
    );
    let (dir, out) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let repeat: usize = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(1);
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.retain(|n| {
        [".png", ".jpg", ".jpeg"]
            .iter()
            .any(|ext| n.to_lowercase().ends_with(ext))
    });
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "no PNG or JPEG files in {}",
        dir.display()
    );
    let rows = (0..repeat)
        .flat_map(|r| names.iter().map(move |n| (r, n)))
        .enumerate()
        .map(|(i, (r, name))| ManifestRow {
            projection: Projection::Pa,
            ..ManifestRow::unlabelled(
                Dataset::Nih,
                &format!("{r}/{name}"),
                name,
                &format!("{i:08}"),
                &format!("{i:08}/000"),
            )
        })
        .collect();
    Manifest { rows }.write(&out)?;
    Ok(())
}
