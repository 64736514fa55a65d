//! What was indexed, counted: printed after every run and optionally saved as JSON, which is also
//! what the golden tests compare.

use cxr_core::{ManifestRow, OBSERVATIONS};
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
}

impl Summary {
    pub fn of(rows: &[ManifestRow]) -> Summary {
        // Count by enum value first: a String per row and key costs more than the rest of indexing.
        fn count<T: Copy + Ord + fmt::Display>(
            rows: &[ManifestRow],
            key: fn(&ManifestRow) -> T,
        ) -> BTreeMap<String, usize> {
            let mut counts = BTreeMap::new();
            for r in rows {
                *counts.entry(key(r)).or_insert(0) += 1;
            }
            counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        }
        let mut counts = [[0usize; 4]; OBSERVATIONS.len()];
        for r in rows {
            for (c, state) in counts.iter_mut().zip(r.labels) {
                c[state as usize] += 1; // declaration order: positive, negative, uncertain, not mentioned
            }
        }
        let labels = OBSERVATIONS
            .iter()
            .zip(counts)
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
            patients: distinct(rows, |r| (r.dataset.as_str(), r.patient_id.as_str())),
            studies: distinct(rows, |r| (r.dataset.as_str(), r.study_id.as_str())),
            views: count(rows, |r| r.view),
            projections: count(rows, |r| r.projection),
            sexes: count(rows, |r| r.sex),
            splits: count(rows, |r| r.split),
            labels,
            missing_images: None,
            skipped_rows: 0,
        }
    }
}

fn distinct<'a>(
    rows: &'a [ManifestRow],
    key: impl Fn(&'a ManifestRow) -> (&'a str, &'a str),
) -> usize {
    // Label files list a patient's (and a study's) images together: a key like the one before it
    // needs no hash lookup.
    let mut seen = FxHashSet::default();
    let mut last = None;
    for k in rows.iter().map(key) {
        if last != Some(k) {
            seen.insert(k);
            last = Some(k);
        }
    }
    seen.len()
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
