//! `cxr-preprocess`: turn a manifest's images into training-ready tensor shards.
//!
//! Decoding full-size radiographs is the slowest step of a pretraining study and the one most
//! often repeated by accident, so it is done once, up front, into the shard format of
//! [`cxr_core::shard`]: grey `u8` squares, `shard_rows` manifest rows per shard.
//!
//! - [`decode`]: PNG (8/16-bit; grey, grey+alpha, RGB, RGBA, palette) and JPEG (baseline and
//!   progressive) to 8-bit grey, with Pillow's luma formula, and JPEG's scaled inverse DCT when
//!   the target is small enough to allow it;
//! - [`jpeg`]: the reduced-size baseline JPEG decoder that makes large JPEGs cheap;
//! - [`resize`]: Lanczos3 antialiased resize to the square, centre crop or pad;
//! - [`output`]: the output directory: its settings file, the lock that array tasks share, the
//!   errors report and `index.json`;
//! - [`mod@run`]: the whole job: which shards this task owns, which are done, the parallel loop, the
//!   summary.
//!
//! Runs are safe to kill and to split: a shard counts as done only once its sidecar is renamed into
//! place, every file is written under a temporary name first, and the shard a row lands in depends
//! only on its position, so `kill -9` loses at most the shards in flight, and cluster array tasks
//! (`--shard-index I --num-shards N`) together produce exactly the bytes of a single run.

pub mod decode;
pub mod jpeg;
pub mod output;
pub mod resize;
pub mod run;

pub use decode::{Grey, JpegScaling};
pub use resize::Target;
pub use run::{run, ArrayTask, Options, Summary};
