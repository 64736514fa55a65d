//! Scoring chest X-ray models: per-task ROC AUCs with their uncertainty, paired comparisons,
//! and the figures people would rather look at than read.
//!
//! The study this toolkit reproduces compares pretraining regimes by AUC differences of a point
//! or two, reported without intervals or tests. Here every number comes with its uncertainty:
//! [`auc`] computes exact AUCs (ties included, agreeing with scikit-learn), [`bootstrap`]
//! resamples patients for intervals, [`delong`] tests two models on the same images, and
//! [`report`] and [`plot`] present the results. [`labels`] joins predictions to the manifest's
//! labels under a label policy.
//!
//! A training loop scoring its validation outputs needs only
//! [`auc::roc_auc`]`(labels, scores) -> Option<f64>` (`None` when a task has one class only).

/// ROC AUC lives in cxr-core (cxr-train validates with it too); re-exported where users look.
pub use cxr_core::auc;
pub mod bench;
pub mod bootstrap;
pub mod cli;
pub mod delong;
pub mod labels;
pub mod plot;
pub mod report;
pub mod study;
