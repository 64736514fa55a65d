//! Tensor shards: the training-ready images that `cxr-preprocess` writes and `cxr-train` reads.
//!
//! A shard is a safetensors file holding
//! - `images`: u8 `[N, 1, S, S]`, grey levels as decoded and resized (no normalisation: that is a
//!   training choice, applied on the fly);
//! - `rows`: i64 `[N]`, each image's row position in the manifest it was made from;
//! - metadata `image_ids` (a JSON array), so a reader can check that the manifest it pairs the
//!   shard with is the one the shard was made from, and `format`, `size`, `resize`.
//!
//! Shard `k` always covers manifest rows `[k * shard_rows, (k + 1) * shard_rows)`, minus images that
//! failed to decode. That fixed assignment is what makes a re-run resume (a shard with its
//! [`ShardInfo`] sidecar is done) and lets cluster array tasks split one job with a union identical,
//! byte for byte, to a single run. The [`ShardIndex`] (`index.json`) lists every shard with its
//! checksum.

use crate::atomic;
use crate::hash::sha256_hex;
use crate::{Error, Manifest, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Format tag stored in every shard and index.
pub const FORMAT: &str = "cxr-shard/1";
/// The index file name inside a shard directory.
pub const INDEX_FILE: &str = "index.json";

/// How an image was brought to `S x S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Shorter side to S, then the centre S x S.
    CentreCrop,
    /// Longer side to S, then padded with black to a square: nothing cut off.
    Pad,
}

/// An image that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageError {
    pub row: usize,
    pub path: String,
    pub reason: String,
}

/// What is known about one finished shard; also written beside it as `shard-NNNNN.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    /// First manifest row this shard covers.
    pub first_row: usize,
    /// Manifest rows covered (images + errors).
    pub rows: usize,
    /// Images stored.
    pub images: usize,
    pub sha256: String,
    pub errors: Vec<ImageError>,
}

/// `index.json`: every shard of a preprocessing run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub format: String,
    pub size: usize,
    pub resize: Resize,
    /// Rows per shard (the last may cover fewer).
    pub shard_rows: usize,
    /// Rows in the manifest the shards were made from.
    pub manifest_rows: usize,
    pub shards: Vec<ShardInfo>,
}

/// File name of shard `k`.
pub fn shard_file(k: usize) -> String {
    format!("shard-{k:05}.safetensors")
}

/// File name of shard `k`'s sidecar.
pub fn info_file(k: usize) -> String {
    format!("shard-{k:05}.json")
}

/// Encode a shard in memory. `images` holds `rows.len()` images of `size * size` bytes.
pub fn encode(
    images: &[u8],
    rows: &[usize],
    image_ids: &[&str],
    size: usize,
    resize: Resize,
) -> Result<Vec<u8>> {
    let n = rows.len();
    assert_eq!(
        images.len(),
        n * size * size,
        "image buffer does not match row count"
    );
    let row_bytes: Vec<u8> = rows
        .iter()
        .flat_map(|&r| (r as i64).to_le_bytes())
        .collect();
    let images_view =
        TensorView::new(Dtype::U8, vec![n, 1, size, size], images).map_err(shard_err)?;
    let rows_view = TensorView::new(Dtype::I64, vec![n], &row_bytes).map_err(shard_err)?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("size".to_string(), size.to_string()),
        (
            "resize".to_string(),
            serde_json::to_string(&resize).expect("serialisable"),
        ),
        (
            "image_ids".to_string(),
            serde_json::to_string(image_ids).expect("serialisable"),
        ),
    ]);
    let bytes = safetensors::serialize(
        [("images", images_view), ("rows", rows_view)],
        Some(metadata),
    )
    .map_err(shard_err)?;
    Ok(canonical_header(bytes))
}

/// Safetensors writes its `__metadata__` map in `HashMap` order, which is seeded at random in
/// every process, so the same shard would get different header bytes (and checksums) from one run
/// to the next. Rewriting the header with its keys sorted, in place and at the same length, makes
/// shards reproducible byte for byte without changing what any reader sees.
fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("serialize wrote a header")) as usize;
    let header = &mut bytes[8..8 + len];
    let value: serde_json::Value = serde_json::from_slice(header).expect("serialize wrote JSON");
    // serde_json's map is a BTreeMap (no `preserve_order`), so writing it back sorts every key.
    let text = serde_json::to_vec(&value).expect("serialisable");
    assert!(text.len() <= len, "sorting keys cannot lengthen the header");
    header[..text.len()].copy_from_slice(&text);
    header[text.len()..].fill(b' ');
    bytes
}

fn shard_err(e: safetensors::SafeTensorError) -> Error {
    Error::Shard {
        path: PathBuf::from("<memory>"),
        reason: e.to_string(),
    }
}

/// A memory-mapped shard: images are read in place, never copied whole.
pub struct Shard {
    path: PathBuf,
    mmap: Mmap,
    images_offset: usize,
    size: usize,
    rows: Vec<usize>,
    image_ids: Vec<String>,
}

