//! Samples from memory-mapped shards, batches built in parallel, several batches prefetched.
//!
//! The shards stay memory-mapped ([`cxr_core::Shard`]): a batch reads only its own images, so a
//! 200 GB CheXpert shard set trains on a machine with far less memory. Batches are assembled by
//! rayon (one sample per task) on a background thread, up to [`PREFETCH`] batches ahead of the
//! model. On a GPU a step takes tens of milliseconds and one core builds about 2,000 augmented
//! 224 px images a second (`cxr-train bench --loader`), so a queue of batches absorbs the
//! slower ones; the training log's `data_wait` says how much of its time a run still waited.
//! Which images form a batch and how each is augmented are pure functions of
//! `(seed, epoch, position)`: the order is a seeded shuffle per epoch and each sample's
//! augmentation generator is seeded by its position in the selection, which is what makes runs
//! repeatable and resumable mid-epoch.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use cxr_core::{Manifest, ManifestRow, Projection, Shard, ShardIndex, Split, View};
use rayon::prelude::*;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use crate::augment::{prepare, SampleRng};
use crate::config::{AugmentConfig, Normalisation, Subset};
use crate::labels::{HeadTask, Targets};

/// Which manifest rows a run uses.
#[derive(Debug, Clone)]
pub struct Filter {
    pub split: Split,
    pub frontal_only: bool,
    /// Projections kept; empty keeps all.
    pub projections: Vec<Projection>,
}

impl Subset {
    /// The training samples with `heads`' targets and the validation samples with
    /// `valid_heads`' (selection compares runs, so every run selects on the same labels). Fails
    /// on an unknown split or projection name, or when fewer training images than one batch
    /// remain.
    pub fn select(
        &self,
        set: &Arc<ShardSet>,
        manifest: &Manifest,
        [heads, valid_heads]: [&[HeadTask]; 2],
        batch_size: usize,
    ) -> Result<(Samples, Samples)> {
        let projections = self
            .projections
            .iter()
            .map(|p| {
                Projection::parse(p)
                    .with_context(|| format!("projection `{p}`: use PA, AP, LL or RL"))
            })
            .collect::<Result<Vec<_>>>()?;
        let select = |name: &str, heads: &[HeadTask]| -> Result<Samples> {
            let split = Split::parse(name)
                .with_context(|| format!("split `{name}`: use train, valid or test"))?;
            if split == Split::Official {
                bail!(
                    "split `official` is the dataset's own evaluation set (CheXpert's valid.csv): \
                     it is only scored (cxr-train predict --split official), never trained on or \
                     used to select checkpoints; select on `valid`"
                );
            }
            let filter = Filter {
                split,
                frontal_only: self.frontal_only,
                projections: projections.clone(),
            };
            Ok(Samples::select(set.clone(), manifest, &filter, heads))
        };
        let train = select(&self.train_split, heads)?;
        let valid = select(&self.valid_split, valid_heads)?;
        if train.len() < batch_size {
            bail!(
                "{} training images after filtering, fewer than one batch of {batch_size}: check \
                 --train-split, the filters and the shards",
                train.len()
            );
        }
        Ok((train, valid))
    }
}

impl Filter {
    fn keeps(&self, row: &ManifestRow) -> bool {
        row.split == self.split
            && (!self.frontal_only || row.view == View::Frontal)
            && (self.projections.is_empty() || self.projections.contains(&row.projection))
    }
}

/// The opened shards of a preprocessing run, checked against the manifest.
pub struct ShardSet {
    shards: Vec<Shard>,
    pub size: usize,
}

impl ShardSet {
    pub fn open(dir: &Path, manifest: &Manifest) -> Result<ShardSet> {
        let index = ShardIndex::read(dir).with_context(|| {
            format!(
                "cannot read the shard index in {}; run cxr-preprocess first",
                dir.display()
            )
        })?;
        if index.manifest_rows != manifest.len() {
            bail!(
                "the shards in {} were made from a manifest of {} rows, this one has {}: pass the \
                 manifest given to cxr-preprocess",
                dir.display(),
                index.manifest_rows,
                manifest.len()
            );
        }
        let shards = index.open_all(dir)?;
        for shard in &shards {
            shard.check_against(manifest)?;
            if shard.size() != index.size {
                bail!(
                    "{}: images are {} px, the index says {}",
                    shard.path().display(),
                    shard.size(),
                    index.size
                );
            }
        }
        Ok(ShardSet {
            shards,
            size: index.size,
        })
    }
}

/// One run's selection of images with their targets.
pub struct Samples {
    set: Arc<ShardSet>,
    /// (shard, image within shard), in manifest row order.
    items: Vec<(usize, usize)>,
    /// The manifest row of each sample.
    pub rows: Vec<usize>,
    pub image_ids: Vec<String>,
    pub heads: Vec<HeadTask>,
    pub targets: Targets,
}

