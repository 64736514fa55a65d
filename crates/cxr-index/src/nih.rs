//! NIH ChestX-ray14's `Data_Entry_2017*.csv`.
//!
//! Quirks handled: the header has 11 comma-separated tokens for 9 columns
//! (`OriginalImage[Width,Height]` holds a comma), so columns are found by name and rows may be
//! longer than the header; `Finding Labels` is `|`-separated with `No Finding` a label of its
//! own; every image is frontal (`View Position` PA or AP). Each of the 14 findings is positive
//! when listed and negative otherwise; CheXpert-only observations are not mentioned. The study is
//! the patient plus the CSV's `Follow-up #` (not the file name, which is unreliable for it).
//! Images live in different folders depending on how they were downloaded (`images/`,
//! `images_001/images/`, ...): the path is filled in by [`crate::images::locate_nih`].

use crate::csvfile::{for_each_row, Cell, LabelFile};
use crate::{IndexError, Sink};
use cxr_core::{
    Dataset, LabelState, ManifestRow, Observation, Projection, Sex, Split, View, NIH_14,
};
use std::fmt::Write;
use std::path::Path;

/// Hand every row of an NIH label file (plain or gzipped) to `sink`.
pub fn read(path: &Path, sink: &mut Sink) -> Result<(), IndexError> {
    for_each_row(path, Columns::find, Columns::row, sink)
}

struct Columns {
    image: usize,
    findings: usize,
    follow_up: usize,
    patient: usize,
    age: usize,
    sex: usize,
    view: usize,
    no_finding: Observation,
    /// The row's text that is not in the record: `{patient}/{follow-up}images/{image}`, sliced
    /// into patient id, study id and path.
    scratch: String,
}

impl Columns {
    fn find(file: &LabelFile) -> Result<Columns, IndexError> {
        Ok(Columns {
            image: file.column("Image Index")?,
            findings: file.column("Finding Labels")?,
            follow_up: file.column("Follow-up #")?,
            patient: file.column("Patient ID")?,
            age: file.column("Patient Age")?,
            sex: file.column("Patient Gender")?,
            view: file.column("View Position")?,
            no_finding: Observation::parse("No Finding").expect("known observation"),
            scratch: String::new(),
        })
    }

    fn row<'a>(&'a mut self, cell: &'a Cell<'a>) -> Result<ManifestRow<&'a str>, IndexError> {
        let image = cell.get(self.image, "Image Index")?;
        if image.is_empty() || image.contains(['/', '\\']) || image.starts_with('.') {
            return Err(cell.error("Image Index", image, "expected a bare file name, found"));
        }
        let patient = number(cell, self.patient, "Patient ID")?;
        let follow_up = number(cell, self.follow_up, "Follow-up #")?;
        let (projection, sex) = (projection(cell, self.view)?, sex(cell, self.sex)?);
        let (age, labels) = (age(cell, self.age)?, self.labels(cell)?);
        let text = &mut self.scratch;
        text.clear();
        write!(text, "{patient:08}").expect("writing to a String");
        let patient_end = text.len();
        write!(text, "/{follow_up:03}").expect("writing to a String");
        let study_end = text.len();
        write!(text, "images/{image}").expect("writing to a String");
        Ok(ManifestRow {
            image_id: image,
            dataset: Dataset::Nih,
            path: &text[study_end..],
            patient_id: &text[..patient_end],
            study_id: &text[..study_end],
            view: View::Frontal,
            projection,
            sex,
            age: Some(age),
            source_split: None,
            split: Split::Train,
            labels,
        })
    }

    fn labels(
        &self,
        cell: &Cell,
    ) -> Result<[LabelState; cxr_core::OBSERVATIONS.len()], IndexError> {
        let mut labels = [LabelState::NotMentioned; cxr_core::OBSERVATIONS.len()];
        for o in NIH_14.iter().chain([&self.no_finding]) {
            labels[o.index()] = LabelState::Negative;
        }
        let findings = cell.get(self.findings, "Finding Labels")?;
        for finding in findings.split('|') {
            let observation = Observation::parse(finding)
                .ok()
                .filter(|o| NIH_14.contains(o) || *o == self.no_finding)
                .ok_or_else(|| cell.error("Finding Labels", finding, "unknown NIH finding"))?;
            labels[observation.index()] = LabelState::Positive;
        }
        Ok(labels)
    }
}

fn number(cell: &Cell, column: usize, name: &str) -> Result<u32, IndexError> {
    let value = cell.get(column, name)?;
    value
        .parse()
        .map_err(|_| cell.error(name, value, "expected a whole number, found"))
}

/// Ages are plain years in the v2020 file; the 2017 release wrote some as `058Y`.
fn age(cell: &Cell, column: usize) -> Result<i32, IndexError> {
    let value = cell.get(column, "Patient Age")?;
    let years = value.strip_suffix('Y').unwrap_or(value);
    years
        .parse::<i32>()
        .ok()
        .filter(|a| (0..=130).contains(a))
        .ok_or_else(|| cell.error("Patient Age", value, "expected whole years 0 to 130, found"))
}

fn sex(cell: &Cell, column: usize) -> Result<Sex, IndexError> {
    let value = cell.get(column, "Patient Gender")?;
    match value {
        "M" => Ok(Sex::Male),
        "F" => Ok(Sex::Female),
        _ => Err(cell.error("Patient Gender", value, "expected M or F, found")),
    }
}

fn projection(cell: &Cell, column: usize) -> Result<Projection, IndexError> {
    let value = cell.get(column, "View Position")?;
    match crate::view::from_view_position(value) {
        Some((View::Frontal, projection)) => Ok(projection),
        _ => Err(cell.error("View Position", value, "expected PA or AP, found")),
    }
}
