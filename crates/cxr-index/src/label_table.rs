//! Labels in a file of their own, keyed by study or image, joined onto rows read elsewhere:
//! MIMIC-CXR-JPG's `mimic-cxr-2.0.0-chexpert.csv` (one row per study, keyed by `subject_id` and
//! `study_id`) and the `--labels` CSV of a DICOM folder (keyed by `SOPInstanceUID`,
//! `StudyInstanceUID` or `path`).
//!
//! Values are read as CheXpert's labeller writes them (`1.0`, `0.0`, `-1.0`, blank: see
//! [`crate::chexpert`]), in the columns whose header names an observation as the manifest does
//! ([`Observation::parse`]); other columns are not read and are listed. A key given two rows is
//! refused, naming both lines; keys no row asked for are reported by the caller, since a table
//! of the wrong dataset or release joins to nothing without an error.

use crate::csvfile::{for_each_record, LabelFile};
use crate::{chexpert, IndexError, Indexer};
use cxr_core::{LabelState, Observation, OBSERVATIONS};
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

/// Raw label states indexed by [`Observation::index`], as a manifest row holds them.
pub type Labels = [LabelState; OBSERVATIONS.len()];

/// A label file read into memory, by key.
pub struct LabelTable {
    pub path: PathBuf,
    /// The key columns found, of the alternatives the caller accepts.
    pub key: Vec<String>,
    /// The observation columns read, in file order.
    pub observations: Vec<Observation>,
    /// Header names that are neither a key nor an observation: not read.
    pub ignored_columns: Vec<String>,
    /// Key (the key columns' values joined by `/`) → position in `entries`.
    index: FxHashMap<String, usize>,
    entries: Vec<Entry>,
}

struct Entry {
    labels: Labels,
    line: u64,
    /// Whether a row asked for this key.
    used: bool,
}

struct Columns {
    key: Vec<(usize, String)>,
    labels: Vec<(Observation, usize)>,
    width: usize,
}

impl LabelTable {
    /// Read `path`, keyed by the first of `keys` (each a list of columns) whose columns are all in
    /// the header, and requiring the columns of `required`. Bad rows stop the run, or are
    /// skipped and kept in `indexer` under `--lenient`.
    pub fn read(
        path: &Path,
        keys: &[&[&str]],
        required: &[Observation],
        indexer: &mut Indexer,
    ) -> Result<LabelTable, IndexError> {
        let mut table = LabelTable {
            path: path.to_path_buf(),
            key: Vec::new(),
            observations: Vec::new(),
            ignored_columns: Vec::new(),
            index: FxHashMap::default(),
            entries: Vec::new(),
        };
        // The header's names are kept when it is read, and given to the table once rows are.
        let mut found: Option<Named> = None;
        for_each_record(
            path,
            |file| {
                let (columns, named) = find_columns(file, keys, required)?;
                found = Some(named);
                Ok(columns)
            },
            |columns, line, cell| {
                let read = cell.and_then(|cell| {
                    cell.check_width(columns.width)?;
                    let mut key = String::new();
                    for (i, (column, name)) in columns.key.iter().enumerate() {
                        let value = cell.get(*column, name)?;
                        if value.is_empty() {
                            return Err(cell.error(name, value, "a key is empty:"));
                        }
                        if i > 0 {
                            key.push('/');
                        }
                        key.push_str(value);
                    }
                    let mut labels = [LabelState::NotMentioned; OBSERVATIONS.len()];
                    for &(observation, column) in &columns.labels {
                        labels[observation.index()] =
                            chexpert::label(cell, column, observation.name())?;
                    }
                    Ok((key, labels))
                });
                match read {
                    Ok((key, labels)) => table.insert(key, labels, line),
                    Err(e) => indexer.tolerate(e),
                }
            },
        )?;
        let named = found.expect("the header is read before any row");
        table.key = named.key;
        table.observations = named.observations;
        table.ignored_columns = named.ignored;
        Ok(table)
    }

    fn insert(&mut self, key: String, labels: Labels, line: u64) -> Result<(), IndexError> {
        if let Some(&at) = self.index.get(&key) {
            return Err(IndexError::DuplicateKey {
                file: self.path.clone(),
                key,
                first: self.entries[at].line,
                second: line,
            });
        }
        self.index.insert(key, self.entries.len());
        self.entries.push(Entry {
            labels,
            line,
            used: false,
        });
        Ok(())
    }

    /// The labels of `key`, noting that a row asked for it.
    pub fn get(&mut self, key: &str) -> Option<Labels> {
        let entry = &mut self.entries[*self.index.get(key)?];
        entry.used = true;
        Some(entry.labels)
    }

    /// Keys no row asked for, with their lines, in file order.
    pub fn unused(&self) -> Vec<(&str, u64)> {
        let mut unused: Vec<(&str, u64)> = self
            .index
            .iter()
            .map(|(key, &i)| (key.as_str(), &self.entries[i]))
            .filter(|(_, entry)| !entry.used)
            .map(|(key, entry)| (key, entry.line))
            .collect();
        unused.sort_by_key(|&(_, line)| line);
        unused
    }

    /// How many keys the file gives labels for.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a label file's header names: key columns, observation columns and the others.
struct Named {
    key: Vec<String>,
    observations: Vec<Observation>,
    ignored: Vec<String>,
}

/// The key columns (the first alternative all of whose columns are there), the observation
/// columns (every header name that is one, `required` among them) and the names of the others.
fn find_columns(
    file: &LabelFile,
    keys: &[&[&str]],
    required: &[Observation],
) -> Result<(Columns, Named), IndexError> {
    let key_names = keys
        .iter()
        .find(|names| names.iter().all(|n| file.column(n).is_ok()))
        .ok_or_else(|| IndexError::MissingColumn {
            file: file.path.clone(),
            column: keys
                .iter()
                .map(|names| names.join(" and "))
                .collect::<Vec<_>>()
                .join(", or "),
            found: file.header.join(", "),
        })?;
    for o in required {
        file.column(o.name())?;
    }
    let mut labels = Vec::new();
    let mut ignored = Vec::new();
    for (i, name) in file.header.iter().enumerate() {
        if key_names.contains(&name.as_str()) {
            continue;
        }
        match Observation::parse(name) {
            Ok(o) if labels.iter().any(|&(seen, _)| seen == o) => {
                return Err(IndexError::Other(format!(
                    "{}: two columns for `{}`; each observation must have one",
                    file.path.display(),
                    o.name()
                )))
            }
            Ok(o) => labels.push((o, i)),
            Err(_) => ignored.push(name.clone()),
        }
    }
    if labels.is_empty() {
        return Err(IndexError::Other(format!(
            "{}: no column names an observation (expected CheXpert's names, e.g. `Pleural \
             Effusion`; found: {})",
            file.path.display(),
            file.header.join(", ")
        )));
    }
    let key: Vec<(usize, String)> = key_names
        .iter()
        .map(|n| file.column(n).map(|i| (i, n.to_string())))
        .collect::<Result<_, _>>()?;
    let named = Named {
        key: key.iter().map(|(_, n)| n.clone()).collect(),
        observations: labels.iter().map(|&(o, _)| o).collect(),
        ignored,
    };
    Ok((
        Columns {
            key,
            labels,
            width: file.header.len(),
        },
        named,
    ))
}
