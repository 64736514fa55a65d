//! MIMIC-CXR-JPG (PhysioNet, v2.0.0 and v2.1.0): its metadata, label and split files joined into
//! one row per image.
//!
//! The layouts relied on, as PhysioNet's project page (`physionet.org/content/mimic-cxr-jpg`)
//! lists the files and as public code that reads them has them (torchxrayvision's
//! `MIMIC_Dataset`, which joins the metadata and label files and builds image paths from the
//! ids; scripts merging the split and metadata files on `dicom_id, study_id, subject_id`; a
//! generator of test data that writes the metadata header column by column):
//!
//! - `mimic-cxr-2.0.0-metadata.csv(.gz)`, one row per image: `dicom_id,subject_id,study_id,
//!   PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,
//!   ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,
//!   PatientOrientationCodeSequence_CodeMeaning`. `ViewPosition` is DICOM's (`PA`, `AP`, `LL`),
//!   plus `LATERAL` and rarer values (`AP AXIAL`, `PA LLD`, `LAO`, `SWIMMERS`, ...) or blank;
//!   where it says nothing, `ViewCodeSequence_CodeMeaning` (`postero-anterior`, `lateral`, ...)
//!   may ([`crate::view`]). Images of neither a frontal nor a lateral view are left out and
//!   counted, or kept as frontal with `--unknown-view frontal`.
//! - `mimic-cxr-2.0.0-chexpert.csv(.gz)`, one row per study (labels come from the study's
//!   report): `subject_id,study_id` and CheXpert's 14 observations, `1.0`, `0.0`, `-1.0` or
//!   blank as in CheXpert. `mimic-cxr-2.0.0-negbio.csv(.gz)` has the same layout and reads the
//!   same. A study without a row has every label "not mentioned".
//! - `mimic-cxr-2.0.0-split.csv(.gz)`, one row per image: `dicom_id,study_id,subject_id,split`
//!   ([`split_file`]): kept as the rows' `source_split`, `validate` as `valid`.
//! - Images at `files/p{first two digits of subject_id}/p{subject_id}/s{study_id}/{dicom_id}.jpg`
//!   under the folder given as `--root`.
//!
//! Ids are the dataset's own: the image id is `dicom_id`, the patient `subject_id` and the study
//! `{subject_id}/{study_id}`. These files hold no sex or age; MIMIC-IV's patients table adds
//! them ([`patients`]), and without it sex is unknown and age empty.

pub mod patients;
pub mod split_file;

use crate::csvfile::{for_each_row, Cell, LabelFile};
use crate::label_table::LabelTable;
use crate::view::{self, UnknownView};
use crate::{IndexError, Sink};
use cxr_core::{Dataset, LabelState, ManifestRow, Projection, Sex, Split, View, OBSERVATIONS};
use patients::Patients;
use split_file::SplitFile;
use std::fmt::Write;
use std::path::Path;

/// The tables joined onto the metadata's rows, and what the join found.
pub struct Tables {
    /// `mimic-cxr-2.0.0-chexpert.csv`, keyed `{subject_id}/{study_id}`.
    pub labels: LabelTable,
    pub splits: SplitFile,
    pub patients: Option<Patients>,
    pub unknown_view: UnknownView,
    /// Images whose study has no row in the label file.
    pub unlabelled_images: usize,
    /// Images whose subject is not in the patients table.
    pub images_without_patient: usize,
}

impl Tables {
    pub fn new(
        labels: LabelTable,
        splits: SplitFile,
        patients: Option<Patients>,
        unknown_view: UnknownView,
    ) -> Tables {
        Tables {
            labels,
            splits,
            patients,
            unknown_view,
            unlabelled_images: 0,
            images_without_patient: 0,
        }
    }
}

/// The label file's key: the columns of a study.
pub const LABEL_KEY: &[&str] = &["subject_id", "study_id"];

/// Hand every row of the metadata file `path`, joined with `tables`, to `sink`.
pub fn read(path: &Path, tables: &mut Tables, sink: &mut Sink) -> Result<(), IndexError> {
    for_each_row(path, |file| Columns::find(file, tables), Columns::row, sink)
}

struct Columns<'t> {
    dicom_id: usize,
    subject: usize,
    study: usize,
    view_position: usize,
    view_code: Option<usize>,
    /// Read only to compute ages from the patients table.
    study_date: Option<usize>,
    width: usize,
    tables: &'t mut Tables,
    /// The row's text that is not in the record: `{subject}/{study}files/p../{image}.jpg`,
    /// sliced into the study id and the path.
    scratch: String,
}

