//! Training the study's chest X-ray models from `cxr-preprocess` shards and a `cxr-index`
//! manifest: random, ImageNet or in-domain initialisation, pathology or pretraining tasks
//! (sex, age, view), reproducible and resumable.
//!
//! The library is what the `cxr-train` binary runs: [`trainer::fit`] with a
//! [`config::TrainConfig`], and [`predict::run`] for a predictions file `cxr-eval` scores
//! ([`image_predict::run`] for single image files, with Grad-CAM heatmaps); its flags, and how
//! they become those configurations, are [`cli`]'s.

pub mod augment;
pub mod barlow;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dam;
pub mod data;
pub mod gpu_check;
pub mod heatmap;
pub mod image_predict;
pub mod input;
pub mod labels;
pub mod numeric;
pub mod optim;
pub mod predict;
pub mod schedule;
pub mod store;
pub mod trainer;
