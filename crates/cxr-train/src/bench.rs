//! `cxr-train bench`: training and inference throughput of one architecture on random inputs.
//!
//! Issue #6 compares this crate's training speed with PyTorch's on the same machine, so the
//! measurement mirrors `bench/train_torch.py` step for step: a training step is a train-mode
//! forward, the masked-free BCE loss over 14 outputs, the backward and an Adam update; inference
//! is an eval-mode forward recording nothing for a backward (PyTorch's `torch.no_grad()`), with
//! the weights' packed and transformed forms kept between calls as prediction keeps them
//! ([`cxr_models::Inference`]). Both report the fastest of the timed steps (the machine is shared,
//! and the best step is the least disturbed one) as well as the mean, and the peak resident
//! memory of each phase (`VmHWM`, reset between phases through `/proc/self/clear_refs`); on a
//! GPU also the peak of the GPU memory the tensors took (the device's memory pool), as PyTorch's
//! `max_memory_allocated` counts it.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use cxr_models::{bce_with_logits, GpuMemory, HeadSpec, Mode, Model, ModelConfig, Precision};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{AugmentConfig, Normalisation, OptimizerConfig};
use crate::data::{epoch_order, Filter, Samples, ShardSet};
use crate::optim::Optimizer;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub arch: String,
    pub size: usize,
    pub batch: usize,
    pub in_channels: usize,
    /// Timed steps per phase.
    pub steps: usize,
    /// Untimed steps before them (allocator and caches warm up).
    pub warmup: usize,
    pub device: Device,
    pub precision: Precision,
}

/// One phase's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    /// Images per second of the fastest timed step.
    pub images_per_s: f64,
    /// Images per second over all timed steps.
    pub mean_images_per_s: f64,
    /// Peak resident memory of the process during the phase, MiB (None off Linux).
    pub peak_rss_mib: Option<f64>,
    /// Peak GPU memory of the tensors during the phase, MiB (None on the CPU).
    pub peak_gpu_mib: Option<f64>,
    /// Seconds per part of the fastest step (training: forward, backward, update).
    pub parts_s: Vec<(&'static str, f64)>,
}

/// Everything `bench` prints, also as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub framework: &'static str,
    pub model: String,
    pub size: usize,
    pub batch: usize,
    pub in_channels: usize,
    pub device: String,
    pub precision: String,
    pub threads: usize,
    pub steps: usize,
    pub train: PhaseReport,
    pub infer: PhaseReport,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |p: &PhaseReport| {
            let host = p
                .peak_rss_mib
                .map_or("n/a".into(), |m| format!("{m:.0} MiB"));
            match p.peak_gpu_mib {
                Some(gpu) => format!("{host} (GPU {gpu:.0} MiB)"),
                None => host,
            }
        };
        let parts: Vec<String> = self
            .train
            .parts_s
            .iter()
            .map(|(name, s)| format!("{name} {s:.2}s"))
            .collect();
        write!(
            f,
            "{} {} {}x{} batch {} on {} in {} ({} threads): train {:.2} images/s (mean {:.2}; {}), \
             peak {}; infer {:.2} images/s (mean {:.2}), peak {}",
            self.framework,
            self.model,
            self.size,
            self.size,
            self.batch,
            self.device,
            self.precision,
            self.threads,
            self.train.images_per_s,
            self.train.mean_images_per_s,
            parts.join(", "),
            mib(&self.train),
            self.infer.images_per_s,
            self.infer.mean_images_per_s,
            mib(&self.infer)
        )
    }
}

const OUTPUTS: usize = 14;

/// Runs both phases: training first (it allocates the most), then inference.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let config = ModelConfig {
        arch: opts.arch.parse()?,
        in_channels: opts.in_channels,
        heads: vec![HeadSpec::new("pathologies", OUTPUTS)],
    };
    let mut model = Model::new(config, &opts.device, 0)?;
    model.set_precision(opts.precision);
    let shape = (opts.batch, opts.in_channels, opts.size, opts.size);
    let x = Tensor::randn(0f32, 1f32, shape, &opts.device)?;
    let targets = Tensor::rand(0f32, 1f32, (opts.batch, OUTPUTS), &opts.device)?
        .ge(0.5)?
        .to_dtype(DType::F32)?;
    let adam = OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut optimizer = Optimizer::new(adam, model.trainable_vars());

    reset_peak_rss();
    let train = phase(opts, |parts| {
        let out = model.forward(&x, Mode::Train)?;
        let loss = bce_with_logits(out.primary(), &targets, None)?;
        parts.lap("forward")?;
        let grads = loss.backward()?;
        parts.lap("backward")?;
        optimizer.step(&grads, 1e-4)?;
        parts.lap("update")
    })?;
    reset_peak_rss();
    let inference = model.inference();
    let infer = phase(opts, |parts| {
        inference.infer(&x)?.primary().to_vec2::<f32>()?;
        parts.lap("forward")
    })?;
    Ok(BenchReport {
        framework: "candle",
        model: opts.arch.clone(),
        size: opts.size,
        batch: opts.batch,
        in_channels: opts.in_channels,
        device: device_name(&opts.device),
        precision: opts.precision.to_string(),
        threads: rayon::current_num_threads(),
        steps: opts.steps,
        train,
        infer,
    })
}

