//! The observations (label columns) a manifest carries.
//!
//! CheXpert reports 14 observations; NIH ChestX-ray14 reports 14 findings plus "No Finding".
//! Where both datasets mean the same thing they share one column (NIH's `Effusion` is CheXpert's
//! `Pleural Effusion`); NIH-only findings get columns of their own. NIH's `Mass` and `Nodule`
//! are kept separate rather than folded into CheXpert's broader `Lung Lesion`, so no label is
//! merged that the datasets' authors kept apart. A row of one dataset holds "not mentioned" in
//! the other dataset's columns: [`Dataset::labelled_observations`] says which columns a row's
//! dataset labels, so that a "not mentioned" there is never read as a negative.

use crate::manifest::Dataset;
use crate::{Error, Result};
use std::fmt;

/// One label column of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Observation(u8);

/// Column names in manifest order: CheXpert's 14 in its CSV order, then NIH-only findings.
const NAMES: [&str; 21] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "Infiltration",
    "Mass",
    "Nodule",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
];

/// Every observation, in manifest column order.
pub const OBSERVATIONS: [Observation; 21] = {
    let mut all = [Observation(0); 21];
    let mut i = 0;
    while i < 21 {
        all[i] = Observation(i as u8);
        i += 1;
    }
    all
};

/// CheXpert's 14 observations, in its CSV's order: the study's pathology task.
pub const CHEXPERT_14: [Observation; 14] = {
    let mut all = [Observation(0); 14];
    let mut i = 0;
    while i < 14 {
        all[i] = Observation(i as u8);
        i += 1;
    }
    all
};

/// NIH ChestX-ray14's 14 findings, in the order of Wang et al. (2017).
pub const NIH_14: [Observation; 14] = [
    Observation(8),  // Atelectasis
    Observation(2),  // Cardiomegaly
    Observation(10), // Effusion
    Observation(14), // Infiltration
    Observation(15), // Mass
    Observation(16), // Nodule
    Observation(7),  // Pneumonia
    Observation(9),  // Pneumothorax
    Observation(6),  // Consolidation
    Observation(5),  // Edema
    Observation(17), // Emphysema
    Observation(18), // Fibrosis
    Observation(19), // Pleural Thickening
    Observation(20), // Hernia
];

/// What NIH ChestX-ray14 labels on every image: its 14 findings and `No Finding` (its label
/// file lists each image's findings, or `No Finding`; a finding not listed is absent).
const NIH_LABELLED: [Observation; 15] = {
    let mut all = [Observation(0); 15]; // No Finding first, as in CheXpert's order
    let mut i = 0;
    while i < 14 {
        all[i + 1] = NIH_14[i];
        i += 1;
    }
    all
};

/// The CheXpert competition tasks, averaged for the headline AUC.
pub const COMPETITION_5: [Observation; 5] = [
    Observation(8),  // Atelectasis
    Observation(2),  // Cardiomegaly
    Observation(6),  // Consolidation
    Observation(5),  // Edema
    Observation(10), // Pleural Effusion
];

impl Observation {
    /// The manifest column name, e.g. `Pleural Effusion`.
    pub fn name(self) -> &'static str {
        NAMES[self.0 as usize]
    }

    /// Position in [`OBSERVATIONS`].
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Look a name up, forgiving case, `_` for space and a `prob_` prefix (the form public
    /// CheXNet reproductions write), and accepting NIH's own spellings (`Effusion`,
    /// `Pleural_Thickening`).
    pub fn parse(name: &str) -> Result<Observation> {
        let trimmed = name.trim();
        let bare = trimmed.strip_prefix("prob_").unwrap_or(trimmed);
        let wanted = normalise(bare);
        let wanted = match wanted.as_str() {
            "effusion" => "pleural effusion".to_string(),
            _ => wanted,
        };
        NAMES
            .iter()
            .position(|n| normalise(n) == wanted)
            .map(|i| Observation(i as u8))
            .ok_or_else(|| Error::UnknownObservation(name.to_string()))
    }

    /// Parse a comma-separated list, or one of the named sets `chexpert14`, `nih14`,
    /// `competition5`.
    pub fn parse_list(spec: &str) -> Result<Vec<Observation>> {
        match spec.trim().to_ascii_lowercase().as_str() {
            "chexpert14" | "chexpert" => Ok(CHEXPERT_14.to_vec()),
            "nih14" | "nih" => Ok(NIH_14.to_vec()),
            "competition5" | "competition" => Ok(COMPETITION_5.to_vec()),
            _ => spec.split(',').map(Observation::parse).collect(),
        }
    }
}

