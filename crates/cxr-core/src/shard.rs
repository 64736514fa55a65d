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
//! checksum, and [`ShardIndex::open_all`] checks every file against it: a shard damaged on disk or
//! changed since is an error naming it, never images silently wrong. The index only ever names
//! plain files inside its own directory.

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

/// Map a shard file into memory.
fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: shards are written once, atomically (a new file renamed over the old), and never
    // modified in place.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Check a shard's bytes against the SHA-256 that `record` (index or sidecar) holds for it.
fn check_sha256(path: &Path, bytes: &[u8], recorded: &str, record: &Path) -> Result<()> {
    let found = sha256_hex(bytes);
    if found == recorded {
        return Ok(());
    }
    let short = |hash: &str| hash.chars().take(16).collect::<String>();
    Err(Error::Shard {
        path: path.to_path_buf(),
        reason: format!(
            "corrupted: its SHA-256 is {}..., but {} records {}... for it, so the file was damaged \
             or changed after cxr-preprocess wrote it; run the cxr-preprocess command that made it \
             again (same --out): it remakes shards that fail their checksum",
            short(&found),
            record.display(),
            short(recorded)
        ),
    })
}

/// Why `name` is not a plain file name (one that stays inside the directory it is joined to).
fn file_name_problem(name: &str) -> Option<&'static str> {
    let path = Path::new(name);
    if name.is_empty() {
        Some("is empty")
    } else if path.is_absolute() || name.starts_with(['/', '\\']) {
        Some("is absolute")
    } else if name.split(['/', '\\']).any(|part| part == "..") {
        Some("goes up with `..`")
    } else if name.contains(['/', '\\']) {
        Some("is a path, not a file name")
    } else if name == "." || path.components().count() != 1 || name.contains(['\0', ':']) {
        Some("is not a plain file name")
    } else {
        None
    }
}

impl Shard {
    /// Open a shard as it is, without checking its checksum: readers of a shard directory use
    /// [`ShardIndex::open_all`], which does.
    pub fn open(path: &Path) -> Result<Shard> {
        Shard::parse(path, map(path)?)
    }

    /// Open a shard whose bytes must hash to `sha256`, the checksum that `record` (the
    /// `index.json` or sidecar naming the shard) holds for it. The whole file is hashed first, so
    /// damage anywhere, header included, is reported as a corrupted shard.
    pub fn open_checked(path: &Path, sha256: &str, record: &Path) -> Result<Shard> {
        let mmap = map(path)?;
        check_sha256(path, &mmap, sha256, record)?;
        Shard::parse(path, mmap)
    }

