//! What was indexed, counted: printed after every run and optionally saved as JSON, which is also
//! what the golden tests compare.

use cxr_core::{Dataset, ManifestColumns, Projection, Sex, Split, View, OBSERVATIONS};
use rustc_hash::FxHashSet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Counts of each raw state of one observation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StateCounts {
    pub positive: usize,
    pub negative: usize,
    pub uncertain: usize,
    pub not_mentioned: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub rows: usize,
    pub patients: usize,
    pub studies: usize,
    pub views: BTreeMap<String, usize>,
    pub projections: BTreeMap<String, usize>,
    pub sexes: BTreeMap<String, usize>,
    pub splits: BTreeMap<String, usize>,
    /// Per observation, in manifest column order.
    pub labels: Vec<(String, StateCounts)>,
    /// Rows whose image is not under the root (None when no root was checked).
    pub missing_images: Option<usize>,
    /// Rows `--lenient` skipped.
    pub skipped_rows: usize,
    /// Images left out because their view is neither frontal nor lateral (MIMIC, DICOM).
    #[serde(skip_serializing_if = "is_zero")]
    pub unknown_views: usize,
    /// Files under a DICOM folder that were not indexed (listed beside the manifest).
    #[serde(skip_serializing_if = "is_zero")]
    pub files_not_indexed: usize,
}

/// Counts that only some datasets have are left out of the JSON where they are zero.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    pub fn of(rows: &ManifestColumns) -> Summary {
        // One pass over the rows, counting by enum code: a pass per count reads every row (and
        // its strings) again, and a `String` per row and key costs more than the rest of
        // indexing.
        let mut views = [0usize; View::ALL.len()];
        let mut projections = [0usize; Projection::ALL.len()];
        let mut sexes = [0usize; Sex::ALL.len()];
        let mut splits = [0usize; Split::ALL.len()];
        let mut labels = [[0usize; 4]; OBSERVATIONS.len()];
        let mut patients = Distinct::default();
        let mut studies = Distinct::default();
        for r in rows.rows() {
            views[r.view as usize] += 1;
            projections[r.projection as usize] += 1;
            sexes[r.sex as usize] += 1;
            splits[r.split as usize] += 1;
            for (c, state) in labels.iter_mut().zip(r.labels) {
                c[state as usize] += 1; // declaration order: positive, negative, uncertain, not mentioned
            }
            patients.add(r.dataset, r.patient_id);
            studies.add(r.dataset, r.study_id);
        }
        let labels = OBSERVATIONS
            .iter()
            .zip(labels)
            .map(|(o, [positive, negative, uncertain, not_mentioned])| {
                let c = StateCounts {
                    positive,
                    negative,
                    uncertain,
                    not_mentioned,
                };
                (o.name().to_string(), c)
            })
            .collect();
        Summary {
            rows: rows.len(),
            patients: patients.seen.len(),
            studies: studies.seen.len(),
            views: named(View::NAMES, &views),
            projections: named(Projection::NAMES, &projections),
            sexes: named(Sex::NAMES, &sexes),
            splits: named(Split::NAMES, &splits),
            labels,
            missing_images: None,
            skipped_rows: 0,
            unknown_views: 0,
            files_not_indexed: 0,
        }
    }
}

/// Counts by code as counts by name, leaving out values no row has.
fn named(names: &[&str], counts: &[usize]) -> BTreeMap<String, usize> {
    names
        .iter()
        .zip(counts)
        .filter(|(_, &n)| n > 0)
        .map(|(name, &n)| (name.to_string(), n))
        .collect()
}

/// Distinct `(dataset, id)` keys.
#[derive(Default)]
struct Distinct<'a> {
    seen: FxHashSet<(Dataset, &'a str)>,
    last: Option<(Dataset, &'a str)>,
}

impl<'a> Distinct<'a> {
    fn add(&mut self, dataset: Dataset, id: &'a str) {
        // Label files list a patient's (and a study's) images together: a key like the one
        // before it needs no hash lookup.
        let key = (dataset, id);
        if self.last != Some(key) {
            self.seen.insert(key);
            self.last = Some(key);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "rows         {}", self.rows)?;
        writeln!(f, "patients     {}", self.patients)?;
        writeln!(f, "studies      {}", self.studies)?;
        writeln!(f, "views        {}", line(&self.views))?;
        writeln!(f, "projections  {}", line(&self.projections))?;
        writeln!(f, "sexes        {}", line(&self.sexes))?;
        writeln!(f, "splits       {}", line(&self.splits))?;
        if let Some(missing) = self.missing_images {
            writeln!(f, "no image     {missing}")?;
        }
        if self.skipped_rows > 0 {
            writeln!(f, "skipped      {} bad rows (--lenient)", self.skipped_rows)?;
        }
        if self.unknown_views > 0 {
            writeln!(
                f,
                "left out     {} images of neither a frontal nor a lateral view",
                self.unknown_views
            )?;
        }
        if self.files_not_indexed > 0 {
            writeln!(f, "not indexed  {} files", self.files_not_indexed)?;
        }
        writeln!(
            f,
            "\n{:<28}{:>10}{:>10}{:>10}{:>14}",
            "observation", "positive", "negative", "uncertain", "not mentioned"
        )?;
        for (name, c) in &self.labels {
            writeln!(
                f,
                "{name:<28}{:>10}{:>10}{:>10}{:>14}",
                c.positive, c.negative, c.uncertain, c.not_mentioned
            )?;
        }
        Ok(())
    }
}
