//! MIMIC-IV's `patients.csv(.gz)` (module `hosp`): `subject_id,gender,anchor_age,anchor_year,
//! anchor_year_group,dod`, one row per patient. MIMIC-CXR-JPG's own files hold neither sex nor
//! age; MIMIC-IV, which shares its subject ids and its shifted dates, does.
//!
//! `anchor_age` is the patient's age in the shifted year `anchor_year` (91 for everyone over
//! 89, as MIMIC-IV publishes it), so the age at a study is `anchor_age` plus the years from
//! `anchor_year` to the study's shifted `StudyDate`.

use super::id;
use crate::csvfile::{for_each_record, Cell, LabelFile};
use crate::{IndexError, Indexer};
use cxr_core::Sex;
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

/// The patients table, by subject.
pub struct Patients {
    pub path: PathBuf,
    by_subject: FxHashMap<u32, Patient>,
}

/// One patient's sex and anchor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patient {
    pub sex: Sex,
    pub anchor_age: i32,
    pub anchor_year: i32,
    pub line: u64,
}

impl Patient {
    /// Age in whole years in the shifted year `year`.
    pub fn age_in(&self, year: i32) -> i32 {
        self.anchor_age + (year - self.anchor_year)
    }
}

struct Columns {
    subject: usize,
    gender: usize,
    anchor_age: usize,
    anchor_year: usize,
    width: usize,
}

impl Patients {
    /// Read `path`; bad rows stop the run, or are skipped and kept in `indexer` under
    /// `--lenient`. A subject listed twice is refused, naming both lines.
    pub fn read(path: &Path, indexer: &mut Indexer) -> Result<Patients, IndexError> {
        let mut table = Patients {
            path: path.to_path_buf(),
            by_subject: FxHashMap::default(),
        };
        let find = |file: &LabelFile| {
            Ok(Columns {
                subject: file.column("subject_id")?,
                gender: file.column("gender")?,
                anchor_age: file.column("anchor_age")?,
                anchor_year: file.column("anchor_year")?,
                width: file.header.len(),
            })
        };
        for_each_record(path, find, |columns, line, cell| {
            match cell.and_then(|cell| columns.patient(cell)) {
                Ok((subject, patient)) => match table.by_subject.insert(subject, patient) {
                    Some(first) => Err(IndexError::DuplicateKey {
                        file: table.path.clone(),
                        key: subject.to_string(),
                        first: first.line,
                        second: line,
                    }),
                    None => Ok(()),
                },
                Err(e) => indexer.tolerate(e),
            }
        })?;
        Ok(table)
    }

    /// The patient with subject id `subject`.
    pub fn get(&self, subject: u32) -> Option<Patient> {
        self.by_subject.get(&subject).copied()
    }
}

impl Columns {
    fn patient(&self, cell: &Cell) -> Result<(u32, Patient), IndexError> {
        cell.check_width(self.width)?;
        let (_, subject) = id(cell, self.subject, "subject_id")?;
        let sex = match cell.bytes(self.gender, "gender")? {
            b"M" => Sex::Male,
            b"F" => Sex::Female,
            value => return Err(cell.bad("gender", value, "expected M or F, found")),
        };
        let whole = |column, name, range: std::ops::RangeInclusive<i32>| {
            let value = cell.get(column, name)?;
            value
                .parse::<i32>()
                .ok()
                .filter(|v| range.contains(v))
                .ok_or_else(|| {
                    let expected = format!(
                        "expected a whole number {} to {}, found",
                        range.start(),
                        range.end()
                    );
                    cell.error(name, value, &expected)
                })
        };
        let patient = Patient {
            sex,
            anchor_age: whole(self.anchor_age, "anchor_age", 0..=130)?,
            anchor_year: whole(self.anchor_year, "anchor_year", 1..=9999)?,
            line: cell.line,
        };
        Ok((subject, patient))
    }
}
