//! Inference over a split and the predictions file `cxr-eval` reads.
//!
//! Validation during training and `cxr-train predict` share [`infer`], so the numbers logged
//! while training are the numbers a later evaluation of the same checkpoint reproduces.
//! Predictions hold `image_id` plus one column per model output: the observation name for
//! pathologies, `sex` (P(male)), `view` (P(PA)), all probabilities; and `age` in years.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use cxr_core::predictions::Predictions;
use cxr_core::{LabelPolicy, Manifest, Observation, Split};
use cxr_models::{Model, Precision};
use std::path::Path;
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
    let mut logits: Vec<Vec<f32>> = vec![Vec::new(); samples.heads.len()];
    let positions: Vec<usize> = (0..samples.len()).collect();
    let inference = model.inference();
    for chunk in positions.chunks(batch_size.max(1)) {
        let batch = samples.batch(chunk, None, norm).to_device(model.device())?;
        let out = inference.infer(&batch.images)?;
        for (h, head) in samples.heads.iter().enumerate() {
            let t = out
                .head(head.task.name())
                .with_context(|| format!("the model has no `{}` head", head.task.name()))?;
            logits[h].extend(t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(logits)
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

/// Predictions (probabilities; age in years) from logits.
pub fn predictions(samples: &Samples, logits: &[Vec<f32>]) -> Result<Predictions> {
    let mut tasks = Vec::new();
    let mut scores = Vec::new();
    for (head, v) in samples.heads.iter().zip(logits) {
        let k = head.outputs();
        for (c, name) in head.columns.iter().enumerate() {
            tasks.push(name.clone());
            scores.push(
                (0..samples.len())
                    .map(|i| head.score(v[i * k + c]))
                    .collect(),
            );
        }
    }
    Ok(Predictions::new(samples.image_ids.clone(), tasks, scores)?)
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
pub struct PredictOptions<'a> {
    pub checkpoint: &'a Path,
    pub shards: &'a Path,
    pub manifest: &'a Path,
    pub split: Split,
    pub frontal_only: bool,
    pub out: &'a Path,
    pub batch_size: usize,
    pub device: Device,
    pub precision: Precision,
}

/// Score one split with a checkpoint and write the predictions file; returns the image count.
pub fn run(options: &PredictOptions) -> Result<usize> {
    let (mut model, meta) = Model::from_checkpoint(options.checkpoint, &options.device)
        .with_context(|| {
            format!(
                "cannot load the checkpoint {}",
                options.checkpoint.display()
            )
        })?;
    model.set_precision(options.precision);
    let norm = match meta.training_config.get("normalisation") {
        Some(json) => {
            serde_json::from_str(json).context("bad `normalisation` in the checkpoint")?
        }
        None => Normalisation::imagenet(model.config().in_channels),
    };
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
    let logits = infer(&model, &samples, &norm, options.batch_size)?;
    predictions(&samples, &logits)?.write(options.out)?;
    Ok(samples.len())
}
