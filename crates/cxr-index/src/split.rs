//! Patient-level splits.
//!
//! Views and follow-ups of one patient are correlated, so a split by image leaks: every image of a
//! patient goes to the same split. The split is a seeded hash of the dataset and patient id
//! (see [`cxr_core::hash`]), so it is the same on every machine and does not move when rows are
//! added or filtered. Rows of a dataset's own held-out split (CheXpert's `valid.csv`) keep it.

use cxr_core::hash::{seeded_hash, unit_interval};
use cxr_core::{Dataset, ManifestRow, Split};
use rustc_hash::FxHashMap;

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

/// Assign every row its patient's split.
pub fn assign(rows: &mut [ManifestRow], fractions: Fractions, seed: u64) {
    // Label files list a patient's images together: hash once per run of one patient's rows.
    let mut last: Option<(Dataset, String, Split)> = None;
    for row in rows {
        row.split = match (row.source_split, &last) {
            (Some(official), _) if official != Split::Train => official,
            (_, Some((dataset, patient, split)))
                if *dataset == row.dataset && *patient == row.patient_id =>
            {
                *split
            }
            _ => {
                let key = [row.dataset.as_str(), "/", &row.patient_id].concat();
                let u = unit_interval(seeded_hash(seed, key.as_bytes()));
                let split = if u < fractions.train {
                    Split::Train
                } else if u < fractions.train + fractions.valid {
                    Split::Valid
                } else {
                    Split::Test
                };
                last = Some((row.dataset, row.patient_id.clone(), split));
                split
            }
        };
    }
}

/// Fail, naming the patient and rows, if any patient is in two splits.
pub fn check_patients(rows: &[ManifestRow]) -> Result<(), String> {
    let mut seen: FxHashMap<(&str, &str), (Split, usize)> = FxHashMap::default();
    for (i, row) in rows.iter().enumerate() {
        // A row like the one before it (same patient, same split) adds nothing to check.
        if i > 0 {
            let before = &rows[i - 1];
            if before.patient_id == row.patient_id
                && before.dataset == row.dataset
                && before.split == row.split
            {
                continue;
            }
        }
        let key = (row.dataset.as_str(), row.patient_id.as_str());
        let (split, first) = *seen.entry(key).or_insert((row.split, i));
        if split != row.split {
            return Err(format!(
                "patient {} is in split `{split}` (row {first}) and `{}` (row {i}, {}): a patient's images must \
                 share one split; is the same patient in both the train and valid CSVs?",
                row.patient_id, row.split, row.image_id
            ));
        }
    }
    Ok(())
}
