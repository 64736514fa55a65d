//! MIMIC-CXR-JPG's official split, `mimic-cxr-2.0.0-split.csv(.gz)`: one row per image,
//! `dicom_id,study_id,subject_id,split`, `split` one of `train`, `validate` and `test`. The split
//! is by patient: no subject is in two of them (checked again on every run, as every split is).

use super::id;
use crate::csvfile::{for_each_record, Cell, LabelFile};
use crate::{IndexError, Indexer};
use cxr_core::Split;
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

/// The split file, by image.
pub struct SplitFile {
    pub path: PathBuf,
    by_image: FxHashMap<String, Placed>,
}

/// Where the split file puts one image: its subject, study and split, and the file's line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub subject: u32,
    pub study: u32,
    /// `validate` is the manifest's `valid`.
    pub split: Split,
    pub line: u64,
}

struct Columns {
    dicom_id: usize,
    subject: usize,
    study: usize,
    split: usize,
    width: usize,
}

impl SplitFile {
    /// Read `path`; bad rows stop the run, or are skipped and kept in `indexer` under
    /// `--lenient`. An image listed twice is refused, naming both lines.
    pub fn read(path: &Path, indexer: &mut Indexer) -> Result<SplitFile, IndexError> {
        let mut table = SplitFile {
            path: path.to_path_buf(),
            by_image: FxHashMap::default(),
        };
        let find = |file: &LabelFile| {
            Ok(Columns {
                dicom_id: file.column("dicom_id")?,
                subject: file.column("subject_id")?,
                study: file.column("study_id")?,
                split: file.column("split")?,
                width: file.header.len(),
            })
        };
        for_each_record(path, find, |columns, _, cell| {
            match cell.and_then(|cell| columns.placed(cell)) {
                Ok((image, placed)) => table.insert(image, placed),
                Err(e) => indexer.tolerate(e),
            }
        })?;
        Ok(table)
    }

    fn insert(&mut self, image: String, placed: Placed) -> Result<(), IndexError> {
        if let Some(first) = self.by_image.get(&image) {
            return Err(IndexError::DuplicateKey {
                file: self.path.clone(),
                key: image,
                first: first.line,
                second: placed.line,
            });
        }
        self.by_image.insert(image, placed);
        Ok(())
    }

    /// Where the file puts image `dicom_id`.
    pub fn get(&self, dicom_id: &str) -> Option<Placed> {
        self.by_image.get(dicom_id).copied()
    }
}

impl Columns {
    fn placed(&self, cell: &Cell) -> Result<(String, Placed), IndexError> {
        cell.check_width(self.width)?;
        let image = cell.get(self.dicom_id, "dicom_id")?;
        let (_, subject) = id(cell, self.subject, "subject_id")?;
        let (_, study) = id(cell, self.study, "study_id")?;
        let split = match cell.bytes(self.split, "split")? {
            b"train" => Split::Train,
            b"validate" => Split::Valid,
            b"test" => Split::Test,
            value => {
                return Err(cell.bad("split", value, "expected train, validate or test, found"))
            }
        };
        let placed = Placed {
            subject,
            study,
            split,
            line: cell.line,
        };
        Ok((image.to_string(), placed))
    }
}
