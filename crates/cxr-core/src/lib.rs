//! Shared vocabulary of the cxr tools.
//!
//! Every tool in the workspace speaks through files on disk: `cxr-index` writes a [`Manifest`],
//! `cxr-preprocess` writes [`shard`]s described by a [`ShardIndex`], `cxr-train` reads both and
//! `cxr-eval` scores predictions against the manifest's labels under a [`LabelPolicy`]. This crate
//! owns those formats so that no tool ever parses another tool's files by hand, and the rules
//! two tools must apply alike: the ROC AUC ([`auc`]) that `cxr-train` logs while it validates
//! and `cxr-eval` reports, and the targets of the sex and view tasks ([`label`]).

pub mod atomic;
pub mod auc;
pub mod error;
pub mod hash;
pub mod label;
pub mod manifest;
pub mod observation;
pub mod paths;
pub mod predictions;
pub mod runlog;
pub mod shard;
pub mod testdata;

pub use error::{Error, Result};
pub use label::{
    sex_target, view_target, BlankRule, LabelPolicy, LabelState, Target, UncertainRule,
};
pub use manifest::{Dataset, Manifest, ManifestColumns, ManifestRow, Projection, Sex, Split, View};
pub use observation::{Observation, CHEXPERT_14, COMPETITION_5, NIH_14, OBSERVATIONS};
pub use shard::{Shard, ShardIndex, ShardInfo};
