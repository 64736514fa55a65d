//! `cxr-index`: from a dataset's own label files to a [`cxr_core::Manifest`].
//!
//! Each dataset module turns CSV records into [`ManifestRow`]s that borrow from the record,
//! reporting any value it does not understand with the file, line, column and value
//! ([`IndexError`]); an [`Indexer`] keeps the rows a study wants ([`filter`]), assigns
//! patient-level splits ([`split`]) and stores them column by column, the only copy of each
//! value; [`images`] checks which rows have an image on disk; [`summary`] counts what was indexed.

pub mod chexpert;
pub mod csvfile;
pub mod filter;
pub mod images;
pub mod nih;
pub mod split;
pub mod summary;

use cxr_core::{ManifestColumns, ManifestRow};
use filter::Filter;
use split::Splitter;
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

/// Where a label file's rows go, one by one: `Err` for a row that could not be read; returning
/// `Err` stops reading.
pub type Sink<'s> = dyn FnMut(Result<ManifestRow<&str>, IndexError>) -> Result<(), IndexError> + 's;

/// The manifest being built from label files: rows the filter keeps, with their patient's split,
/// plus the rows `--lenient` skipped.
pub struct Indexer {
    pub filter: Filter,
    pub splitter: Splitter,
    pub lenient: bool,
    pub columns: ManifestColumns,
    pub skipped: Vec<IndexError>,
}

impl Indexer {
    pub fn new(filter: Filter, splitter: Splitter, lenient: bool) -> Indexer {
        Indexer {
            filter,
            splitter,
            lenient,
            columns: ManifestColumns::default(),
            skipped: Vec::new(),
        }
    }

    /// Add one row read from a label file, stopping at the first bad row unless `lenient`.
    pub fn add(&mut self, row: Result<ManifestRow<&str>, IndexError>) -> Result<(), IndexError> {
        match row {
            Ok(mut row) if self.filter.keeps(&row) => {
                row.split = self.splitter.split(&row);
                self.columns.push(&row);
            }
            Ok(_) => {}
            Err(e) if self.lenient && e.is_row_level() => self.skipped.push(e),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
