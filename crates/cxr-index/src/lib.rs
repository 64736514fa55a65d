//! `cxr-index`: from a dataset's own label files to a [`cxr_core::Manifest`].
//!
//! Each dataset module turns CSV records into [`ManifestRow`]s, reporting any value it does not
//! understand with the file, line, column and value ([`IndexError`]); [`split`] assigns
//! patient-level splits; [`filter`] keeps the rows a study wants; [`images`] checks which rows
//! have an image on disk; [`summary`] counts what was indexed.

pub mod chexpert;
pub mod csvfile;
pub mod filter;
pub mod images;
pub mod nih;
pub mod split;
pub mod summary;

use cxr_core::ManifestRow;
use std::path::PathBuf;

/// A value in a label file that the indexer does not understand.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{file}:{line}: column `{column}`: {problem} `{value}`")]
    Value {
        file: PathBuf,
        line: u64,
        column: String,
        value: String,
        problem: String,
    },
    #[error("{file}: missing column `{column}` (is this the right kind of file? found: {found})")]
    MissingColumn {
        file: PathBuf,
        column: String,
        found: String,
    },
    #[error("{file}:{line}: {source}")]
    Csv {
        file: PathBuf,
        line: u64,
        source: csv::Error,
    },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl IndexError {
    /// Whether `--lenient` may skip the row that raised this error.
    pub fn is_row_level(&self) -> bool {
        matches!(self, IndexError::Value { .. } | IndexError::Csv { .. })
    }
}

/// Rows read from one label file, plus the rows `--lenient` skipped.
#[derive(Debug, Default)]
pub struct Indexed {
    pub rows: Vec<ManifestRow>,
    pub skipped: Vec<IndexError>,
}

/// Run `parse` over every record, stopping at the first bad row unless `lenient`.
pub fn collect_rows<I>(records: I, lenient: bool) -> Result<Indexed, IndexError>
where
    I: Iterator<Item = Result<ManifestRow, IndexError>>,
{
    let mut indexed = Indexed::default();
    for record in records {
        match record {
            Ok(row) => indexed.rows.push(row),
            Err(e) if lenient && e.is_row_level() => indexed.skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(indexed)
}
