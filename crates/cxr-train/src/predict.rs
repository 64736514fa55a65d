//! Inference over a split and the predictions file `cxr-eval` reads.
//!
//! Validation during training and `cxr-train predict` share [`infer`], so the numbers logged
//! while training are the numbers a later evaluation of the same checkpoint reproduces.
//! Predictions hold `image_id` plus one column per model output: the observation name for
//! pathologies, `sex` (P(male)), `view` (P(PA)), all probabilities; and `age` in years.
//!
//! `cxr-train predict` over a large split (CheXpert's test slice is 22,000 images) keeps its
//! finished work: logits are written in chunks of whole batches to `OUT.partial/` as they are
//! computed, under a key (checkpoint, shards and image list hashed, batch size, precision), and
//! a re-run after `kill -9` scores only the chunks that are missing. Chunks are whole batches, so
//! every image goes through the model in the same batch as in an uninterrupted run and the
//! predictions file is byte for byte the same.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use cxr_core::predictions::Predictions;
use cxr_core::{atomic, hash::sha256_hex, LabelPolicy, Manifest, Observation, Split};
use cxr_models::{CheckpointMetadata, Model, ModelOutput, Precision};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Normalisation, Task};
use crate::data::{Filter, Samples, ShardSet};
use crate::labels::HeadTask;

/// The logits of every head for every sample, in sample order: `[head][sample * outputs + k]`.
pub fn infer(
    model: &Model,
    samples: &Samples,
    norm: &Normalisation,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    infer_range(model, samples, 0..samples.len(), norm, batch_size)
}

/// [`infer`] over the samples at `positions` only, in batches starting at its first.
fn infer_range(
    model: &Model,
    samples: &Samples,
    positions: std::ops::Range<usize>,
    norm: &Normalisation,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut logits: Vec<Vec<f32>> = vec![Vec::new(); samples.heads.len()];
    let positions: Vec<usize> = positions.collect();
    let inference = model.inference();
    for chunk in positions.chunks(batch_size.max(1)) {
        let batch = samples.batch(chunk, None, norm).to_device(model.device())?;
        let out = inference.infer(&batch.images)?;
        append_logits(&out, &samples.heads, &mut logits)?;
    }
    Ok(logits)
}

