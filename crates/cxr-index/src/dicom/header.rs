//! One DICOM file's header: the tags a manifest row is made of, read without the pixels.
//!
//! The file is parsed up to Pixel Data (7FE0,0010) and no further, so a 30 MB radiograph costs
//! a few kilobytes of reading. Whether it is an image is told from the header too: an image has
//! the Image Pixel module's Rows and Columns; structured reports, presentation states and other
//! objects without pixels have neither.

use crate::view;
use cxr_core::{Projection, Sex, View};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use dicom_object::{OpenFileOptions, Tag};
use std::path::Path;

/// What a manifest row takes from a DICOM image's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// SOPInstanceUID (0008,0018), or the file meta group's copy of it.
    pub sop_instance_uid: String,
    /// PatientID (0010,0020), empty when absent.
    pub patient_id: String,
    /// StudyInstanceUID (0020,000D), empty when absent.
    pub study_instance_uid: String,
    /// From ViewPosition (0018,5101), else ViewCodeSequence (0054,0220); `None`: neither says
    /// frontal or lateral.
    pub view: Option<(View, Projection)>,
    /// ViewPosition as written (empty when absent), to say why a view is unknown.
    pub view_position: String,
    /// PatientSex (0010,0040): `M`, `F`; anything else is unknown.
    pub sex: Sex,
    /// PatientAge (0010,1010), else the years from PatientBirthDate to StudyDate.
    pub age: Option<i32>,
}

/// Read the header of the file at `path`: `Err` says, for the list of files not indexed, why it
/// is not an image this tool can index.
pub fn read(path: &Path) -> Result<Header, String> {
    let file = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("not read as DICOM: {}", cxr_core::error::message(&e)))?;
    let sop_instance_uid = text(&file, tags::SOP_INSTANCE_UID)
        .unwrap_or_else(|| trimmed(file.meta().media_storage_sop_instance_uid()).to_string());
    if file.get(tags::ROWS).is_none() || file.get(tags::COLUMNS).is_none() {
        return Err(format!(
            "DICOM without pixel data (no Rows/Columns; Modality {}, SOP Class {})",
            text(&file, tags::MODALITY).unwrap_or_else(|| "not given".into()),
            trimmed(file.meta().media_storage_sop_class_uid())
        ));
    }
    let view_position = text(&file, tags::VIEW_POSITION).unwrap_or_default();
    let view = view::from_view_position(&view_position).or_else(|| {
        let item = file.get(tags::VIEW_CODE_SEQUENCE)?.items()?.first()?;
        view::from_view_code_meaning(&text(item, tags::CODE_MEANING)?)
    });
    let sex = match text(&file, tags::PATIENT_SEX).as_deref() {
        Some("M") => Sex::Male,
        Some("F") => Sex::Female,
        _ => Sex::Unknown,
    };
    let age = text(&file, tags::PATIENT_AGE)
        .and_then(|a| age_in_years(&a))
        .or_else(|| {
            let born = text(&file, tags::PATIENT_BIRTH_DATE)?;
            years_between(&born, &text(&file, tags::STUDY_DATE)?)
        });
    Ok(Header {
        sop_instance_uid,
        patient_id: text(&file, tags::PATIENT_ID).unwrap_or_default(),
        study_instance_uid: text(&file, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        view,
        view_position,
        sex,
        age,
    })
}

/// The text of element `tag`, without DICOM's padding; `None` when absent or empty.
fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    Some(trimmed(&value).to_string()).filter(|t| !t.is_empty())
}

/// `value` without the spaces and NULs DICOM pads values to an even length with.
fn trimmed(value: &str) -> &str {
    value.trim_matches([' ', '\0'])
}

/// An Age String (`045Y`, `018M`, `003W`, `012D`) in whole years; also bare digits, which some
/// exports write for years (the SIIM sample's `62`). `None` for anything else, or over 130.
fn age_in_years(text: &str) -> Option<i32> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'0'..=b'9' => (text, b'Y'),
        &unit => (&text[..text.len() - 1], unit.to_ascii_uppercase()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = digits.parse().ok()?;
    let years = match unit {
        b'Y' => n,
        b'M' => n / 12,
        b'W' => n * 7 / 365,
        b'D' => n / 365,
        _ => return None,
    };
    (0..=130).contains(&years).then_some(years)
}

/// Whole years from date `from` to date `to` (DICOM dates, `YYYYMMDD`).
fn years_between(from: &str, to: &str) -> Option<i32> {
    let date = |d: &str| -> Option<(i32, u32)> {
        let ok = d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| (d[..4].parse().ok(), d[4..].parse().ok()))
            .and_then(|(y, md)| Some((y?, md?)))
    };
    let ((from_year, from_day), (to_year, to_day)) = (date(from)?, date(to)?);
    let years = to_year - from_year - i32::from(to_day < from_day);
    (0..=130).contains(&years).then_some(years)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_dicom_and_exports_write_them() {
        assert_eq!(age_in_years("045Y"), Some(45));
        assert_eq!(age_in_years("62"), Some(62));
        assert_eq!(age_in_years("030M"), Some(2));
        assert_eq!(age_in_years("104W"), Some(1));
        assert_eq!(age_in_years("400D"), Some(1));
        assert_eq!(age_in_years("011m"), Some(0));
        for bad in ["", "Y", "45 Y", "-3Y", "045X", "200Y"] {
            assert_eq!(age_in_years(bad), None, "{bad}");
        }
        assert_eq!(years_between("19600315", "20200314"), Some(59));
        assert_eq!(years_between("19600315", "20200315"), Some(60));
        assert_eq!(years_between("1960", "20200315"), None);
        assert_eq!(years_between("20210101", "20200101"), None);
    }
}