impl Samples {
    pub fn select(
        set: Arc<ShardSet>,
        manifest: &Manifest,
        filter: &Filter,
        heads: &[HeadTask],
    ) -> Samples {
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        for (k, shard) in set.shards.iter().enumerate() {
            for (i, &row) in shard.rows().iter().enumerate() {
                if filter.keeps(&manifest.rows[row]) {
                    found.push((row, k, i));
                }
            }
        }
        found.sort_unstable();
        let rows: Vec<&ManifestRow> = found.iter().map(|&(r, _, _)| &manifest.rows[r]).collect();
        Samples {
            image_ids: rows.iter().map(|r| r.image_id.clone()).collect(),
            targets: Targets::build(heads, &rows),
            items: found.iter().map(|&(_, k, i)| (k, i)).collect(),
            rows: found.iter().map(|&(r, _, _)| r).collect(),
            heads: heads.to_vec(),
            set,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn size(&self) -> usize {
        self.set.size
    }

    /// Build the batch of the samples at `positions`; `augment` is `(config, seed, epoch)`.
    pub fn batch(
        &self,
        positions: &[usize],
        augment: Option<(&AugmentConfig, u64, u64)>,
        norm: &Normalisation,
    ) -> Batch {
        let size = self.set.size;
        let per = norm.mean.len() * size * size;
        let mut images = vec![0f32; positions.len() * per];
        images
            .par_chunks_mut(per)
            .zip(positions)
            .for_each(|(out, &p)| {
                let (k, i) = self.items[p];
                let pixels = self.set.shards[k].image(i);
                match augment {
                    Some((config, seed, epoch)) if !config.is_identity() => {
                        let mut rng = SampleRng::new(seed, epoch, p as u64);
                        prepare(pixels, size, Some((config, &mut rng)), norm, out)
                    }
                    _ => prepare(pixels, size, None, norm, out),
                }
            });
        let gather = |all: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            all.iter()
                .zip(&self.heads)
                .map(|(v, h)| {
                    let k = h.outputs();
                    positions
                        .iter()
                        .flat_map(|&p| v[p * k..(p + 1) * k].iter().copied())
                        .collect()
                })
                .collect()
        };
        Batch {
            len: positions.len(),
            channels: norm.mean.len(),
            size,
            images,
            targets: gather(&self.targets.values),
            masks: gather(&self.targets.masks),
        }
    }
}

/// A batch in host memory.
pub struct Batch {
    pub len: usize,
    channels: usize,
    size: usize,
    pub images: Vec<f32>,
    /// Per head, `[len, outputs]` row-major.
    pub targets: Vec<Vec<f32>>,
    pub masks: Vec<Vec<f32>>,
}

/// A batch on the device.
pub struct DeviceBatch {
    pub len: usize,
    pub images: Tensor,
    pub targets: Vec<Tensor>,
    pub masks: Vec<Tensor>,
}

impl Batch {
    /// Grey squares (`size * size` levels each) as a batch without targets, normalised exactly
    /// as [`Samples::batch`] normalises a shard's images without augmentation: what `cxr-train
    /// predict --image` feeds the model.
    pub fn from_pixels(pixels: &[&[u8]], size: usize, norm: &Normalisation) -> Batch {
        let per = norm.mean.len() * size * size;
        let mut images = vec![0f32; pixels.len() * per];
        images
            .par_chunks_mut(per)
            .zip(pixels)
            .for_each(|(out, grey)| prepare(grey, size, None, norm, out));
        Batch {
            len: pixels.len(),
            channels: norm.mean.len(),
            size,
            images,
            targets: Vec::new(),
            masks: Vec::new(),
        }
    }

    pub fn to_device(self, device: &Device) -> Result<DeviceBatch> {
        let n = self.len;
        let per_head = |list: Vec<Vec<f32>>| -> Result<Vec<Tensor>> {
            list.into_iter()
                .map(|v| {
                    let k = v.len() / n.max(1);
                    Ok(Tensor::from_vec(v, (n, k), device)?)
                })
                .collect()
        };
        Ok(DeviceBatch {
            len: n,
            images: Tensor::from_vec(
                self.images,
                (n, self.channels, self.size, self.size),
                device,
            )?,
            targets: per_head(self.targets)?,
            masks: per_head(self.masks)?,
        })
    }
}

/// The order of the `n` training samples in `epoch`: a Fisher-Yates shuffle seeded by
/// `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SampleRng::new(seed ^ 0x5348_5546_464c_4521, epoch, u64::MAX);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// How many batches the loader builds ahead of the training step.
pub const PREFETCH: usize = 4;

/// Training batches `first..batches` of `epoch` (batches of `batch_size`, the incomplete last
/// one dropped so that BatchNorm never sees a tiny batch), built on a background thread up to
/// [`PREFETCH`] ahead of the consumer.
pub fn prefetch_epoch(
    samples: Arc<Samples>,
    augment: AugmentConfig,
    norm: Normalisation,
    seed: u64,
    epoch: u64,
    batch_size: usize,
    first: usize,
) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(PREFETCH);
    std::thread::spawn(move || {
        let order = epoch_order(samples.len(), seed, epoch);
        for chunk in order.chunks_exact(batch_size).skip(first) {
            let batch = samples.batch(chunk, Some((&augment, seed, epoch)), &norm);
            if tx.send(batch).is_err() {
                return;
            }
        }
    });
    rx
}