    fn parse(path: &Path, mmap: Mmap) -> Result<Shard> {
        let bad = |reason: String| Error::Shard {
            path: path.to_path_buf(),
            reason,
        };
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
                let here = match found {
                    Some(other) => format!("that row is `{other}` here"),
                    None => format!("this manifest has {} rows", manifest.rows.len()),
                };
                return Err(Error::Shard {
                    path: self.path.clone(),
                    reason: format!(
                        "image `{id}` is row {row} of the manifest it was made from, but {here}: \
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

    /// The sidecar of shard `k` if that shard is complete (sidecar and file both present). A
    /// sidecar that does not parse, or names a file other than shard `k`'s, does not count. The
    /// file's checksum is not checked here: see [`ShardInfo::verify`].
    pub fn read_done(dir: &Path, k: usize) -> Option<ShardInfo> {
        let bytes = std::fs::read(dir.join(info_file(k))).ok()?;
        let info: ShardInfo = serde_json::from_slice(&bytes).ok()?;
        (info.file == shard_file(k) && dir.join(&info.file).exists()).then_some(info)
    }

    /// Check the shard file in `dir` against this record's checksum; `record` is the file that
    /// holds the record (sidecar or index), for the message. A mismatch is an [`Error::Shard`]
    /// naming the shard file; a file that cannot be read is an [`Error::Io`].
    pub fn verify(&self, dir: &Path, record: &Path) -> Result<()> {
        if let Some(problem) = file_name_problem(&self.file) {
            return Err(Error::Shard {
                path: record.to_path_buf(),
                reason: format!(
                    "shard file `{}` {problem}: shard files are plain names inside the shard \
                     directory",
                    self.file
                ),
            });
        }
        let path = dir.join(&self.file);
        check_sha256(&path, &map(&path)?, &self.sha256, record)
    }
}

/// The file in a shard directory that records how its shards were made ([`ShardSettings`]).
pub const SETTINGS_FILE: &str = "preprocess.json";

/// Everything that decides a shard's bytes, besides the image files themselves: what
/// `cxr-preprocess` records in [`SETTINGS_FILE`] before writing shards (and checks on every
/// re-run), and what `cxr-train predict --image` reads to prepare a file as its shard was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSettings {
    pub format: String,
    pub size: usize,
    pub resize: Resize,
    pub shard_rows: usize,
    /// `dct` (scaled JPEG decoding allowed) or `full` (`cxr_image::JpegScaling::name`).
    pub jpeg_decode: String,
    /// How DICOM values became grey levels: `window` or `full-range`
    /// (`cxr_image::DicomIntensity::name`). Directories made before DICOM was read record
    /// none; they hold no decoded DICOM, and read as `window`, the default.
    #[serde(default = "default_dicom_intensity")]
    pub dicom_intensity: String,
    pub manifest_rows: usize,
    /// SHA-256 of every row's `image_id` and `path`, in order.
    pub manifest_sha256: String,
}

/// `cxr_image::DicomIntensity`'s default's name (a cxr-image test holds the two together).
pub const DEFAULT_DICOM_INTENSITY: &str = "window";

fn default_dicom_intensity() -> String {
    DEFAULT_DICOM_INTENSITY.to_string()
}

impl ShardSettings {
    /// The manifest's fingerprint: SHA-256 of every row's `image_id` and `path`.
    pub fn fingerprint(manifest: &Manifest) -> String {
        let mut text = Vec::new();
        for row in &manifest.rows {
            for field in [&row.image_id, &row.path] {
                text.extend_from_slice(field.as_bytes());
                text.push(0);
            }
        }
        sha256_hex(&text)
    }

    /// The settings recorded in `dir`, or `None` where none are (a new directory, or shards
    /// made before settings were recorded).
    pub fn read(dir: &Path) -> Result<Option<ShardSettings>> {
        let path = dir.join(SETTINGS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Json { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    pub fn shard_count(&self) -> usize {
        ShardIndex::shard_count(self.manifest_rows, self.shard_rows)
    }

    /// Rows `[first, end)` that shard `k` covers.
    pub fn rows_of(&self, k: usize) -> std::ops::Range<usize> {
        let first = k * self.shard_rows;
        first..(first + self.shard_rows).min(self.manifest_rows)
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
        // Shards are opened by joining these names to `dir`: `../x` or `/etc/passwd` would read
        // files outside it.
        for (i, shard) in index.shards.iter().enumerate() {
            if let Some(problem) = file_name_problem(&shard.file) {
                return Err(Error::Shard {
                    reason: format!(
                        "shard {i} names file `{}`, which {problem}: shard files must be plain \
                         names inside the shard directory (cxr-preprocess writes \
                         `shard-NNNNN.safetensors`); rebuild the index with \
                         `cxr-preprocess --out {} --index-only`",
                        shard.file,
                        dir.display()
                    ),
                    path,
                });
            }
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

    /// Open every shard, checking each file against its checksum in `index.json` (see
    /// [`Shard::open_checked`]). Hashing reads every byte once, so the shards are hashed on all
    /// cores; a corrupted shard is an error naming it.
    pub fn open_all(&self, dir: &Path) -> Result<Vec<Shard>> {
        let record = dir.join(INDEX_FILE);
        let open = |s: &ShardInfo| Shard::open_checked(&dir.join(&s.file), &s.sha256, &record);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.shards.len());
        if threads <= 1 {
            return self.shards.iter().map(open).collect();
        }
        let open = &open;
        std::thread::scope(|scope| {
            let parts: Vec<_> = self
                .shards
                .chunks(self.shards.len().div_ceil(threads))
                .map(|part| scope.spawn(move || part.iter().map(open).collect::<Result<Vec<_>>>()))
                .collect();
            let mut shards = Vec::with_capacity(self.shards.len());
            for part in parts {
                let opened = part
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                shards.extend(opened?);
            }
            Ok(shards)
        })
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

    /// A shard read with another manifest names what that manifest has instead, never as
    /// `Some("...")`.
    #[test]
    fn a_shard_checked_against_another_manifest_names_the_row_found() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&[0; 8], &[1, 2], &["a.png", "b.png"], 2, Resize::Pad).unwrap();
        ShardInfo::new(0, 1, 2, &bytes, 2, vec![])
            .write_shard(dir.path(), 0, &bytes)
            .unwrap();
        let shard = Shard::open(&dir.path().join(shard_file(0))).unwrap();
        let manifest = |ids: &[&str]| Manifest {
            rows: ids
                .iter()
                .map(|&id| crate::ManifestRow::unlabelled(crate::Dataset::Nih, id, id, "p", "p/s"))
                .collect(),
        };
        assert!(shard
            .check_against(&manifest(&["x.png", "a.png", "b.png"]))
            .is_ok());
        let err = shard
            .check_against(&manifest(&["x.png", "c.png", "b.png"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image `a.png` is row 1") && err.contains("that row is `c.png` here"),
            "{err}"
        );
        let err = shard
            .check_against(&manifest(&["x.png"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image `a.png` is row 1") && err.contains("this manifest has 1 rows"),
            "{err}"
        );
        assert!(!err.contains("Some(") && !err.contains("None"), "{err}");
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

    /// A directory holding one finished shard (rows 7 and 9) and its index.
    fn one_shard_dir() -> (tempfile::TempDir, ShardIndex) {
        let dir = tempfile::tempdir().unwrap();
        let images: Vec<u8> = (0..2 * 16).map(|i| i as u8).collect();
        let bytes = encode(&images, &[7, 9], &["a.png", "b.png"], 4, Resize::Pad).unwrap();
        let info = ShardInfo::new(0, 6, 4, &bytes, 2, vec![]);
        info.write_shard(dir.path(), 0, &bytes).unwrap();
        let index = ShardIndex {
            format: FORMAT.to_string(),
            size: 4,
            resize: Resize::Pad,
            shard_rows: 4,
            manifest_rows: 10,
            shards: vec![info],
        };
        index.write(dir.path()).unwrap();
        (dir, index)
    }

    #[test]
    fn a_shard_that_fails_its_checksum_is_refused_as_corrupted() {
        let (dir, index) = one_shard_dir();
        assert_eq!(index.open_all(dir.path()).unwrap()[0].rows(), &[7, 9]);
        let path = dir.path().join(shard_file(0));
        let good = std::fs::read(&path).unwrap();
        // One pixel changed (the images are the last tensor), then one byte of the header's image
        // ids: both still parse as a shard, and both must be reported as corruption.
        let header = good.windows(5).position(|w| w == b"a.png").unwrap();
        for at in [good.len() - 3, header] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                Shard::open(&path).is_ok(),
                "the damage leaves a valid shard"
            );
            let err = index.open_all(dir.path()).err().unwrap().to_string();
            assert!(
                err.contains("shard-00000.safetensors")
                    && err.contains("corrupted")
                    && err.contains("index.json")
                    && err.contains("run the cxr-preprocess command"),
                "{err}"
            );
            let sidecar = dir.path().join(info_file(0));
            let err = index.shards[0].verify(dir.path(), &sidecar).unwrap_err();
            assert!(matches!(err, Error::Shard { .. }), "{err}");
            assert!(err.to_string().contains("shard-00000.json"), "{err}");
        }
        std::fs::write(&path, b"").unwrap();
        let err = index.open_all(dir.path()).err().unwrap().to_string();
        assert!(err.contains("corrupted"), "{err}");
        std::fs::write(&path, &good).unwrap();
        index.shards[0]
            .verify(dir.path(), &dir.path().join(info_file(0)))
            .unwrap();
    }

    #[test]
    fn index_entries_must_be_plain_file_names_inside_the_directory() {
        let (dir, mut index) = one_shard_dir();
        for (file, problem) in [
            ("../../outside/x.safetensors", "goes up with `..`"),
            ("/etc/passwd", "is absolute"),
            ("..", "goes up with `..`"),
            ("sub/shard-00000.safetensors", "is a path"),
            ("sub\\x", "is a path"),
            ("", "is empty"),
            (".", "is not a plain file name"),
        ] {
            index.shards[0].file = file.to_string();
            index.write(dir.path()).unwrap();
            let err = ShardIndex::read(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("index.json")
                    && err.contains(&format!("shard 0 names file `{file}`, which {problem}")),
                "{err}"
            );
            let err = index.shards[0]
                .verify(dir.path(), Path::new("x.json"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem), "{err}");
        }
        index.shards[0].file = shard_file(0);
        index.write(dir.path()).unwrap();
        assert_eq!(ShardIndex::read(dir.path()).unwrap(), index);
    }

    #[test]
    fn a_sidecar_naming_another_file_is_not_a_finished_shard() {
        let (dir, index) = one_shard_dir();
        assert!(ShardInfo::read_done(dir.path(), 0).is_some());
        std::fs::write(dir.path().join("x.safetensors"), b"").unwrap();
        let info = ShardInfo {
            file: "x.safetensors".to_string(),
            ..index.shards[0].clone()
        };
        let json = serde_json::to_vec(&info).unwrap();
        std::fs::write(dir.path().join(info_file(0)), json).unwrap();
        assert_eq!(ShardInfo::read_done(dir.path(), 0), None);
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
