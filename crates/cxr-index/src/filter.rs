//! Row filters: which images a study uses.

use cxr_core::{ManifestRow, Projection, Split, View};

/// Keep rows matching every set condition.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub frontal_only: bool,
    pub projections: Vec<Projection>,
    pub source_split: Option<Split>,
}

impl Filter {
    pub fn keeps<S>(&self, row: &ManifestRow<S>) -> bool {
        (!self.frontal_only || row.view == View::Frontal)
            && (self.projections.is_empty() || self.projections.contains(&row.projection))
            && self
                .source_split
                .is_none_or(|s| row.source_split == Some(s))
    }
}
