//! CheXpert's `train.csv` / `valid.csv`.
//!
//! Quirks handled (all present in the real training file): labels `1.0`, `0.0`, `-1.0` and blank
//! (not mentioned); `AP/PA` is `AP`, `PA`, `LL`, `RL` or blank (laterals); `Sex` can be
//! `Unknown`; ages run 0 to 90. The patient and study come from the path
//! (`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`), as does the dataset's own
//! split (`train`/`valid`), falling back to the CSV's file name.

use crate::csvfile::{map_rows, Cell, LabelFile};
use crate::IndexError;
use cxr_core::manifest::checked_relative;
use cxr_core::{
    Dataset, LabelState, ManifestRow, Observation, Projection, Sex, Split, View, CHEXPERT_14,
};
use std::path::Path;

/// Read every row of a CheXpert label file.
pub fn read(
    path: &Path,
) -> Result<impl Iterator<Item = Result<ManifestRow, IndexError>>, IndexError> {
    let fallback_split = split_from_name(path);
    map_rows(path, Columns::find, move |columns, cell| {
        columns.row(cell, fallback_split)
    })
}

struct Columns {
    path: usize,
    sex: usize,
    age: usize,
    view: usize,
    projection: usize,
    labels: Vec<(Observation, usize)>,
}

impl Columns {
    fn find(file: &LabelFile) -> Result<Columns, IndexError> {
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
        })
    }

    fn row(&self, cell: &Cell, fallback_split: Option<Split>) -> Result<ManifestRow, IndexError> {
        let image = cell.get(self.path, "Path")?;
        checked_relative(image).map_err(|why| cell.error("Path", image, &why))?;
        let (patient_id, study_id, split) = parse_path(image).ok_or_else(|| {
            cell.error(
                "Path",
                image,
                "expected `.../patientNNNNN/studyN/viewN_*.jpg`, found",
            )
        })?;
        let source_split = split.or(fallback_split);
        let mut labels = [LabelState::NotMentioned; cxr_core::OBSERVATIONS.len()];
        for &(observation, column) in &self.labels {
            labels[observation.index()] = label(cell, column, observation.name())?;
        }
        Ok(ManifestRow {
            image_id: image.to_string(),
            dataset: Dataset::Chexpert,
            path: image.to_string(),
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

/// `(patient, patient/study, split)` from a CheXpert path.
fn parse_path(path: &str) -> Option<(String, String, Option<Split>)> {
    let parts: Vec<&str> = path.split('/').collect();
    let p = parts.iter().position(|c| c.starts_with("patient"))?;
    let study = parts.get(p + 1).filter(|s| s.starts_with("study"))?;
    let split = p.checked_sub(1).and_then(|i| Split::parse(parts[i]));
    Some((
        parts[p].to_string(),
        format!("{}/{}", parts[p], study),
        split,
    ))
}

fn split_from_name(path: &Path) -> Option<Split> {
    let name = path.file_name()?.to_str()?;
    Split::parse(name.split('.').next()?)
}

fn label(cell: &Cell, column: usize, name: &str) -> Result<LabelState, IndexError> {
    let value = cell.get(column, name)?;
    match value {
        "" => Ok(LabelState::NotMentioned),
        "1.0" | "1" => Ok(LabelState::Positive),
        "0.0" | "0" => Ok(LabelState::Negative),
        "-1.0" | "-1" => Ok(LabelState::Uncertain),
        _ => Err(cell.error(name, value, "expected 1.0, 0.0, -1.0 or blank, found")),
    }
}

fn view(cell: &Cell, column: usize) -> Result<View, IndexError> {
    let value = cell.get(column, "Frontal/Lateral")?;
    View::parse(value).ok_or_else(|| {
        cell.error(
            "Frontal/Lateral",
            value,
            "expected Frontal or Lateral, found",
        )
    })
}

fn projection(cell: &Cell, column: usize) -> Result<Projection, IndexError> {
    let value = cell.get(column, "AP/PA")?;
    if value.is_empty() {
        return Ok(Projection::Unknown);
    }
    match Projection::parse(value) {
        Some(p) if p != Projection::Unknown => Ok(p),
        _ => Err(cell.error("AP/PA", value, "expected AP, PA, LL, RL or blank, found")),
    }
}

fn sex(cell: &Cell, column: usize) -> Result<Sex, IndexError> {
    let value = cell.get(column, "Sex")?;
    match value {
        "Male" => Ok(Sex::Male),
        "Female" => Ok(Sex::Female),
        "Unknown" | "" => Ok(Sex::Unknown),
        _ => Err(cell.error("Sex", value, "expected Male, Female or Unknown, found")),
    }
}

fn age(cell: &Cell, column: usize) -> Result<i32, IndexError> {
    let value = cell.get(column, "Age")?;
    value
        .parse::<i32>()
        .ok()
        .filter(|a| (0..=130).contains(a))
        .ok_or_else(|| cell.error("Age", value, "expected whole years 0 to 130, found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_give_patient_study_and_split() {
        let (p, s, split) =
            parse_path("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg").unwrap();
        assert_eq!(
            (p.as_str(), s.as_str(), split),
            ("patient00001", "patient00001/study1", Some(Split::Train))
        );
        assert!(parse_path("images/x.jpg").is_none());
    }
}
