//! `cxr-preprocess`: turn a manifest's images into training-ready tensor shards.
//!
//! Decoding full-size radiographs is the slowest step of a pretraining study and the one most
//! often repeated by accident, so it is done once, up front, into the shard format of
//! [`cxr_core::shard`]: grey `u8` squares, `shard_rows` manifest rows per shard.
//!
//! Each image goes through [`cxr_image::prepare`] (decode, antialiased resize), the one path
//! every tool uses to turn a file into model input.
//!
//! - [`output`]: the output directory: its settings file, the lock that array tasks share, the
//!   errors report and `index.json`;
//! - [`mod@run`]: the whole job: which shards this task owns, which are done, the parallel loop, the
//!   summary.
//!
//! Runs are safe to kill and to split: a shard counts as done only once its sidecar is renamed into
//! place, every file is written under a temporary name first, and the shard a row lands in depends
//! only on its position, so `kill -9` loses at most the shards in flight, and cluster array tasks
//! (`--shard-index I --num-shards N`) together produce exactly the bytes of a single run.

pub mod output;
pub mod run;

pub use cxr_image::{Decoding, DicomIntensity, JpegScaling, Target};
pub use run::{run, ArrayTask, Options, Summary};
