//! Patient-level splits.
//!
//! Views and follow-ups of one patient are correlated, so a split by image leaks: every image of a
//! patient goes to the same split. The split is a seeded hash of the dataset and patient id
//! (see [`cxr_core::hash`]), so it is the same on every machine and does not move when rows are
//! added or filtered.
//!
//! A dataset's own evaluation set stays out of the patient split altogether, in split
//! `official`: CheXpert's `valid.csv` (radiologist consensus labels, where published CheXpert
//! numbers come from) and the images of an official test list (NIH's `test_list.txt`). Scoring
//! there makes a study comparable with the literature; checkpoints are selected on `valid`, a
//! patient slice of the training file, so the official set is never looked at before scoring.
//!
//! MIMIC-CXR-JPG publishes three patient-disjoint splits: its `test` is the evaluation set,
//! `official`; its `validate`, published for model selection, goes to `valid` as a whole; its
//! `train` patients are split by the hash like any other. With `--fractions 1,0,0` the manifest's
//! `train`, `valid` and `official` are MIMIC's own `train`, `validate` and `test`.

use cxr_core::hash::{seeded_hash, unit_interval};
use cxr_core::{Dataset, ManifestColumns, ManifestRow, Split};
use rustc_hash::{FxHashMap, FxHashSet};
use std::path::Path;

/// Fractions of patients in train, valid and test; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fractions {
    pub train: f64,
    pub valid: f64,
    pub test: f64,
}

impl std::str::FromStr for Fractions {
    type Err = String;

    /// `0.8,0.1,0.1` (train, valid, test).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("`{s}`: expected three numbers like 0.8,0.1,0.1"))?;
        let [train, valid, test] = parts[..] else {
            return Err(format!(
                "`{s}`: expected three fractions (train,valid,test)"
            ));
        };
        let sum = train + valid + test;
        if parts.iter().any(|f| !(0.0..=1.0).contains(f)) || (sum - 1.0).abs() > 1e-9 {
            return Err(format!(
                "`{s}`: fractions must lie in [0,1] and sum to 1 (sum is {sum})"
            ));
        }
        Ok(Fractions { train, valid, test })
    }
}

/// Assigns rows their patient's split.
#[derive(Debug, Clone)]
pub struct Splitter {
    fractions: Fractions,
    seed: u64,
    /// Image ids of an official test list (`--official-list`).
    official: FxHashSet<String>,
    /// The last patient hashed and its split: label files list a patient's images together, so
    /// a patient is hashed once per run of its rows.
    last: Option<(Dataset, String, Split)>,
}

impl Splitter {
    pub fn new(fractions: Fractions, seed: u64) -> Splitter {
        Splitter {
            fractions,
            seed,
            official: FxHashSet::default(),
            last: None,
        }
    }

    /// Put the images listed in `path` (one image id per line, as NIH's `test_list.txt`) in
    /// split `official`. Returns how many ids it lists.
    pub fn read_official_list(&mut self, path: &Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the official list {}: {e}", path.display()))?;
        self.official = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if self.official.is_empty() {
            return Err(format!(
                "the official list {} names no image: expected one image id per line",
                path.display()
            ));
        }
        Ok(self.official.len())
    }

    /// The split of `row`'s patient, or `official` for the dataset's own evaluation set
    /// (CheXpert's `valid.csv`, MIMIC's `test`, an official list's images).
    pub fn split(&mut self, row: &ManifestRow<&str>) -> Split {
        if let Some(split) = own_split(row) {
            return split;
        }
        if self.official.contains(row.image_id) {
            return Split::Official;
        }
        if let Some((dataset, patient, split)) = &self.last {
            if *dataset == row.dataset && patient == row.patient_id {
                return *split;
            }
        }
        let split = self.hashed(row.dataset, row.patient_id);
        let mut patient = self.last.take().map(|(_, p, _)| p).unwrap_or_default();
        patient.clear();
        patient.push_str(row.patient_id);
        self.last = Some((row.dataset, patient, split));
        split
    }

    fn hashed(&self, dataset: Dataset, patient_id: &str) -> Split {
        let key = [dataset.as_str(), "/", patient_id].concat();
        let u = unit_interval(seeded_hash(self.seed, key.as_bytes()));
        let fractions = self.fractions;
        if u < fractions.train {
            Split::Train
        } else if u < fractions.train + fractions.valid {
            Split::Valid
        } else {
            Split::Test
        }
    }
}

/// The split that the dataset's own split fixes for `row`: none for its training rows, which are
/// split by patient; `valid` for MIMIC's `validate`; `official` for any other evaluation set.
fn own_split(row: &ManifestRow<&str>) -> Option<Split> {
    match (row.dataset, row.source_split?) {
        (_, Split::Train) => None,
        (Dataset::Mimic, Split::Valid) => Some(Split::Valid),
        _ => Some(Split::Official),
    }
}

/// Fail, naming the patient and rows, if any patient is in two splits.
pub fn check_patients(rows: &ManifestColumns) -> Result<(), String> {
    let mut seen: FxHashMap<(&str, &str), (Split, usize)> = FxHashMap::default();
    let mut before: Option<ManifestRow<&str>> = None;
    for (i, row) in rows.rows().enumerate() {
        // A row like the one before it (same patient, same split) adds nothing to check.
        let same = |b: &ManifestRow<&str>| {
            (b.patient_id, b.dataset, b.split) == (row.patient_id, row.dataset, row.split)
        };
        if before.as_ref().is_some_and(same) {
            continue;
        }
        let key = (row.dataset.as_str(), row.patient_id);
        let (split, first) = *seen.entry(key).or_insert((row.split, i));
        if split != row.split {
            return Err(format!(
                "patient {} is in split `{split}` (row {first}) and `{}` (row {i}, {}): a patient's images must \
                 share one split; is the same patient in both the train and valid CSVs, or only some of \
                 their images in the official list?",
                row.patient_id, row.split, row.image_id
            ));
        }
        before = Some(row);
    }
    Ok(())
}