impl<'t> Columns<'t> {
    fn find(file: &LabelFile, tables: &'t mut Tables) -> Result<Columns<'t>, IndexError> {
        let study_date = match tables.patients {
            Some(_) => Some(file.column("StudyDate")?),
            None => None,
        };
        Ok(Columns {
            dicom_id: file.column("dicom_id")?,
            subject: file.column("subject_id")?,
            study: file.column("study_id")?,
            view_position: file.column("ViewPosition")?,
            view_code: file.column("ViewCodeSequence_CodeMeaning").ok(),
            study_date,
            width: file.header.len(),
            tables,
            scratch: String::new(),
        })
    }

    fn row<'a>(&'a mut self, cell: &'a Cell<'a>) -> Result<ManifestRow<&'a str>, IndexError> {
        cell.check_width(self.width)?;
        let image = cell.get(self.dicom_id, "dicom_id")?;
        if image.is_empty() || image.contains(['/', '\\']) || image.starts_with('.') {
            return Err(cell.error("dicom_id", image, "expected a bare file name, found"));
        }
        let (subject, subject_number) = id(cell, self.subject, "subject_id")?;
        let (study, study_number) = id(cell, self.study, "study_id")?;
        let splits = &self.tables.splits;
        let placed = splits.get(image).ok_or_else(|| {
            let problem = format!("not in the split file {}:", splits.path.display());
            cell.error("dicom_id", image, &problem)
        })?;
        if (placed.subject, placed.study) != (subject_number, study_number) {
            let problem = format!(
                "the split file {}:{} puts it under subject_id {} and study_id {}, not this \
                 row's {subject} and {study}:",
                splits.path.display(),
                placed.line,
                placed.subject,
                placed.study
            );
            return Err(cell.error("dicom_id", image, &problem));
        }
        let text = &mut self.scratch;
        text.clear();
        write!(text, "{subject}/{study}").expect("writing to a String");
        let study_end = text.len();
        let group = &subject[..2];
        write!(text, "files/p{group}/p{subject}/s{study}/{image}.jpg")
            .expect("writing to a String");
        // Looked up before the view is: a study whose images are all left out still has its
        // label row, which is then not reported as matching nothing.
        let labels = self.tables.labels.get(&self.scratch[..study_end]);
        let (view, projection) = self.view(cell)?;
        let (sex, age) = self.patient(cell, subject_number)?;
        let labels = labels.unwrap_or_else(|| {
            self.tables.unlabelled_images += 1;
            [LabelState::NotMentioned; OBSERVATIONS.len()]
        });
        Ok(ManifestRow {
            image_id: image,
            dataset: Dataset::Mimic,
            path: &self.scratch[study_end..],
            patient_id: subject,
            study_id: &self.scratch[..study_end],
            view,
            projection,
            sex,
            age,
            source_split: Some(placed.split),
            split: Split::Train,
            labels,
        })
    }

    /// The view from `ViewPosition`, else from the coded view; an image of neither a frontal nor
    /// a lateral view is [`IndexError::UnknownView`] unless `--unknown-view` keeps it.
    fn view(&self, cell: &Cell) -> Result<(View, Projection), IndexError> {
        let position = cell.get(self.view_position, "ViewPosition")?;
        let mut found = view::from_view_position(position);
        if let (None, Some(column)) = (found, self.view_code) {
            found = view::from_view_code_meaning(cell.get(column, "ViewCodeSequence_CodeMeaning")?);
        }
        self.tables
            .unknown_view
            .resolve(found)
            .ok_or_else(|| IndexError::UnknownView {
                file: cell.file.to_path_buf(),
                line: cell.line,
                value: position.to_string(),
            })
    }

    /// Sex and age at the study from the patients table, if one was given and has the subject.
    fn patient(&mut self, cell: &Cell, subject: u32) -> Result<(Sex, Option<i32>), IndexError> {
        let (Some(patients), Some(date_column)) = (&self.tables.patients, self.study_date) else {
            return Ok((Sex::Unknown, None));
        };
        let Some(patient) = patients.get(subject) else {
            self.tables.images_without_patient += 1;
            return Ok((Sex::Unknown, None));
        };
        let date = cell.get(date_column, "StudyDate")?;
        let year = Some(date)
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d[..4].parse::<i32>().ok())
            .ok_or_else(|| cell.error("StudyDate", date, "expected a date YYYYMMDD, found"))?;
        let age = patient.age_in(year);
        if !(0..=130).contains(&age) {
            let problem = format!(
                "gives an age of {age} with anchor_age {} in anchor_year {} ({}:{}):",
                patient.anchor_age,
                patient.anchor_year,
                patients.path.display(),
                patient.line
            );
            return Err(cell.error("StudyDate", date, &problem));
        }
        Ok((patient.sex, Some(age)))
    }
}

/// A MIMIC id (`subject_id`, `study_id`): its digits and their number. Subject ids have eight
/// digits, whose first two name the image's folder group (`p10`), so at least two are needed.
fn id<'c>(cell: &'c Cell, column: usize, name: &str) -> Result<(&'c str, u32), IndexError> {
    let value = cell.get(column, name)?;
    value
        .parse::<u32>()
        .ok()
        .filter(|_| value.len() >= 2 && value.bytes().all(|b| b.is_ascii_digit()))
        .map(|number| (value, number))
        .ok_or_else(|| {
            cell.error(
                name,
                value,
                "expected a number of at least two digits, found",
            )
        })
}