impl Dataset {
    /// The observations this dataset labels on every image: CheXpert's 14 for CheXpert and
    /// MIMIC-CXR (the CheXpert labeller reads each of them off the report; blank means the
    /// report does not mention it), NIH's 14 findings and `No Finding` for NIH, none for a
    /// folder of DICOM files (their tags carry no findings). A row's other columns hold "not
    /// mentioned" only because the dataset never looks for those findings: scoring or training
    /// must leave them out, never count them as negatives.
    ///
    /// The one place this rule lives: a model trained on one dataset is scored on another over
    /// the observations both label (`cxr-eval score`).
    pub fn labelled_observations(self) -> &'static [Observation] {
        match self {
            Dataset::Chexpert | Dataset::Mimic => &CHEXPERT_14,
            Dataset::Nih => &NIH_LABELLED,
            Dataset::Dicom => &[],
        }
    }

    /// Whether this dataset labels `observation` (see [`Dataset::labelled_observations`]).
    pub fn labels(self, observation: Observation) -> bool {
        self.labelled_observations().contains(&observation)
    }
}

fn normalise(name: &str) -> String {
    name.trim().replace('_', " ").to_ascii_lowercase()
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for o in OBSERVATIONS {
            assert_eq!(Observation::parse(o.name()).unwrap(), o);
        }
        let effusion = Observation::parse("Effusion").unwrap();
        assert_eq!(effusion.name(), "Pleural Effusion");
        assert_eq!(
            Observation::parse("prob_Pleural_Thickening")
                .unwrap()
                .name(),
            "Pleural Thickening"
        );
        assert!(Observation::parse("Pneumonitis").is_err());
    }

    #[test]
    fn named_sets() {
        let c5: Vec<_> = COMPETITION_5.iter().map(|o| o.name()).collect();
        assert_eq!(
            c5,
            [
                "Atelectasis",
                "Cardiomegaly",
                "Consolidation",
                "Edema",
                "Pleural Effusion"
            ]
        );
        assert_eq!(NIH_14[2].name(), "Pleural Effusion");
        assert_eq!(NIH_14[13].name(), "Hernia");
        assert_eq!(
            Observation::parse_list("Edema,Atelectasis").unwrap().len(),
            2
        );
    }

    /// What a CheXpert model's outputs and NIH's labels share: the 5 competition tasks,
    /// Pneumonia, Pneumothorax and No Finding. CheXpert's broader Lung Lesion is not NIH's
    /// Mass or Nodule, and NIH-only findings are not CheXpert's.
    #[test]
    fn datasets_label_their_own_observations() {
        assert_eq!(Dataset::Chexpert.labelled_observations(), &CHEXPERT_14);
        assert_eq!(Dataset::Mimic.labelled_observations(), &CHEXPERT_14);
        assert!(Dataset::Dicom.labelled_observations().is_empty());
        let nih = Dataset::Nih.labelled_observations();
        assert_eq!(nih.len(), 15);
        assert_eq!(nih[0].name(), "No Finding");
        assert!(NIH_14.iter().all(|&o| Dataset::Nih.labels(o)));
        let shared: Vec<&str> = CHEXPERT_14
            .iter()
            .filter(|&&o| Dataset::Nih.labels(o))
            .map(|o| o.name())
            .collect();
        assert_eq!(
            shared,
            [
                "No Finding",
                "Cardiomegaly",
                "Edema",
                "Consolidation",
                "Pneumonia",
                "Atelectasis",
                "Pneumothorax",
                "Pleural Effusion"
            ]
        );
        assert!(COMPETITION_5.iter().all(|&o| Dataset::Nih.labels(o)));
        assert!(!Dataset::Chexpert.labels(Observation::parse("Mass").unwrap()));
    }
}
