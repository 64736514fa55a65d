//! The numbers people read: per-task AUCs with intervals, means, comparisons; as a table on the
//! terminal and as JSON and CSV files for scripts and papers.
//!
//! Every AUC comes with its bootstrap interval when one was asked for, every mean names the tasks
//! it averages, and undefined AUCs (one class only) are shown as `n/a` and counted, never
//! silently dropped or replaced by a number. Means are over observations (the manifest's label
//! columns, `No Finding` included, as CheXpert's 14) only: the sex and view
//! tasks answer a different question and are reported beside them.
//!
//! A task with fewer than `min_positives` positives or negatives (10 by default) is scored and
//! shown, flagged, but left out of the means: with 3 positives an AUC moves by a third when one
//! of them is ranked differently, and a mean over such tasks is noise however many seeds ran.
//!
//! Computing is kept apart from presenting, so the numbers can be checked (and read back by
//! `cxr-eval report`) without parsing text: `types.rs` holds the plain data that
//! `metrics.json` and `comparison.json` serialize; `compute.rs` fills it from an
//! [`EvalSet`](crate::labels::EvalSet); `render.rs` makes the terminal tables; `files.rs`
//! writes the JSON and CSV files and reads the JSON back; `de.rs` is what serde needs to read
//! the types strictly.

mod compute;
mod de;
mod files;
mod render;
mod types;

pub use compute::{compare, score, setup};
pub use render::fmt_p;
pub use types::{
    CompareReport, MeanComparison, MeanResult, Observations, ScoreReport, Setup, TaskComparison,
    TaskResult,
};