impl Shard {
    pub fn open(path: &Path) -> Result<Shard> {
        let bad = |reason: String| Error::Shard {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: shards are written once, atomically, and never modified in place.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| bad(e.to_string()))?;
        let tensors = SafeTensors::deserialize(&mmap).map_err(|e| bad(e.to_string()))?;
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "missing format tag `{FORMAT}`; re-run cxr-preprocess"
            )));
        }
        let images = tensors.tensor("images").map_err(|e| bad(e.to_string()))?;
        let shape = images.shape().to_vec();
        if images.dtype() != Dtype::U8 || shape.len() != 4 || shape[1] != 1 || shape[2] != shape[3]
        {
            return Err(bad(format!(
                "`images` should be u8 [N,1,S,S], found {:?} {shape:?}",
                images.dtype()
            )));
        }
        let rows_view = tensors.tensor("rows").map_err(|e| bad(e.to_string()))?;
        let rows: Vec<usize> = rows_view
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .collect();
        let image_ids: Vec<String> =
            serde_json::from_str(info.get("image_ids").map(String::as_str).unwrap_or("[]"))
                .map_err(|e| bad(format!("bad image_ids metadata: {e}")))?;
        if rows.len() != shape[0] || image_ids.len() != shape[0] {
            return Err(bad(format!(
                "{} images but {} rows and {} ids",
                shape[0],
                rows.len(),
                image_ids.len()
            )));
        }
        let images_offset = images.data().as_ptr() as usize - mmap.as_ptr() as usize;
        Ok(Shard {
            path: path.to_path_buf(),
            size: shape[2],
            images_offset,
            mmap,
            rows,
            image_ids,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Side length S.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Manifest row of each image.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    pub fn image_ids(&self) -> &[String] {
        &self.image_ids
    }

    /// The `i`-th image's `S * S` grey levels, borrowed from the mapped file.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.size * self.size;
        let start = self.images_offset + i * len;
        &self.mmap[start..start + len]
    }

    /// Check that every image's row in `manifest` carries the image id stored with it.
    pub fn check_against(&self, manifest: &Manifest) -> Result<()> {
        for (&row, id) in self.rows.iter().zip(&self.image_ids) {
            let found = manifest.rows.get(row).map(|r| r.image_id.as_str());
            if found != Some(id.as_str()) {
                return Err(Error::Shard {
                    path: self.path.clone(),
                    reason: format!(
                        "image `{id}` is row {row} of the manifest it was made from, but that row is {found:?} here: \
                         pass the manifest given to cxr-preprocess"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl ShardInfo {
    /// Describe an encoded shard.
    pub fn new(
        k: usize,
        first_row: usize,
        rows: usize,
        bytes: &[u8],
        images: usize,
        errors: Vec<ImageError>,
    ) -> ShardInfo {
        ShardInfo {
            file: shard_file(k),
            first_row,
            rows,
            images,
            sha256: sha256_hex(bytes),
            errors,
        }
    }

    /// Write a finished shard: the tensor file first, then its sidecar, each atomically; a shard
    /// counts as done only when its sidecar exists.
    pub fn write_shard(&self, dir: &Path, k: usize, bytes: &[u8]) -> Result<()> {
        atomic::write_bytes(&dir.join(&self.file), bytes)?;
        let json = serde_json::to_vec_pretty(self).expect("serialisable");
        atomic::write_bytes(&dir.join(info_file(k)), &json)
    }

    /// The sidecar of shard `k` if that shard is complete (sidecar and file both present).
    pub fn read_done(dir: &Path, k: usize) -> Option<ShardInfo> {
        let bytes = std::fs::read(dir.join(info_file(k))).ok()?;
        let info: ShardInfo = serde_json::from_slice(&bytes).ok()?;
        dir.join(&info.file).exists().then_some(info)
    }
}

impl ShardIndex {
    pub fn read(dir: &Path) -> Result<ShardIndex> {
        let path = dir.join(INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let index: ShardIndex = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        if index.format != FORMAT {
            return Err(Error::Shard {
                path,
                reason: format!(
                    "format `{}` is not `{FORMAT}`; re-run cxr-preprocess",
                    index.format
                ),
            });
        }
        Ok(index)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("serialisable");
        atomic::write_bytes(&dir.join(INDEX_FILE), &json)
    }

    /// Number of shards a manifest of `manifest_rows` rows is cut into.
    pub fn shard_count(manifest_rows: usize, shard_rows: usize) -> usize {
        manifest_rows.div_ceil(shard_rows)
    }

    /// Total images across shards.
    pub fn images(&self) -> usize {
        self.shards.iter().map(|s| s.images).sum()
    }

    /// Open every shard.
    pub fn open_all(&self, dir: &Path) -> Result<Vec<Shard>> {
        self.shards
            .iter()
            .map(|s| Shard::open(&dir.join(&s.file)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_open_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4;
        let images: Vec<u8> = (0..2 * size * size).map(|i| i as u8).collect();
        let bytes = encode(
            &images,
            &[7, 9],
            &["a.png", "b.png"],
            size,
            Resize::CentreCrop,
        )
        .unwrap();
        let info = ShardInfo::new(3, 6, 4, &bytes, 2, vec![]);
        info.write_shard(dir.path(), 3, &bytes).unwrap();
        assert_eq!(ShardInfo::read_done(dir.path(), 3), Some(info.clone()));
        let shard = Shard::open(&dir.path().join(shard_file(3))).unwrap();
        assert_eq!(shard.rows(), &[7, 9]);
        assert_eq!(shard.image_ids(), &["a.png", "b.png"]);
        assert_eq!(shard.image(1), &images[16..32]);
        assert_eq!(
            sha256_hex(&std::fs::read(shard.path()).unwrap()),
            info.sha256
        );
    }

    #[test]
    fn encoding_is_byte_for_byte_reproducible() {
        let encode_once = || encode(&[9; 8], &[3, 5], &["a", "b\"c"], 2, Resize::Pad).unwrap();
        let first = encode_once();
        // HashMap order differs between maps even within one process, so repeats would catch it.
        assert!((0..20).all(|_| encode_once() == first));
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains(r#"{"__metadata__":{"format""#), "{text}");
    }

    #[test]
    fn a_truncated_shard_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&[0; 16], &[0], &["a"], 4, Resize::Pad).unwrap();
        let path = dir.path().join("cut.safetensors");
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(err.contains("cut.safetensors"), "{err}");
    }
}
