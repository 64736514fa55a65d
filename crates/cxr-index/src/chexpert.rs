//! CheXpert's `train.csv` / `valid.csv`.
//!
//! Quirks handled (all present in the real training file): labels `1.0`, `0.0`, `-1.0` and blank
//! (not mentioned); `AP/PA` is `AP`, `PA`, `LL`, `RL` or blank (laterals); `Sex` can be
//! `Unknown`; ages run 0 to 90. The patient and study come from the path
//! (`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`), as does the dataset's own
//! split (`train`/`valid`), falling back to the CSV's file name.

use crate::csvfile::{for_each_row, Cell, LabelFile};
use crate::{IndexError, Sink};
use cxr_core::manifest::checked_relative;
use cxr_core::{
    Dataset, LabelState, ManifestRow, Observation, Projection, Sex, Split, View, CHEXPERT_14,
};
use std::path::Path;

/// Hand every row of a CheXpert label file to `sink`.
pub fn read(path: &Path, sink: &mut Sink) -> Result<(), IndexError> {
    let fallback_split = split_from_name(path);
    let find = |file: &LabelFile| Columns::find(file, fallback_split);
    for_each_row(path, find, Columns::row, sink)
}

struct Columns {
    path: usize,
    sex: usize,
    age: usize,
    view: usize,
    projection: usize,
    labels: Vec<(Observation, usize)>,
    /// The split of rows whose path names none: from the file's name.
    fallback_split: Option<Split>,
}

impl Columns {
    fn find(file: &LabelFile, fallback_split: Option<Split>) -> Result<Columns, IndexError> {
        Ok(Columns {
            path: file.column("Path")?,
            sex: file.column("Sex")?,
            age: file.column("Age")?,
            view: file.column("Frontal/Lateral")?,
            projection: file.column("AP/PA")?,
            labels: CHEXPERT_14
                .iter()
                .map(|&o| file.column(o.name()).map(|i| (o, i)))
                .collect::<Result<_, _>>()?,
            fallback_split,
        })
    }

    fn row<'a>(&'a mut self, cell: &'a Cell<'a>) -> Result<ManifestRow<&'a str>, IndexError> {
        let image = cell.get(self.path, "Path")?;
        checked_relative(image).map_err(|why| cell.error("Path", image, &why))?;
        let (patient_id, study_id, split) = parse_path(image).ok_or_else(|| {
            cell.error(
                "Path",
                image,
                "expected `.../patientNNNNN/studyN/viewN_*.jpg`, found",
            )
        })?;
        let source_split = split.or(self.fallback_split);
        let mut labels = [LabelState::NotMentioned; cxr_core::OBSERVATIONS.len()];
        for &(observation, column) in &self.labels {
            labels[observation.index()] = label(cell, column, observation.name())?;
        }
        Ok(ManifestRow {
            image_id: image,
            dataset: Dataset::Chexpert,
            path: image,
            patient_id,
            study_id,
            view: view(cell, self.view)?,
            projection: projection(cell, self.projection)?,
            sex: sex(cell, self.sex)?,
            age: Some(age(cell, self.age)?),
            source_split,
            split: source_split.unwrap_or(Split::Train),
            labels,
        })
    }
}

/// `(patient, patient/study, split)` from a CheXpert path, as slices of it (the study id is the
/// two path components together).
fn parse_path(path: &str) -> Option<(&str, &str, Option<Split>)> {
    // Byte offsets of the components, found with a plain loop: `str::split` costs more here than
    // the rest of the row.
    let bytes = path.as_bytes();
    let end_of = |start: usize| {
        bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| start + i)
    };
    let (mut parent, mut start) = (None, 0);
    while start <= bytes.len() {
        let end = end_of(start);
        let part = &path[start..end];
        if part.starts_with("patient") {
            let study_end = end_of(end.checked_add(1).filter(|&s| s <= bytes.len())?);
            if !path[end + 1..study_end].starts_with("study") {
                return None;
            }
            return Some((part, &path[start..study_end], parent.and_then(Split::parse)));
        }
        parent = Some(part);
        start = end + 1;
    }
    None
}

fn split_from_name(path: &Path) -> Option<Split> {
    let name = path.file_name()?.to_str()?;
    Split::parse(name.split('.').next()?)
}

// The fields below are matched as bytes: a quarter of a million rows of 19 fields each, where a
// UTF-8 check per field costs more than the match.

/// A label as CheXpert's labeller writes it (MIMIC-CXR-JPG's label files too): `1.0` positive,
/// `0.0` negative, `-1.0` uncertain, blank not mentioned.
pub(crate) fn label(cell: &Cell, column: usize, name: &str) -> Result<LabelState, IndexError> {
    let value = cell.bytes(column, name)?;
    match value {
        b"" => Ok(LabelState::NotMentioned),
        b"1.0" | b"1" => Ok(LabelState::Positive),
        b"0.0" | b"0" => Ok(LabelState::Negative),
        b"-1.0" | b"-1" => Ok(LabelState::Uncertain),
        _ => Err(cell.bad(name, value, "expected 1.0, 0.0, -1.0 or blank, found")),
    }
}

fn view(cell: &Cell, column: usize) -> Result<View, IndexError> {
    let value = cell.bytes(column, "Frontal/Lateral")?;
    match value {
        b"Frontal" => Ok(View::Frontal),
        b"Lateral" => Ok(View::Lateral),
        _ => std::str::from_utf8(value)
            .ok()
            .and_then(View::parse)
            .ok_or_else(|| {
                cell.bad(
                    "Frontal/Lateral",
                    value,
                    "expected Frontal or Lateral, found",
                )
            }),
    }
}

fn projection(cell: &Cell, column: usize) -> Result<Projection, IndexError> {
    let value = cell.bytes(column, "AP/PA")?;
    match value {
        b"" => Ok(Projection::Unknown),
        b"AP" => Ok(Projection::Ap),
        b"PA" => Ok(Projection::Pa),
        _ => match std::str::from_utf8(value).ok().and_then(Projection::parse) {
            Some(p) if p != Projection::Unknown => Ok(p),
            _ => Err(cell.bad("AP/PA", value, "expected AP, PA, LL, RL or blank, found")),
        },
    }
}

fn sex(cell: &Cell, column: usize) -> Result<Sex, IndexError> {
    let value = cell.bytes(column, "Sex")?;
    match value {
        b"Male" => Ok(Sex::Male),
        b"Female" => Ok(Sex::Female),
        b"Unknown" | b"" => Ok(Sex::Unknown),
        _ => Err(cell.bad("Sex", value, "expected Male, Female or Unknown, found")),
    }
}

fn age(cell: &Cell, column: usize) -> Result<i32, IndexError> {
    let value = cell.bytes(column, "Age")?;
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|a| (0..=130).contains(a))
        .ok_or_else(|| cell.bad("Age", value, "expected whole years 0 to 130, found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_give_patient_study_and_split() {
        assert_eq!(
            parse_path("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"),
            Some(("patient00001", "patient00001/study1", Some(Split::Train)))
        );
        assert_eq!(
            parse_path("patient7/study12/view1_frontal.jpg"),
            Some(("patient7", "patient7/study12", None))
        );
        assert!(parse_path("images/x.jpg").is_none());
        assert!(parse_path("train/patient1/view1.jpg").is_none());
        assert!(parse_path("train/patient1").is_none());
    }
}
