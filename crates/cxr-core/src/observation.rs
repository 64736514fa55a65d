//! The observations (label columns) a manifest carries.
//!
//! CheXpert reports 14 observations; NIH ChestX-ray14 reports 14 findings plus "No Finding".
//! Where both datasets mean the same thing they share one column (NIH's `Effusion` is CheXpert's
//! `Pleural Effusion`); NIH-only findings get columns of their own. NIH's `Mass` and `Nodule`
//! are kept separate rather than folded into CheXpert's broader `Lung Lesion`, so no label is
//! merged that the datasets' authors kept apart. A row of one dataset holds "not mentioned" in
//! the other dataset's columns.

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
}
