//! A folder of DICOM files (a hospital export) to manifest rows, from each file's own tags
//! ([`header`]).
//!
//! The folder is walked in path order, so the manifest is the same on every machine. Each image
//! becomes a row: image id `SOPInstanceUID`, patient `PatientID`, study `StudyInstanceUID`,
//! path relative to the root, view and projection from `ViewPosition` (or the coded view),
//! sex and age from the patient tags. A file that is not read as DICOM, has no pixel data (a
//! structured report), lacks the patient or study (without which no patient-level split can be
//! made), repeats an image already found, or shows neither a frontal nor a lateral view (unless
//! `--unknown-view frontal`) is not indexed: each is listed with the reason, in
//! [`report_path`]'s file beside the manifest.
//!
//! Labels, which DICOM files do not hold, come from an optional CSV keyed by the first of
//! `SOPInstanceUID` (per image), `StudyInstanceUID` (per study, as report-derived labels are) or
//! `path` (as in the manifest) that its header has, with observation columns named as CheXpert's
//! ([`crate::label_table`]).

pub mod header;

use crate::images::files_under;
use crate::label_table::LabelTable;
use crate::view::UnknownView;
use crate::{IndexError, Indexer};
use cxr_core::{Dataset, LabelState, ManifestRow, Split, OBSERVATIONS};
use header::Header;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The key columns a `--labels` CSV may have, in order of preference.
pub const LABEL_KEYS: &[&[&str]] = &[&["SOPInstanceUID"], &["StudyInstanceUID"], &["path"]];

/// A file under the root that is not indexed, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NotIndexed {
    pub path: String,
    pub reason: String,
}

/// What a walk of the root found: images with their headers (the view resolved), and the files
/// not indexed.
#[derive(Debug, Default)]
pub struct Scan {
    pub images: Vec<(String, Header)>,
    pub not_indexed: Vec<NotIndexed>,
}

/// Walk `root` and read every file's header, sorting images from files not indexed.
pub fn scan(root: &Path, unknown_view: UnknownView) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    let mut first_of: HashMap<String, String> = HashMap::new();
    for rel in files_under(root)? {
        let Some(path) = rel.to_str().map(|p| p.replace('\\', "/")) else {
            let reason = "the path is not UTF-8 text".to_string();
            let path = rel.to_string_lossy().into_owned();
            scan.not_indexed.push(NotIndexed { path, reason });
            continue;
        };
        match image(&root.join(&rel), unknown_view, &first_of) {
            Ok(header) => {
                first_of.insert(header.sop_instance_uid.clone(), path.clone());
                scan.images.push((path, header));
            }
            Err(reason) => scan.not_indexed.push(NotIndexed { path, reason }),
        }
    }
    Ok(scan)
}

/// The header of the image at `path`, its view resolved, or why it is not indexed.
fn image(
    path: &Path,
    unknown_view: UnknownView,
    first_of: &HashMap<String, String>,
) -> Result<Header, String> {
    let mut header = header::read(path)?;
    if let Some(first) = first_of.get(&header.sop_instance_uid) {
        return Err(format!(
            "the same image (SOPInstanceUID {}) as {first}",
            header.sop_instance_uid
        ));
    }
    if header.patient_id.is_empty() {
        return Err("no PatientID: a patient's images must share a split".to_string());
    }
    if header.study_instance_uid.is_empty() {
        return Err("no StudyInstanceUID".to_string());
    }
    header.view = unknown_view.resolve(header.view);
    if header.view.is_none() {
        let said = match header.view_position.as_str() {
            "" => "no ViewPosition or coded view says frontal or lateral".to_string(),
            position => format!("ViewPosition `{position}` is neither frontal nor lateral"),
        };
        return Err(format!(
            "{said} (--unknown-view frontal keeps such images as frontal)"
        ));
    }
    Ok(header)
}

/// Add a row for every image of `scan` to `indexer`, with its labels from `labels` if given.
/// Returns how many images have no row in `labels`.
pub fn index(
    root: &Path,
    scan: &Scan,
    mut labels: Option<&mut LabelTable>,
    indexer: &mut Indexer,
) -> Result<usize, IndexError> {
    let mut unlabelled = 0;
    for (path, header) in &scan.images {
        let row_labels = match labels.as_deref_mut() {
            Some(table) => {
                let key = match table.key[0].as_str() {
                    "SOPInstanceUID" => header.sop_instance_uid.as_str(),
                    "StudyInstanceUID" => header.study_instance_uid.as_str(),
                    _ => path.as_str(),
                };
                table.get(key)
            }
            None => None,
        };
        if labels.is_some() && row_labels.is_none() {
            unlabelled += 1;
        }
        let (view, projection) = header.view.expect("scan resolves every image's view");
        indexer.begin_file(&root.join(path));
        let row = ManifestRow {
            image_id: header.sop_instance_uid.as_str(),
            dataset: Dataset::Dicom,
            path: path.as_str(),
            patient_id: header.patient_id.as_str(),
            study_id: header.study_instance_uid.as_str(),
            view,
            projection,
            sex: header.sex,
            age: header.age,
            source_split: None,
            split: Split::Train,
            labels: row_labels.unwrap_or([LabelState::NotMentioned; OBSERVATIONS.len()]),
        };
        indexer.add(0, Ok(row))?;
    }
    Ok(unlabelled)
}

/// Where the list of files not indexed goes: beside the manifest, `<manifest>.skipped.csv`.
pub fn report_path(manifest: &Path) -> PathBuf {
    let mut name = manifest.as_os_str().to_owned();
    name.push(".skipped.csv");
    PathBuf::from(name)
}

/// Write the files not indexed, `path,reason`, to `path` atomically (a header alone when every
/// file was indexed, so that no list from an earlier run is left standing).
pub fn write_report(path: &Path, not_indexed: &[NotIndexed]) -> cxr_core::Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| cxr_core::Error::io(path, std::io::Error::other(e));
    csv.write_record(["path", "reason"]).map_err(failed)?;
    for file in not_indexed {
        csv.write_record([&file.path, &file.reason])
            .map_err(failed)?;
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| cxr_core::Error::io(path, e.into_error()))?;
    cxr_core::atomic::write_bytes(path, &bytes)
}
