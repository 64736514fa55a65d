//! `cxr-index`: from a dataset's own label files to a [`cxr_core::Manifest`].
//!
//! Each dataset module turns CSV records into [`ManifestRow`]s that borrow from the record,
//! reporting any value it does not understand with the file, line, column and value
//! ([`IndexError`]); an [`Indexer`] keeps the rows a study wants ([`filter`]), assigns
//! patient-level splits ([`split`]) and stores them column by column, the only copy of each
//! value, and refuses an image id kept twice (naming the file and line of both rows);
//! [`images`] checks which rows have an image on disk; [`summary`] counts what was indexed.
//! Datasets whose labels sit in a file of their own ([`mimic`], a [`dicom`] folder's
//! `--labels`) join them by study or image through a [`label_table::LabelTable`]; [`view`]
//! reads DICOM's view terms, for MIMIC's metadata and DICOM headers alike.

pub mod chexpert;
pub mod csvfile;
pub mod dicom;
pub mod filter;
pub mod images;
pub mod label_table;
pub mod mimic;
pub mod nih;
pub mod split;
pub mod summary;
pub mod view;

use cxr_core::{ManifestColumns, ManifestRow};
use filter::Filter;
use rustc_hash::FxBuildHasher;
use split::Splitter;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

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
    #[error("{file}:{line}: {found} fields where the header has {expected} (a comma too many or too few?)")]
    Width {
        file: PathBuf,
        line: u64,
        found: usize,
        expected: usize,
    },
    #[error("{file}: no rows: the file has a header but no records (is it the right file?)")]
    NoRows { file: PathBuf },
    #[error(
        "{file}: `{key}` has two rows, lines {first} and {second}: each key must have one (the \
         same file given twice, or two files joined into one?)"
    )]
    DuplicateKey {
        file: PathBuf,
        key: String,
        first: u64,
        second: u64,
    },
    /// An image whose view is neither frontal nor lateral (see [`view`]): left out and counted,
    /// never fatal, unless `--unknown-view frontal` keeps it.
    #[error("{file}:{line}: view `{value}` is neither frontal nor lateral")]
    UnknownView {
        file: PathBuf,
        line: u64,
        value: String,
    },
    #[error(
        "image `{id}` is in the label files twice: {}:{} and {}:{}{}; each image must have one \
         row",
        first.0.display(), first.1, second.0.display(), second.1,
        if first == second { " (the same file given twice?)" } else { "" }
    )]
    Duplicate {
        id: String,
        first: (PathBuf, u64),
        second: (PathBuf, u64),
    },
    #[error("{0}")]
    Other(String),
}

impl IndexError {
    /// Whether `--lenient` may skip the row that raised this error.
    pub fn is_row_level(&self) -> bool {
        matches!(
            self,
            IndexError::Value { .. } | IndexError::Csv { .. } | IndexError::Width { .. }
        )
    }
}

/// Where a label file's rows go, one by one, with the line each starts on: `Err` for a row that
/// could not be read; returning `Err` stops reading.
pub type Sink<'s> =
    dyn FnMut(u64, Result<ManifestRow<&str>, IndexError>) -> Result<(), IndexError> + 's;

/// The manifest being built from label files: rows the filter keeps, with their patient's split,
/// plus the rows `--lenient` skipped.
pub struct Indexer {
    pub filter: Filter,
    pub splitter: Splitter,
    pub lenient: bool,
    pub columns: ManifestColumns,
    pub skipped: Vec<IndexError>,
    /// Images left out because their view is neither frontal nor lateral, by the value that
    /// said so (`""` for a blank).
    pub unknown_views: std::collections::BTreeMap<String, usize>,
    /// Rows read from the label files, kept or not.
    pub read: usize,
    /// The label files read so far; the last is being read.
    files: Vec<PathBuf>,
    /// Where each kept row was read: index into `files`, line.
    origins: Vec<(u32, u64)>,
    /// Per kept row, the high half of its image id's hash above the row's index: sorted, rows of
    /// one id (and of the rare ids that share a half-hash) come together. Checked once at the
    /// end: a hash set of the ids, probed row by row, made indexing NIH a tenth slower.
    id_keys: Vec<u64>,
}

impl Indexer {
    pub fn new(filter: Filter, splitter: Splitter, lenient: bool) -> Indexer {
        Indexer {
            filter,
            splitter,
            lenient,
            columns: ManifestColumns::default(),
            skipped: Vec::new(),
            unknown_views: Default::default(),
            read: 0,
            files: Vec::new(),
            origins: Vec::new(),
            id_keys: Vec::new(),
        }
    }

    /// Start reading the label file `path`: the rows added next come from it.
    pub fn begin_file(&mut self, path: &Path) {
        self.files.push(path.to_path_buf());
    }

    /// Add one row read from a label file at `line` (of the file given to
    /// [`Indexer::begin_file`]), stopping at the first bad row unless `lenient`. Image ids kept
    /// twice are found by [`Indexer::check_unique_ids`], once every file is read.
    pub fn add(
        &mut self,
        line: u64,
        row: Result<ManifestRow<&str>, IndexError>,
    ) -> Result<(), IndexError> {
        if row.is_ok() {
            self.read += 1;
        }
        match row {
            Ok(mut row) if self.filter.keeps(&row) => {
                let file = self.files.len().saturating_sub(1) as u32;
                let hash = FxBuildHasher.hash_one(row.image_id) & !u64::from(u32::MAX);
                self.id_keys.push(hash | self.columns.len() as u64);
                row.split = self.splitter.split(&row);
                self.columns.push(&row);
                self.origins.push((file, line));
            }
            Ok(_) => {}
            Err(IndexError::UnknownView { value, .. }) => {
                self.read += 1;
                *self.unknown_views.entry(value).or_default() += 1;
            }
            Err(e) => return self.tolerate(e),
        }
        Ok(())
    }

    /// Skip and keep a bad row under `lenient`; otherwise (or for an error that is not about one
    /// row) return it, to stop the run. For every file read, label files and the tables joined
    /// onto them alike.
    pub fn tolerate(&mut self, e: IndexError) -> Result<(), IndexError> {
        if self.lenient && e.is_row_level() {
            self.skipped.push(e);
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Refuse an image id kept twice, naming the file and line of both rows: the first row that
    /// repeats an earlier one, and that earlier one.
    pub fn check_unique_ids(&self) -> Result<(), IndexError> {
        assert!(self.columns.len() <= u32::MAX as usize, "over 2^32 rows");
        let mut keys = self.id_keys.clone();
        keys.sort_unstable();
        let id = |key: u64| self.columns.row(key as u32 as usize).image_id;
        let mut repeat: Option<(u64, u64)> = None;
        for group in keys
            .chunk_by(|a, b| a >> 32 == b >> 32)
            .filter(|g| g.len() > 1)
        {
            // In row order: the first later row whose id an earlier row of the group has.
            let found = (1..group.len()).find_map(|j| {
                let earlier = group[..j].iter().find(|&&k| id(k) == id(group[j]))?;
                Some((*earlier, group[j]))
            });
            if let Some((earlier, later)) = found {
                if repeat.is_none_or(|(_, r)| (later as u32) < (r as u32)) {
                    repeat = Some((earlier, later));
                }
            }
        }
        let Some((earlier, later)) = repeat else {
            return Ok(());
        };
        let at = |key: u64| {
            let (file, line) = self.origins[key as u32 as usize];
            let path = self.files.get(file as usize).cloned().unwrap_or_default();
            (path, line)
        };
        Err(IndexError::Duplicate {
            id: id(later).to_string(),
            first: at(earlier),
            second: at(later),
        })
    }
}