/// Appends a batch's logits of each of `heads` to `logits` (one list per head, as [`infer`]
/// returns them).
pub fn append_logits(out: &ModelOutput, heads: &[HeadTask], logits: &mut [Vec<f32>]) -> Result<()> {
    for (all, head) in logits.iter_mut().zip(heads) {
        let t = out
            .head(head.task.name())
            .with_context(|| format!("the model has no `{}` head", head.task.name()))?;
        all.extend(t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(())
}

/// Logits as `[n, outputs]` tensors on the CPU, one per head.
pub fn logit_tensors(samples: &Samples, logits: &[Vec<f32>]) -> Result<Vec<Tensor>> {
    samples
        .heads
        .iter()
        .zip(logits)
        .map(|(h, v)| {
            Ok(Tensor::from_slice(
                v,
                (samples.len(), h.outputs()),
                &Device::Cpu,
            )?)
        })
        .collect()
}

/// Predictions (probabilities; age in years) of the images `image_ids` from the logits of
/// `heads` (as [`infer`] returns them).
pub fn predictions(
    image_ids: &[String],
    heads: &[HeadTask],
    logits: &[Vec<f32>],
) -> Result<Predictions> {
    let mut tasks = Vec::new();
    let mut scores = Vec::new();
    for (head, v) in heads.iter().zip(logits) {
        let k = head.outputs();
        for (c, name) in head.columns.iter().enumerate() {
            tasks.push(name.clone());
            scores.push(
                (0..image_ids.len())
                    .map(|i| head.score(v[i * k + c]))
                    .collect(),
            );
        }
    }
    Ok(Predictions::new(image_ids.to_vec(), tasks, scores)?)
}

/// A checkpoint's model (in `precision`, on `device`), its metadata and the input
/// normalisation it was trained with (ImageNet's for checkpoints that do not record one).
pub fn load_checkpoint(
    path: &Path,
    device: &Device,
    precision: Precision,
) -> Result<(Model, CheckpointMetadata, Normalisation)> {
    let (mut model, meta) = Model::from_checkpoint(path, device)
        .with_context(|| format!("cannot load the checkpoint {}", path.display()))?;
    model.set_precision(precision);
    let norm = match meta.training_config.get("normalisation") {
        Some(json) => {
            serde_json::from_str(json).context("bad `normalisation` in the checkpoint")?
        }
        None => Normalisation::imagenet(model.config().in_channels),
    };
    Ok((model, meta, norm))
}

/// The head tasks a checkpoint's heads stand for.
pub fn heads_of(model: &Model) -> Result<Vec<HeadTask>> {
    model
        .config()
        .heads
        .iter()
        .map(|spec| {
            let task = Task::parse(&spec.name)
                .with_context(|| format!("head `{}` is not a cxr-train task", spec.name))?;
            let observations = spec
                .classes
                .iter()
                .map(|c| Observation::parse(c))
                .collect::<cxr_core::Result<Vec<_>>>()?;
            Ok(HeadTask::new(
                task,
                1.0,
                &observations,
                &LabelPolicy::default(),
            ))
        })
        .collect()
}

/// What `cxr-train predict` needs.
#[derive(Debug)]
pub struct PredictOptions<'a> {
    pub checkpoint: &'a Path,
    pub shards: &'a Path,
    pub manifest: &'a Path,
    pub split: Split,
    pub frontal_only: bool,
    pub out: &'a Path,
    pub batch_size: usize,
    /// Images per chunk kept in `OUT.partial/` (rounded up to whole batches).
    pub chunk_images: usize,
    pub device: Device,
    pub precision: Precision,
}

/// Score one split with a checkpoint and write the predictions file; returns the image count.
pub fn run(options: &PredictOptions) -> Result<usize> {
    let (model, _, norm) = load_checkpoint(options.checkpoint, &options.device, options.precision)?;
    let manifest = Manifest::read(options.manifest)?;
    let set = Arc::new(ShardSet::open(options.shards, &manifest)?);
    let filter = Filter {
        split: options.split,
        frontal_only: options.frontal_only,
        projections: Vec::new(),
    };
    let heads = heads_of(&model)?;
    let samples = Samples::select(set, &manifest, &filter, &heads);
    if samples.is_empty() {
        anyhow::bail!("no images of split `{}` in the shards", options.split);
    }
    let partial = Partial::open(options, &samples)?;
    let logits = partial.infer(&model, &samples, &norm)?;
    predictions(&samples.image_ids, &samples.heads, &logits)?.write(options.out)?;
    partial
        .remove()
        .with_context(|| format!("cannot remove {}", partial.dir.display()))?;
    Ok(samples.len())
}

/// The chunks of a predict run in progress: `OUT.partial/key.json` says what they were computed
/// from, `chunk-NNNNN.f32` holds one chunk's logits (each head's in turn, little-endian f32).
struct Partial {
    dir: PathBuf,
    batch_size: usize,
    chunk: usize,
}

impl Partial {
    /// The partial directory for this run: kept if its key matches, emptied if not.
    fn open(options: &PredictOptions, samples: &Samples) -> Result<Partial> {
        let mut name = options.out.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let dir = options.out.with_file_name(name);
        let batch_size = options.batch_size.max(1);
        let partial = Partial {
            dir,
            batch_size,
            chunk: options.chunk_images.max(1).div_ceil(batch_size) * batch_size,
        };
        let key = partial.key(options, samples)?;
        let key_path = partial.dir.join("key.json");
        let kept = std::fs::read(&key_path).is_ok_and(|found| found == key.as_bytes());
        if !kept {
            if partial.dir.exists() {
                eprintln!(
                    "{}: made for another checkpoint, shard set, split or batch size; starting over",
                    partial.dir.display()
                );
                partial.remove()?;
            }
            atomic::write_bytes(&key_path, key.as_bytes())?;
        }
        Ok(partial)
    }

    /// What the chunks depend on: every input that changes a logit or which image it belongs to.
    fn key(&self, options: &PredictOptions, samples: &Samples) -> Result<String> {
        let checkpoint = std::fs::read(options.checkpoint)
            .with_context(|| format!("cannot read {}", options.checkpoint.display()))?;
        let index_path = options.shards.join(cxr_core::shard::INDEX_FILE);
        let index = std::fs::read(&index_path)
            .with_context(|| format!("cannot read {}", index_path.display()))?;
        Ok(serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint_sha256": sha256_hex(&checkpoint),
            "shard_index_sha256": sha256_hex(&index),
            "image_ids_sha256": sha256_hex(samples.image_ids.join("\n").as_bytes()),
            "batch_size": self.batch_size,
            "chunk": self.chunk,
            "precision": options.precision.to_string(),
            "device": format!("{:?}", options.device.location()),
        }))?)
    }

    /// Every head's logits, from finished chunks where there are any and the model elsewhere.
    fn infer(
        &self,
        model: &Model,
        samples: &Samples,
        norm: &Normalisation,
    ) -> Result<Vec<Vec<f32>>> {
        let widths: Vec<usize> = samples.heads.iter().map(HeadTask::outputs).collect();
        let mut logits: Vec<Vec<f32>> = vec![Vec::new(); widths.len()];
        let chunks = samples.len().div_ceil(self.chunk);
        let mut reused = 0;
        for c in 0..chunks {
            let range = c * self.chunk..((c + 1) * self.chunk).min(samples.len());
            let path = self.dir.join(format!("chunk-{c:05}.f32"));
            let expected = range.len() * widths.iter().sum::<usize>() * 4;
            let chunk = match std::fs::read(&path) {
                Ok(bytes) if bytes.len() == expected => {
                    reused += 1;
                    split_heads(&bytes, range.len(), &widths)
                }
                _ => {
                    let chunk = infer_range(model, samples, range, norm, self.batch_size)?;
                    let bytes: Vec<u8> = chunk
                        .iter()
                        .flat_map(|head| head.iter().flat_map(|v| v.to_le_bytes()))
                        .collect();
                    atomic::write_bytes(&path, &bytes)?;
                    chunk
                }
            };
            for (all, part) in logits.iter_mut().zip(chunk) {
                all.extend(part);
            }
        }
        if reused > 0 {
            eprintln!(
                "resumed: {reused} of {chunks} chunks were already scored in {}",
                self.dir.display()
            );
        }
        Ok(logits)
    }

    fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A chunk file's bytes back into per-head logits.
fn split_heads(bytes: &[u8], images: usize, widths: &[usize]) -> Vec<Vec<f32>> {
    let mut floats = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    widths
        .iter()
        .map(|w| floats.by_ref().take(images * w).collect())
        .collect()
}