/// Times the parts of one step; each lap waits for the device to finish.
struct Laps<'a> {
    device: &'a Device,
    last: Instant,
    parts: Vec<(&'static str, f64)>,
}

impl Laps<'_> {
    fn lap(&mut self, name: &'static str) -> Result<()> {
        self.device.synchronize()?;
        let now = Instant::now();
        self.parts.push((name, (now - self.last).as_secs_f64()));
        self.last = now;
        Ok(())
    }

    fn total(&self) -> f64 {
        self.parts.iter().map(|(_, s)| s).sum()
    }
}

/// Warm-up, then `steps` timed calls of `step`.
fn phase(
    opts: &BenchOptions,
    mut step: impl FnMut(&mut Laps) -> Result<()>,
) -> Result<PhaseReport> {
    GpuMemory::reset_peak(&opts.device);
    let mut timed: Vec<Laps> = Vec::with_capacity(opts.steps);
    for i in 0..opts.warmup + opts.steps.max(1) {
        let mut laps = Laps {
            device: &opts.device,
            last: Instant::now(),
            parts: Vec::new(),
        };
        step(&mut laps)?;
        if i >= opts.warmup {
            timed.push(laps);
        }
    }
    let best = timed
        .iter()
        .min_by(|a, b| a.total().total_cmp(&b.total()))
        .expect("at least one timed step");
    let total: f64 = timed.iter().map(Laps::total).sum();
    Ok(PhaseReport {
        images_per_s: opts.batch as f64 / best.total(),
        mean_images_per_s: (opts.batch * timed.len()) as f64 / total,
        peak_rss_mib: peak_rss_mib(),
        peak_gpu_mib: cxr_models::gpu_memory(&opts.device).map(|m| m.peak_mib()),
        parts_s: best.parts.clone(),
    })
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Linux resets `VmHWM` to the current resident size when "5" is written to `clear_refs`;
/// elsewhere (or without permission) the peak simply covers the whole process so far.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Prints the report as one line of text or as JSON.
pub fn print(report: &BenchReport, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).context("serialising the report")?
        );
    } else {
        println!("{report}");
    }
    Ok(())
}

/// What `bench --loader` measures: batch assembly alone, from memory-mapped shards to an
/// augmented and normalised batch in host memory, as the training loop's loader builds it.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub shards: PathBuf,
    pub manifest: PathBuf,
    pub batch: usize,
    /// Timed batches (the loader cycles over the training images as epochs do).
    pub batches: usize,
    /// Untimed batches first (the shards' pages come in from disk).
    pub warmup: usize,
    pub in_channels: usize,
    pub augment: AugmentConfig,
}

/// The loader's speed.
#[derive(Clone, Debug, Serialize)]
pub struct LoaderReport {
    pub size: usize,
    pub batch: usize,
    pub batches: usize,
    /// Images built in the timed batches.
    pub images: usize,
    pub threads: usize,
    pub images_per_s: f64,
    pub images_per_s_per_thread: f64,
}

impl std::fmt::Display for LoaderReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loader {}x{} batch {} ({} batches, {} threads): {:.0} images/s, {:.0} per thread",
            self.size,
            self.size,
            self.batch,
            self.batches,
            self.threads,
            self.images_per_s,
            self.images_per_s_per_thread
        )
    }
}

/// Times [`Samples::batch`] over the training split's images.
pub fn loader(opts: &LoaderOptions) -> Result<LoaderReport> {
    let manifest = cxr_core::Manifest::read(&opts.manifest)?;
    let set = Arc::new(ShardSet::open(&opts.shards, &manifest)?);
    let filter = Filter {
        split: cxr_core::Split::Train,
        frontal_only: false,
        projections: Vec::new(),
    };
    let samples = Samples::select(set, &manifest, &filter, &[]);
    if samples.len() < opts.batch {
        bail!(
            "{} training images in {}, fewer than one batch of {}",
            samples.len(),
            opts.manifest.display(),
            opts.batch
        );
    }
    let norm = Normalisation::imagenet(opts.in_channels);
    let per_epoch = samples.len() / opts.batch;
    let count = opts.warmup + opts.batches;
    // Each epoch's order, shuffled before the clock starts: the loop times batches alone.
    let orders: Vec<Vec<usize>> = (0..count.div_ceil(per_epoch))
        .map(|epoch| epoch_order(samples.len(), 0, epoch as u64))
        .collect();
    let build = |i: usize| {
        let epoch = i / per_epoch;
        let chunk = &orders[epoch][(i % per_epoch) * opts.batch..][..opts.batch];
        let augment = Some((&opts.augment, 0, epoch as u64));
        samples.batch(chunk, augment, &norm).len
    };
    (0..opts.warmup).for_each(|i| {
        build(i);
    });
    let started = Instant::now();
    let images: usize = (opts.warmup..count).map(build).sum();
    let images_per_s = images as f64 / started.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    Ok(LoaderReport {
        size: samples.size(),
        batch: opts.batch,
        batches: opts.batches,
        images,
        threads,
        images_per_s,
        images_per_s_per_thread: images_per_s / threads as f64,
    })
}
