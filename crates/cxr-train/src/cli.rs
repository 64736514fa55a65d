//! The command line of `cxr-train`: its flags, and how they become what the library runs
//! ([`TrainConfig`] and [`FitOptions`] for `fit`, [`PretrainConfig`] for `pretrain`, and the
//! options of `predict`, `bench` and `gpu-check`).
//!
//! It is in the library rather than the binary so that the resolution is tested as the rest
//! is: the defaults, the specs of --crop, --schedule, --init and --aux, the rules relating one
//! option to another, and errors that name the flag to change. Each option's own range is its
//! value parser's (`numeric`), checked as the line is parsed. The binary parses [`Cli`], runs
//! what its command resolves to, and prints.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cxr_core::shard::Resize;
use cxr_core::{paths, Manifest, Split};
use cxr_models::{Architecture, Precision};
use std::path::PathBuf;

use crate::barlow::{self, Positives, PretrainConfig, PretrainSummary};
use crate::bench::{BenchOptions, LoaderOptions};
use crate::checkpoint::{self, Keep};
use crate::config::{
    parse_aux, AugmentConfig, CropConfig, Init, LossConfig, Normalisation, OptimizerConfig,
    ScheduleConfig, Select, Task, TrainConfig,
};
use crate::gpu_check::{self, GpuCheckOptions};
use crate::image_predict::{self, ImagePredictOptions};
use crate::input::InputFlags;
use crate::numeric::{
    at_least_one_u64, at_least_one_usize, below_one_f64, decay_factor_f64, degrees_f64,
    divisor_f64, finite_f32, in_channels, non_negative_f64, positive_f32, positive_f64, unit_f64,
};
use crate::predict::PredictOptions;
use crate::store;
use crate::trainer::{self, FitOptions, FitSummary};

const FIT_EXAMPLES: &str = "\
Examples:
  # DenseNet121 on CheXpert's 14 observations from ImageNet weights, U-Ones, cosine schedule
  cxr-train fit --manifest chexpert.parquet --shards shards/chexpert-224 --run-dir runs/dn121-imnet \\
      --arch densenet121 --init imagenet:densenet121.pth --policy u-ones --lr 1e-4 --weight-decay 1e-6 \\
      --schedule cosine --warmup-steps 500 --epochs 3 --batch-size 32 --frontal-only --hflip --crop resized:0.8

  # In-domain pretraining on NIH: predict PA vs AP, then fine-tune on CheXpert from that backbone
  cxr-train fit --manifest nih.parquet --shards shards/nih-128 --run-dir runs/view --task view \\
      --arch resnet18 --lr 1e-3 --epochs 5
  cxr-train fit ... --init checkpoint:runs/view/best.safetensors

  # Pathologies with auxiliary sex/age heads; continue after a crash or pre-emption
  cxr-train fit ... --aux sex=0.1,age=0.1 --resume

  # Experiments sharing a baseline: the same settings train once in the store, and each
  # --run-dir becomes a link to that run (what the pipelines do)
  cxr-train fit ... --run-dir policy/runs/u-ignore__s0 --run-store run-store
  cxr-train fit ... --run-dir aux/runs/no-aux__s0 --run-store run-store

  # Fine-tune a Barlow Twins backbone: new heads, backbone frozen for the first epoch
  cxr-train fit ... --init checkpoint:runs/barlow/best.safetensors --freeze-epochs 1

  # Deep AUC Maximization (LibAUC's recipe): AUC-margin loss with PESG, from a BCE run's backbone
  cxr-train fit ... --init checkpoint:runs/bce/best.safetensors --loss aucm --margin 1.0 \\
      --optimizer pesg --lr 0.1 --epoch-decay 2e-3 --weight-decay 1e-5 --pesg-decay-every 1

--init checkpoint:PATH takes the backbone only: the checkpoint's heads are dropped and the run's
heads start from their initialisation, whatever their shapes.

Inputs are grey images from the shards, scaled to 0..1 and normalised as (x - mean) / std with
ImageNet's grey statistics (0.449 / 0.226), or repeated to RGB with ImageNet's per-channel
statistics for --in-channels 3. Age is regressed as age / 100 with a smooth L1 loss.

The run directory receives config.json, metrics.jsonl (train and validation records),
best.safetensors (best validation mean AUC, or loss with --select loss), last.safetensors and
resume state while training, and valid_predictions.parquet at the end. A finished run keeps
best.safetensors only (--keep last: last.safetensors too; --keep all: the resume state too). Runs are reproducible: the same seed
gives the same numbers on the CPU with the same thread count, also across --resume.";

const PREDICT_EXAMPLES: &str = "\
Examples:
  cxr-train predict --checkpoint runs/view/best.safetensors --shards shards/nih-128 \\
      --manifest nih.parquet --split test --out view-test.parquet
  cxr-eval score view-test.parquet --manifest nih.parquet

  # Single files, no manifest or shards; Grad-CAM heatmaps of Edema beside the predictions
  cxr-train predict --checkpoint runs/dn121/best.safetensors --image a.png b.jpg c.dcm \\
      --cam Edema --out single/preds.parquet

Columns: image_id, then one per output: observation names (probabilities), sex (P(male)),
view (P(PA)), age (years).

With --image, each file is decoded and resized exactly as cxr-preprocess made the shards the
checkpoint was trained on (found through its run configuration; --size, --resize,
--full-decode and --dicom-intensity override, and --size is needed where those shards cannot be
read), and the probabilities are also printed as a table. Grad-CAM (--cam) follows the
pytorch-grad-cam library's GradCAM on the map the heads pool (DenseNet: the features after the
final ReLU; ResNet: layer4); the overlay is on the input square the model saw.";

#[derive(Parser)]
#[command(
    name = "cxr-train",
    version,
    about = "Train chest X-ray classifiers from shards and a manifest"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// CPU threads for training, inference and data loading [default: $RAYON_NUM_THREADS, else
    /// one per core]. On the CPU, runs with the same seed and thread count give the same numbers.
    #[arg(long, global = true, value_name = "N", value_parser = at_least_one_usize)]
    pub threads: Option<usize>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a model; everything goes to --run-dir.
    #[command(after_help = FIT_EXAMPLES)]
    Fit(Box<FitArgs>),
    /// Write predictions for one split with a trained checkpoint.
    #[command(after_help = PREDICT_EXAMPLES)]
    Predict(PredictArgs),
    /// Self-supervised Barlow Twins pretraining of a backbone (no labels).
    #[command(after_help = PRETRAIN_EXAMPLES)]
    Pretrain(Box<PretrainArgs>),
    /// Training and inference images/s and peak memory on random inputs (see bench/train.sh).
    Bench(BenchArgs),
    /// The models on a GPU against the same models on the CPU: differences of logits, loss,
    /// gradients and running statistics over a few training steps.
    #[command(after_help = GPU_CHECK_EXAMPLES)]
    GpuCheck(GpuCheckArgs),
}

const GPU_CHECK_EXAMPLES: &str = "\
The CPU's numbers are pinned to PyTorch by the golden tests, so agreement with the CPU is
agreement with PyTorch; this travels in the binary to a GPU machine that has no Rust, no test
binaries and no golden files (tools/gpu-check.sh runs it). Each step starts both sides from the
same weights; errors are relative L2 norms per tensor (forward within 1e-3, gradients within
5e-2; the gpu_check module of cxr-train says why), and the exit status is 1 when anything
judged is outside.

Examples:
  cxr-train gpu-check --device cuda:0                     # TF32 off, every default model
  cxr-train gpu-check --device cuda:0 --precision bf16    # bf16 against the CPU's emulation
  cxr-train gpu-check --device cpu --models tiny_densenet # rehearsal: candle's ops vs the kernels";

#[derive(Args)]
pub struct GpuCheckArgs {
    /// The device under test: cuda, cuda:N, or cpu (then candle's own ops, the path CUDA runs,
    /// are checked against the CPU kernels).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Models, comma-separated: tiny_densenet, tiny_resnet_basic, tiny_resnet_bottleneck (the
    /// golden files' small models) or any --arch name.
    #[arg(long, value_delimiter = ',', default_values_t = gpu_check::default_models())]
    models: Vec<String>,
    /// Input height and width (64: 2x2 feature maps at the end of the full-size models).
    #[arg(long, default_value_t = 64, value_parser = at_least_one_usize)]
    size: usize,
    #[arg(long, default_value_t = 8, value_parser = at_least_one_usize)]
    batch: usize,
    /// Training steps compared (plain SGD between them), then one eval forward.
    #[arg(long, default_value_t = 3, value_parser = at_least_one_usize)]
    steps: usize,
    #[arg(long, default_value_t = 0.01, value_parser = positive_f64)]
    lr: f64,
    /// Let cuDNN use TF32 (then the numbers are printed, not judged).
    #[arg(long)]
    tf32: bool,
    /// f32, or bf16 on both sides (the CPU emulating it on candle's ops; printed, not judged).
    #[arg(long, default_value = "f32")]
    precision: String,
}

#[derive(Args)]
pub struct BenchArgs {
    /// densenet121/169/201 or resnet18/34/50/101/152.
    #[arg(long, default_value = "densenet121")]
    model: String,
    /// Input height and width.
    #[arg(long, default_value_t = 224, value_parser = at_least_one_usize)]
    size: usize,
    #[arg(long, default_value_t = 8, value_parser = at_least_one_usize)]
    batch: usize,
    #[arg(long, default_value_t = 1, value_parser = in_channels)]
    in_channels: usize,
    /// Timed steps per phase (the fastest one is reported, and the mean).
    #[arg(long, default_value_t = 5, value_parser = at_least_one_usize)]
    steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// cpu, cuda or cuda:N (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, or bf16 (CUDA: convolutions and matrix products in bf16, the rest in f32).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Time the data loader instead of the model: memory-mapped shards to augmented, normalised
    /// batches (--batch images, --steps batches after --warmup), with the pipelines' --crop and
    /// --hflip. Needs --shards and --manifest.
    #[arg(long, requires_all = ["shards", "manifest"])]
    loader: bool,
    /// Shard directory (for --loader).
    #[arg(long)]
    shards: Option<PathBuf>,
    /// Manifest of the shards (for --loader).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The loader's crop (for --loader): none, pad:N or resized:MIN_SCALE.
    #[arg(long, default_value = "resized:0.8")]
    crop: String,
    /// The loader's horizontal flips (for --loader).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    hflip: bool,
    /// The loader's rotation in degrees (for --loader).
    #[arg(long, default_value_t = 0.0, value_parser = degrees_f64)]
    rotate: f64,
    /// One JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerName {
    Adam,
    Adamw,
    Sgd,
    /// LibAUC's PESG, for --loss aucm.
    Pesg,
}

#[derive(Clone, Copy, ValueEnum)]
enum LossName {
    /// Binary cross-entropy.
    Bce,
    /// AUC-margin loss (Deep AUC Maximization); needs --optimizer pesg.
    Aucm,
}

const PRETRAIN_EXAMPLES: &str = "\
Examples:
  # Barlow Twins on NIH as in-domain studies run it: positives are two images of one patient;
  # keep the last weights, as the reference does; then fine-tune from them
  cxr-train pretrain --manifest nih.parquet --shards shards/nih-224 --run-dir runs/bt \\
      --arch resnet50 --positives patient --projector 8192,8192,8192 --lambda 0.0051 \\
      --batch-size 256 --epochs 100 --keep last
  cxr-train fit --manifest chexpert.parquet --shards shards/chexpert-224 --run-dir runs/bt-ft \\
      --arch resnet50 --init checkpoint:runs/bt/last.safetensors

  # Positives from two augmentations of one image (the Barlow Twins paper on ImageNet)
  cxr-train pretrain ... --positives augment

  # The paper's optimiser: LARS, learning rate 0.2 x batch / 256, cosine after 10 warm-up
  # epochs (NIH's 112,120 images split 0.8 for training: 350 steps of 256 per epoch)
  cxr-train pretrain ... --batch-size 256 --optimizer lars --lr 0.2 --weight-decay 1.5e-6 \\
      --schedule cosine --warmup-steps 3500

The reference recipe (Zbontar et al. 2021) is LARS, batch 2048, an 8192-8192-8192 projector,
lambda 0.0051 and 1000 epochs; pipelines/pretraining.mk uses it on real data except batch and
epochs, and says so in its report. Study and patient positives are refused when no training
image has a partner (NIH has one image per study: use patient).

Augmentations, drawn independently for each view: cxr-preprocess's square (the whole film,
padded, by default), then --crop (default resized:0.5, a random resized crop; none keeps the
square as it is), --hflip (on; --hflip false), --brightness/--contrast (0.4) and --rotate (10
degrees). The run directory is laid out as fit's; best.safetensors has the lowest validation
Barlow Twins loss, last.safetensors (with --keep last) the last weights; both hold the backbone
with a placeholder head that fine-tuning replaces.";

#[derive(Clone, Copy, ValueEnum)]
enum PretrainOptimizer {
    /// Adam with L2 weight decay.
    Adam,
    /// LARS as the Barlow Twins paper trains with it: momentum 0.9, trust coefficient 0.001;
    /// biases and BatchNorm parameters at 0.024 x --lr, without weight decay or scaling.
    Lars,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleName {
    Constant,
    Step,
    Cosine,
}

/// What a training run reads and where it writes (`fit` and `pretrain`).
#[derive(Args)]
struct RunInputs {
    /// Manifest written by cxr-index.
    #[arg(long)]
    manifest: PathBuf,
    /// Shard directory written by cxr-preprocess from that manifest.
    #[arg(long)]
    shards: PathBuf,
    /// Where config, metrics, checkpoints and predictions go.
    #[arg(long)]
    run_dir: PathBuf,
    /// densenet121/169/201 or resnet18/34/50/101/152.
    #[arg(long, default_value = "densenet121")]
    arch: String,
    /// 1 (grey) or 3 (grey repeated to RGB).
    #[arg(long, default_value_t = 1, value_parser = in_channels)]
    in_channels: usize,
    /// f32, or bf16 on CUDA: convolutions and matrix products in bf16 with f32 accumulation;
    /// BatchNorm statistics, losses, the optimiser and the master weights in f32.
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// How a run starts, stops and where it computes (`fit` and `pretrain`).
#[derive(Args)]
struct RunControl {
    /// Continue the run in --run-dir from its last checkpoint (starts it if there is none).
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in total, with a checkpoint (resume later with --resume).
    #[arg(long, value_parser = at_least_one_u64)]
    max_steps: Option<u64>,
    /// cpu, cuda or cuda:N (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What a finished run keeps (its resume state is three times the model; only an
    /// interrupted run needs it)
    #[arg(long, value_enum, default_value_t)]
    keep: Keep,
}

/// Which manifest rows train and validate.
#[derive(Args)]
struct Subset {
    /// The manifest split trained on.
    #[arg(long, default_value = "train")]
    train_split: String,
    /// The manifest split validated on.
    #[arg(long, default_value = "valid")]
    valid_split: String,
    /// Keep frontal images only.
    #[arg(long)]
    frontal_only: bool,
    /// Keep these projections only, e.g. PA or PA,AP.
    #[arg(long, value_delimiter = ',')]
    projection: Vec<String>,
}

#[derive(Args)]
pub struct FitArgs {
    #[command(flatten)]
    run: RunInputs,
    /// pathologies, sex, age or view (PA vs AP).
    #[arg(long, default_value = "pathologies")]
    task: String,
    /// chexpert14, nih14, competition5 or a comma list [default: by dataset]
    #[arg(long)]
    pathologies: Option<String>,
    /// Uncertainty policy, optionally per observation: u-zeros,Edema=u-ones
    #[arg(long, default_value = "u-ignore")]
    policy: String,
    /// Blank (not mentioned) labels: negative or ignore.
    #[arg(long, default_value = "negative")]
    blank: String,
    /// Auxiliary heads and loss weights, e.g. sex=0.1,age=0.1,view=0.1
    #[arg(long, default_value = "")]
    aux: String,
    #[command(flatten)]
    subset: Subset,
    /// random, imagenet:PATH (.pth or safetensors) or checkpoint:PATH (backbone of a cxr run).
    #[arg(long, default_value = "random")]
    init: String,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerName,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4, value_parser = positive_f64)]
    lr: f64,
    /// L2 for adam and sgd (added to the gradient, as PyTorch does), decoupled for adamw.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f64)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.9, value_parser = below_one_f64)]
    beta1: f64,
    #[arg(long, default_value_t = 0.999, value_parser = below_one_f64)]
    beta2: f64,
    #[arg(long, default_value_t = 1e-8, value_parser = positive_f64)]
    eps: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_parser = below_one_f64)]
    momentum: f64,
    /// Nesterov momentum for SGD.
    #[arg(long)]
    nesterov: bool,
    #[arg(long, value_enum, default_value = "constant")]
    schedule: ScheduleName,
    /// cosine: linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// cosine: final learning rate.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f64)]
    min_lr: f64,
    /// step: decay every this many steps.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one_u64)]
    step_every: u64,
    /// step: decay factor.
    #[arg(long, default_value_t = 0.1, value_parser = decay_factor_f64)]
    gamma: f64,
    #[arg(long, default_value_t = 16, value_parser = at_least_one_usize)]
    batch_size: usize,
    #[arg(long, default_value_t = 3, value_parser = at_least_one_usize)]
    epochs: usize,
    /// Clip gradients to this global L2 norm.
    #[arg(long, value_parser = positive_f64)]
    clip_grad: Option<f64>,
    /// none, pad:N (shift up to N px) or resized:MIN_SCALE (random resized crop).
    #[arg(long, default_value = "none")]
    crop: String,
    /// Random horizontal flips.
    #[arg(long)]
    hflip: bool,
    /// Random rotation up to this many degrees.
    #[arg(long, default_value_t = 0.0, value_parser = degrees_f64)]
    rotate: f64,
    /// Brightness jitter (0..1 scale), e.g. 0.1.
    #[arg(long, default_value_t = 0.0, value_parser = unit_f64)]
    brightness: f64,
    /// Contrast jitter, e.g. 0.1 for factors in [0.9, 1.1].
    #[arg(long, default_value_t = 0.0, value_parser = unit_f64)]
    contrast: f64,
    /// Normalisation means, one per input channel [default: ImageNet's].
    #[arg(long, value_delimiter = ',', value_parser = finite_f32)]
    mean: Vec<f32>,
    /// Normalisation standard deviations [default: ImageNet's].
    #[arg(long, value_delimiter = ',', value_parser = positive_f32)]
    std: Vec<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validate every N steps too (0: only at epoch ends).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Log the training loss every N steps.
    #[arg(long, default_value_t = 50, value_parser = at_least_one_u64)]
    log_every: u64,
    /// Best checkpoint by auc (mean of the main head) or loss.
    #[arg(long, default_value = "auc")]
    select: String,
    #[command(flatten)]
    control: RunControl,
    /// Train in DIR/KEY (KEY: a hash of every setting but --run-dir) and make --run-dir a link
    /// to it, so that experiments asking for the same run share one (implies --resume).
    #[arg(long, value_name = "DIR")]
    run_store: Option<PathBuf>,
    /// Freeze the backbone (weights and BatchNorm statistics) for this many first epochs.
    #[arg(long, default_value_t = 0)]
    freeze_epochs: usize,
    /// Loss of the primary head.
    #[arg(long, value_enum, default_value = "bce")]
    loss: LossName,
    /// AUC-margin loss: the margin m.
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    margin: f64,
    /// PESG: weight of the pull towards the reference point (LibAUC's epoch_decay).
    #[arg(long, default_value_t = 2e-3, value_parser = non_negative_f64)]
    epoch_decay: f64,
    /// PESG: every this many epochs divide the learning rate and move the reference point (0: never).
    #[arg(long, default_value_t = 1)]
    pesg_decay_every: u64,
    /// PESG: the learning-rate divisor.
    #[arg(long, default_value_t = 10.0, value_parser = divisor_f64)]
    pesg_decay_factor: f64,
    /// PESG: clip each gradient entry to +-this.
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    clip_value: f64,
}

#[derive(Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    run: RunInputs,
    #[command(flatten)]
    subset: Subset,
    /// random, imagenet:PATH or checkpoint:PATH.
    #[arg(long, default_value = "random")]
    init: String,
    /// Second view: augment (same image), study or patient (another image of it).
    #[arg(long, default_value = "augment")]
    positives: String,
    /// Projector widths; the last is the embedding size.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2048,2048,2048",
        value_parser = at_least_one_usize
    )]
    projector: Vec<usize>,
    /// Weight of the off-diagonal (redundancy reduction) term.
    #[arg(long, default_value_t = 5e-3, value_parser = non_negative_f64)]
    lambda: f64,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: PretrainOptimizer,
    /// Peak learning rate (with lars, of the weights: the paper's 0.2 x batch / 256).
    #[arg(long, default_value_t = 1e-3, value_parser = positive_f64)]
    lr: f64,
    /// L2 added to the gradient as PyTorch's Adam does, or LARS's decay of the weights (the
    /// paper: 1.5e-6).
    #[arg(long, default_value_t = 1e-6, value_parser = non_negative_f64)]
    weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleName,
    /// cosine: linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Images per step; each brings two views (Barlow Twins wants large batches).
    #[arg(long, default_value_t = 32, value_parser = at_least_one_usize)]
    batch_size: usize,
    /// Passes over the training split.
    #[arg(long, default_value_t = 10, value_parser = at_least_one_usize)]
    epochs: usize,
    /// none, pad:N or resized:MIN_SCALE.
    #[arg(long, default_value = "resized:0.5")]
    crop: String,
    /// Random horizontal flips (true or false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    hflip: bool,
    /// Random rotation up to this many degrees, per view.
    #[arg(long, default_value_t = 10.0, value_parser = degrees_f64)]
    rotate: f64,
    /// Brightness jitter (0..1 scale), per view.
    #[arg(long, default_value_t = 0.4, value_parser = unit_f64)]
    brightness: f64,
    /// Contrast jitter, e.g. 0.4 for factors in [0.6, 1.4], per view.
    #[arg(long, default_value_t = 0.4, value_parser = unit_f64)]
    contrast: f64,
    /// Seeds initialisation, order, partners and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Log the training loss every N steps.
    #[arg(long, default_value_t = 10, value_parser = at_least_one_u64)]
    log_every: u64,
    #[command(flatten)]
    control: RunControl,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Shard directory of the images to score (with --manifest and --split).
    #[arg(long, required_unless_present = "image", conflicts_with = "image")]
    shards: Option<PathBuf>,
    /// Manifest of the shards.
    #[arg(long, required_unless_present = "image", conflicts_with = "image")]
    manifest: Option<PathBuf>,
    /// train, valid, test (the held-out patients of the training file) or official (the
    /// dataset's own evaluation set: CheXpert's valid.csv).
    #[arg(long, default_value = "test", conflicts_with = "image")]
    split: String,
    /// Keep frontal images only.
    #[arg(long, conflicts_with = "image")]
    frontal_only: bool,
    /// Image files (PNG, JPEG, DICOM) to score instead of shards: each prepared as
    /// cxr-preprocess made the shards the checkpoint was trained on (see --size), image ids are
    /// the paths as given.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    image: Vec<PathBuf>,
    /// Predictions file (Parquet). While it is computed from shards, finished chunks of images
    /// are kept in OUT.partial/, so a re-run after an interruption scores only what is missing.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 32, value_parser = at_least_one_usize)]
    batch_size: usize,
    /// Images per kept chunk (rounded up to whole batches).
    #[arg(long, default_value_t = 2048, value_parser = at_least_one_usize)]
    chunk: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, or bf16 on CUDA (as the run was trained, or not: the checkpoint is f32 either way).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// With --image: side of the input square [default: the training shards' (their
    /// index.json, found through the checkpoint's run configuration)].
    #[arg(long, requires = "image", conflicts_with = "shards", value_parser = image_side)]
    size: Option<usize>,
    /// With --image: pad or centre-crop [default: the training shards'].
    #[arg(long, requires = "image", conflicts_with = "shards", value_enum)]
    resize: Option<ResizeArg>,
    /// With --image: decode every JPEG pixel (--full-decode false: the scaled decode)
    /// [default: as the training shards were made].
    #[arg(long, requires = "image",
        conflicts_with = "shards", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    full_decode: Option<bool>,
    /// With --image: DICOM grey levels, window (the file's VOI LUT or window) or full-range
    /// [default: as the training shards were made].
    #[arg(long, requires = "image", conflicts_with = "shards")]
    dicom_intensity: Option<String>,
    /// With --image: Grad-CAM heatmaps of this output, a predictions column (Edema, Pleural
    /// Effusion, sex, age, view: whatever the checkpoint has), per image STEM.OUTPUT.png (an
    /// overlay on the input square) and STEM.OUTPUT.safetensors (the raw and upsampled maps).
    #[arg(
        long,
        requires = "image",
        conflicts_with = "shards",
        value_name = "OUTPUT"
    )]
    cam: Option<String>,
    /// Folder of the heatmaps [default: the folder of --out].
    #[arg(long, requires = "cam", value_name = "DIR")]
    cam_dir: Option<PathBuf>,
}

/// `--resize` of `predict --image`: how a film becomes a square.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResizeArg {
    Pad,
    CentreCrop,
}

/// `--size` of `predict --image`, within the sides cxr-preprocess makes.
fn image_side(text: &str) -> std::result::Result<usize, String> {
    let size = text
        .parse()
        .map_err(|e| format!("`{text}` is not a number of pixels: {e}"))?;
    cxr_image::Target::check_size(size)?;
    Ok(size)
}

/// A `fit` command resolved: the run, how to run it, and the run store it trains in, if any.
#[derive(Debug)]
pub struct FitRun {
    pub config: TrainConfig,
    pub options: FitOptions,
    pub run_store: Option<PathBuf>,
}

impl FitRun {
    /// Trains the run, in the run store when there is one.
    pub fn run(&self) -> Result<FitSummary> {
        match &self.run_store {
            Some(store) => store::fit(&self.config, &self.options, store),
            None => trainer::fit(&self.config, &self.options),
        }
    }
}

impl FitArgs {
    /// The run these flags ask for (`progress`: draw progress bars). A --run-dir that is one of
    /// the inputs is refused before anything is read.
    pub fn resolve(&self, progress: bool) -> Result<FitRun> {
        self.run.refuse_as_run_dir(&self.init)?;
        Ok(FitRun {
            config: self.config()?,
            options: self.control.options(progress)?,
            run_store: self.run_store.clone(),
        })
    }

    fn config(&self) -> Result<TrainConfig> {
        self.check_relations()?;
        let task = named("--task", Task::parse(&self.task))?;
        let pathologies = self.pathologies(task)?;
        let normalisation = self.normalisation()?;
        let select = self.select()?;
        Ok(TrainConfig {
            manifest: self.run.manifest.clone(),
            shards: self.run.shards.clone(),
            run_dir: self.run.run_dir.clone(),
            arch: self.run.arch()?,
            in_channels: self.run.in_channels,
            task,
            pathologies,
            policy: self.policy.clone(),
            blank: self.blank.clone(),
            aux: named("--aux", parse_aux(&self.aux))?,
            subset: self.subset.config(),
            init: Init::parse(&self.init)?,
            optimizer: self.optimizer(),
            lr: self.lr,
            schedule: self.schedule(),
            batch_size: self.batch_size,
            epochs: self.epochs,
            clip_grad_norm: self.clip_grad,
            augment: AugmentConfig {
                crop: crop(&self.crop)?,
                hflip: self.hflip,
                rotate_deg: self.rotate,
                brightness: self.brightness,
                contrast: self.contrast,
            },
            normalisation,
            seed: self.seed,
            eval_every: self.eval_every,
            log_every: self.log_every,
            select,
            freeze_epochs: self.freeze_epochs,
            loss: match self.loss {
                LossName::Bce => LossConfig::Bce,
                LossName::Aucm => LossConfig::Aucm {
                    margin: self.margin,
                },
            },
            precision: self.run.precision()?,
        })
    }

    /// The rules that relate options to each other.
    fn check_relations(&self) -> Result<()> {
        if self.freeze_epochs > self.epochs {
            bail!(
                "--freeze-epochs {} is more than --epochs {}: give at most the number of epochs",
                self.freeze_epochs,
                self.epochs
            );
        }
        if matches!(self.schedule, ScheduleName::Cosine) && self.min_lr > self.lr {
            bail!(
                "--min-lr {} is above --lr {}: the cosine schedule would raise the learning \
                 rate; give a --min-lr between 0 and --lr",
                self.min_lr,
                self.lr
            );
        }
        Ok(())
    }

    /// The pathology head's observations: --pathologies, else the list of the manifest's
    /// dataset (read for it); none for the other tasks.
    fn pathologies(&self, task: Task) -> Result<Vec<String>> {
        let spec = match &self.pathologies {
            Some(spec) => spec.as_str(),
            None if task == Task::Pathologies => {
                trainer::default_pathologies(&Manifest::read(&self.run.manifest)?)
            }
            None => return Ok(Vec::new()),
        };
        named("--pathologies", trainer::pathologies_for(task, spec))
    }

    fn optimizer(&self) -> OptimizerConfig {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        let (momentum, weight_decay) = (self.momentum, self.weight_decay);
        match self.optimizer {
            OptimizerName::Adam => OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            },
            OptimizerName::Adamw => OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            },
            OptimizerName::Sgd => OptimizerConfig::Sgd {
                momentum,
                nesterov: self.nesterov,
                weight_decay,
            },
            OptimizerName::Pesg => OptimizerConfig::Pesg {
                momentum,
                weight_decay,
                epoch_decay: self.epoch_decay,
                clip_value: self.clip_value,
                decay_every: self.pesg_decay_every,
                decay_factor: self.pesg_decay_factor,
            },
        }
    }

    fn schedule(&self) -> ScheduleConfig {
        match self.schedule {
            ScheduleName::Constant => ScheduleConfig::Constant,
            ScheduleName::Step => ScheduleConfig::Step {
                every: self.step_every,
                gamma: self.gamma,
            },
            ScheduleName::Cosine => ScheduleConfig::Cosine {
                warmup: self.warmup_steps,
                min_lr: self.min_lr,
            },
        }
    }

    /// --mean and --std, one of each per input channel, else ImageNet's statistics.
    fn normalisation(&self) -> Result<Normalisation> {
        let in_channels = self.run.in_channels;
        if self.mean.is_empty() && self.std.is_empty() {
            return Ok(Normalisation::imagenet(in_channels));
        }
        if self.mean.len() != in_channels || self.std.len() != in_channels {
            bail!("--mean and --std need {in_channels} value(s) each, one per input channel");
        }
        Ok(Normalisation {
            mean: self.mean.clone(),
            std: self.std.clone(),
        })
    }

    fn select(&self) -> Result<Select> {
        Ok(match self.select.as_str() {
            "auc" => Select::Auc,
            "loss" => Select::Loss,
            other => bail!("--select `{other}`: use auc or loss"),
        })
    }
}

/// A `pretrain` command resolved.
#[derive(Debug)]
pub struct PretrainRun {
    pub config: PretrainConfig,
    pub options: FitOptions,
}

impl PretrainRun {
    /// Pretrains the backbone.
    pub fn run(&self) -> Result<PretrainSummary> {
        barlow::pretrain(&self.config, &self.options)
    }
}

impl PretrainArgs {
    /// The pretraining these flags ask for (no progress bars). A --run-dir that is one of the
    /// inputs is refused before anything is read.
    pub fn resolve(&self) -> Result<PretrainRun> {
        self.run.refuse_as_run_dir(&self.init)?;
        Ok(PretrainRun {
            config: self.config()?,
            options: self.control.options(false)?,
        })
    }

    fn config(&self) -> Result<PretrainConfig> {
        Ok(PretrainConfig {
            manifest: self.run.manifest.clone(),
            shards: self.run.shards.clone(),
            run_dir: self.run.run_dir.clone(),
            arch: self.run.arch()?,
            in_channels: self.run.in_channels,
            subset: self.subset.config(),
            init: Init::parse(&self.init)?,
            positives: Positives::parse(&self.positives)?,
            projector: self.projector.clone(),
            lambda: self.lambda,
            optimizer: self.optimizer(),
            lr: self.lr,
            schedule: self.schedule()?,
            batch_size: self.batch_size,
            epochs: self.epochs,
            augment: AugmentConfig {
                crop: crop(&self.crop)?,
                hflip: self.hflip,
                rotate_deg: self.rotate,
                brightness: self.brightness,
                contrast: self.contrast,
            },
            normalisation: Normalisation::imagenet(self.run.in_channels),
            seed: self.seed,
            log_every: self.log_every,
            precision: self.run.precision()?,
        })
    }

    /// Adam with PyTorch's defaults, or LARS with the Barlow Twins paper's constants.
    fn optimizer(&self) -> OptimizerConfig {
        match self.optimizer {
            PretrainOptimizer::Adam => OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
            },
            PretrainOptimizer::Lars => OptimizerConfig::Lars {
                momentum: 0.9,
                weight_decay: self.weight_decay,
                eta: 1e-3,
                bias_lr_factor: 0.0048 / 0.2,
            },
        }
    }

    fn schedule(&self) -> Result<ScheduleConfig> {
        Ok(match self.schedule {
            ScheduleName::Constant => ScheduleConfig::Constant,
            ScheduleName::Step => bail!("pretrain supports --schedule constant or cosine"),
            ScheduleName::Cosine => ScheduleConfig::Cosine {
                warmup: self.warmup_steps,
                min_lr: 0.0,
            },
        })
    }
}

/// What `predict` runs: a split of shards, or image files.
#[derive(Debug)]
pub enum PredictJob<'a> {
    Split(PredictOptions<'a>),
    Images(ImagePredictOptions),
}

impl PredictArgs {
    /// What to predict. An --out that is one of the inputs is refused before anything is read.
    pub fn job(&self) -> Result<PredictJob<'_>> {
        let (Some(shards), Some(manifest)) = (&self.shards, &self.manifest) else {
            return self.images().map(PredictJob::Images);
        };
        let index = shards.join(cxr_core::shard::INDEX_FILE);
        let inputs = [
            ("--checkpoint", self.checkpoint.as_path()),
            ("--manifest", manifest),
            ("--shards", shards),
            ("the --shards index", &index),
        ];
        paths::refuse_output_among_inputs(("--out", &self.out), &inputs)?;
        let split = Split::parse(&self.split).with_context(|| {
            format!(
                "--split `{}`: use train, valid, test or official",
                self.split
            )
        })?;
        Ok(PredictJob::Split(PredictOptions {
            checkpoint: &self.checkpoint,
            shards,
            manifest,
            split,
            frontal_only: self.frontal_only,
            out: &self.out,
            batch_size: self.batch_size,
            chunk_images: self.chunk,
            device: device(&self.device)?,
            precision: precision(&self.precision)?,
        }))
    }

    fn images(&self) -> Result<ImagePredictOptions> {
        let mut inputs = vec![("--checkpoint", self.checkpoint.as_path())];
        inputs.extend(self.image.iter().map(|p| ("--image", p.as_path())));
        paths::refuse_output_among_inputs(("--out", &self.out), &inputs)?;
        let dicom = self
            .dicom_intensity
            .as_deref()
            .map(|name| {
                named(
                    "--dicom-intensity",
                    cxr_image::DicomIntensity::from_name(name).map_err(anyhow::Error::msg),
                )
            })
            .transpose()?;
        let cam_dir = || {
            self.cam_dir
                .clone()
                .unwrap_or_else(|| image_predict::default_cam_dir(&self.out))
        };
        Ok(ImagePredictOptions {
            checkpoint: self.checkpoint.clone(),
            images: self.image.clone(),
            out: self.out.clone(),
            batch_size: self.batch_size,
            device: device(&self.device)?,
            precision: precision(&self.precision)?,
            input: InputFlags {
                size: self.size,
                resize: self.resize.map(|r| match r {
                    ResizeArg::Pad => Resize::Pad,
                    ResizeArg::CentreCrop => Resize::CentreCrop,
                }),
                full_decode: self.full_decode,
                dicom,
            },
            cam: self.cam.clone().map(|name| (name, cam_dir())),
        })
    }
}

/// What `bench` measures.
#[derive(Debug)]
pub enum BenchJob {
    /// The data loader alone (`--loader`).
    Loader(LoaderOptions),
    /// Training and inference of a model on random inputs.
    Model(BenchOptions),
}

impl BenchArgs {
    /// What to measure, and with what.
    pub fn job(&self) -> Result<BenchJob> {
        if !self.loader {
            return Ok(BenchJob::Model(BenchOptions {
                arch: self.model.clone(),
                size: self.size,
                batch: self.batch,
                in_channels: self.in_channels,
                steps: self.steps,
                warmup: self.warmup,
                device: device(&self.device)?,
                precision: precision(&self.precision)?,
            }));
        }
        Ok(BenchJob::Loader(LoaderOptions {
            shards: self.shards.clone().context("--loader needs --shards")?,
            manifest: self.manifest.clone().context("--loader needs --manifest")?,
            batch: self.batch,
            batches: self.steps,
            warmup: self.warmup,
            in_channels: self.in_channels,
            augment: AugmentConfig {
                crop: crop(&self.crop)?,
                hflip: self.hflip,
                rotate_deg: self.rotate,
                brightness: 0.0,
                contrast: 0.0,
            },
        }))
    }

    /// Whether the report is one JSON object (else a line of text).
    pub fn json(&self) -> bool {
        self.json
    }
}

impl GpuCheckArgs {
    /// What to check, on which device.
    pub fn options(&self) -> Result<GpuCheckOptions> {
        Ok(GpuCheckOptions {
            device: device(&self.device)?,
            device_name: self.device.clone(),
            models: self.models.clone(),
            size: self.size,
            batch: self.batch,
            steps: self.steps,
            lr: self.lr,
            tf32: self.tf32,
            precision: precision(&self.precision)?,
        })
    }
}

impl RunInputs {
    fn arch(&self) -> Result<Architecture> {
        named("--arch", self.arch.parse::<Architecture>())
    }

    fn precision(&self) -> Result<Precision> {
        precision(&self.precision)
    }

    /// Refuse, before any work, a --run-dir that is one of the run's inputs (manifest, shards,
    /// the --init weights) or would write over one (`--init checkpoint:runs/a/best.safetensors
    /// --run-dir runs/a`).
    fn refuse_as_run_dir(&self, init: &str) -> Result<()> {
        let init = match Init::parse(init)? {
            Init::Imagenet(path) | Init::Checkpoint(path) => Some(path),
            Init::Random => None,
        };
        let mut inputs = vec![
            ("--manifest", self.manifest.as_path()),
            ("--shards", &self.shards),
        ];
        inputs.extend(init.as_deref().map(|p| ("--init", p)));
        paths::refuse_output_dir_among_inputs(
            ("--run-dir", &self.run_dir),
            RUN_DIR_ENTRIES,
            &inputs,
        )?;
        Ok(())
    }
}

/// What `fit` and `pretrain` write in --run-dir: files, and the folder of resume state.
const RUN_DIR_ENTRIES: &[&str] = &[
    checkpoint::CONFIG_FILE,
    checkpoint::STATE_FILE,
    checkpoint::BEST_MODEL,
    checkpoint::BEST_INFO,
    checkpoint::LAST_MODEL,
    checkpoint::VALID_PREDICTIONS,
    cxr_core::runlog::FILE_NAME,
    "resume",
];

impl RunControl {
    fn options(&self, progress: bool) -> Result<FitOptions> {
        Ok(FitOptions {
            resume: self.resume,
            max_steps: self.max_steps,
            device: device(&self.device)?,
            progress,
            keep: self.keep,
        })
    }
}

impl Subset {
    fn config(&self) -> crate::config::Subset {
        crate::config::Subset {
            train_split: self.train_split.clone(),
            valid_split: self.valid_split.clone(),
            frontal_only: self.frontal_only,
            projections: self.projection.clone(),
        }
    }
}

/// --crop: none, pad:N or resized:MIN_SCALE.
fn crop(spec: &str) -> Result<CropConfig> {
    let bad = || format!("--crop `{spec}`: use none, pad:N or resized:MIN_SCALE");
    Ok(match spec.split_once(':') {
        None if spec == "none" => CropConfig::None,
        Some(("pad", n)) => CropConfig::Pad {
            pad: n.parse().with_context(bad)?,
        },
        Some(("resized", s)) => {
            let min_scale: f64 = s.parse().with_context(bad)?;
            if !(0.0 < min_scale && min_scale <= 1.0) {
                bail!("--crop resized:{s}: the minimum scale must be in (0, 1]");
            }
            CropConfig::Resized { min_scale }
        }
        _ => bail!(bad()),
    })
}

fn device(name: &str) -> Result<candle_core::Device> {
    named("--device", cxr_models::device(name))
}

fn precision(name: &str) -> Result<Precision> {
    named("--precision", name.parse::<Precision>())
}

/// `result`, its error naming `flag` when it does not already (`--arch: unknown architecture
/// ...`), so that the message says which option to change.
fn named<T, E: Into<anyhow::Error>>(flag: &str, result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| {
        let e: anyhow::Error = e.into();
        match format!("{e:#}").contains(flag) {
            true => e,
            false => e.context(flag.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuxTask;

    /// `cxr-train ARGS`, parsed as the binary parses it.
    fn parse(args: &[&str]) -> Command {
        let line = std::iter::once("cxr-train").chain(args.iter().copied());
        Cli::try_parse_from(line).unwrap().command
    }

    /// `command`, then `extra`, then each of `defaults` that `extra` does not give.
    fn line<'a>(command: &'a str, defaults: &[[&'a str; 2]], extra: &[&'a str]) -> Vec<&'a str> {
        let mut line = [&[command], extra].concat();
        for pair in defaults.iter().filter(|[flag, _]| !extra.contains(flag)) {
            line.extend(pair);
        }
        line
    }

    /// `fit` with the inputs below, a view task (no manifest read) and `extra`.
    fn fit_args(extra: &[&str]) -> Box<FitArgs> {
        let defaults = [
            ["--manifest", "/data/m.parquet"],
            ["--shards", "/data/shards"],
            ["--run-dir", "/runs/r"],
            ["--task", "view"],
        ];
        let Command::Fit(args) = parse(&line("fit", &defaults, extra)) else {
            unreachable!("a fit command")
        };
        args
    }

    /// What [`fit_args`] resolves to (no progress bars).
    fn fit(extra: &[&str]) -> Result<FitRun> {
        fit_args(extra).resolve(false)
    }

    fn fit_config(extra: &[&str]) -> TrainConfig {
        fit(extra).unwrap().config
    }

    /// The message of the error `extra` gives `fit`.
    fn fit_error(extra: &[&str]) -> String {
        format!("{:#}", fit(extra).unwrap_err())
    }

    fn pretrain(extra: &[&str]) -> Result<PretrainRun> {
        let defaults = [
            ["--manifest", "/data/m.parquet"],
            ["--shards", "/data/shards"],
            ["--run-dir", "/runs/bt"],
        ];
        let Command::Pretrain(args) = parse(&line("pretrain", &defaults, extra)) else {
            unreachable!("a pretrain command")
        };
        args.resolve()
    }

    #[test]
    fn fit_defaults() {
        let run = fit(&[]).unwrap();
        let want = TrainConfig {
            manifest: "/data/m.parquet".into(),
            shards: "/data/shards".into(),
            run_dir: "/runs/r".into(),
            arch: "densenet121".parse().unwrap(),
            in_channels: 1,
            task: Task::View,
            pathologies: Vec::new(),
            policy: "u-ignore".into(),
            blank: "negative".into(),
            aux: Vec::new(),
            subset: crate::config::Subset {
                train_split: "train".into(),
                valid_split: "valid".into(),
                frontal_only: false,
                projections: Vec::new(),
            },
            init: Init::Random,
            optimizer: OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            lr: 1e-4,
            schedule: ScheduleConfig::Constant,
            batch_size: 16,
            epochs: 3,
            clip_grad_norm: None,
            augment: AugmentConfig::none(),
            normalisation: Normalisation::imagenet(1),
            seed: 0,
            eval_every: 0,
            log_every: 50,
            select: Select::Auc,
            freeze_epochs: 0,
            loss: LossConfig::Bce,
            precision: Precision::F32,
        };
        assert_eq!(run.config, want);
        let FitOptions {
            resume,
            max_steps,
            device,
            progress,
            keep,
        } = run.options;
        assert!(!resume && !progress && device.is_cpu());
        assert_eq!((max_steps, keep), (None, Keep::Best));
        assert_eq!(run.run_store, None);
    }

    #[test]
    fn run_flags_reach_the_options() {
        let run = fit(&[
            "--resume",
            "--max-steps",
            "7",
            "--keep",
            "all",
            "--run-store",
            "/store",
        ])
        .unwrap();
        assert!(run.options.resume);
        assert_eq!(
            (run.options.max_steps, run.options.keep),
            (Some(7), Keep::All)
        );
        assert_eq!(run.run_store, Some("/store".into()));
        assert!(fit_args(&[]).resolve(true).unwrap().options.progress);
    }

    #[test]
    fn the_pathology_task_takes_its_list_from_the_flag_or_the_manifest() {
        let config = fit_config(&["--task", "pathologies", "--pathologies", "competition5"]);
        assert_eq!(config.task, Task::Pathologies);
        assert_eq!(config.pathologies.len(), 5);
        let err = fit_error(&["--task", "pathologies", "--pathologies", "Spleen"]);
        assert!(
            err.starts_with("--pathologies: unknown observation `Spleen`"),
            "{err}"
        );
        // Without --pathologies, the manifest says which dataset's list: here it is absent.
        let err = fit_error(&["--task", "pathologies"]);
        assert!(err.contains("/data/m.parquet"), "{err}");
        // Other tasks have no list, whatever --pathologies says.
        assert!(fit_config(&["--pathologies", "nih14"])
            .pathologies
            .is_empty());
    }

    #[test]
    fn aux_specs() {
        let config = fit_config(&["--aux", "sex=0.1, age=0.5"]);
        let want =
            [(Task::Sex, 0.1), (Task::Age, 0.5)].map(|(task, weight)| AuxTask { task, weight });
        assert_eq!(config.aux, want);
        for (spec, expected) in [
            ("sex", "--aux: `sex` should look like `sex=0.1`"),
            ("lungs=1", "--aux: unknown task `lungs`"),
            (
                "pathologies=1",
                "--aux: `pathologies` cannot be an auxiliary task",
            ),
            ("sex=1,sex=2", "--aux: aux task `sex` is given twice"),
            (
                "age=0",
                "--aux age=0: the weight must be a finite number > 0",
            ),
        ] {
            let err = fit_error(&["--aux", spec]);
            assert!(err.starts_with(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn crop_specs() {
        for (spec, want) in [
            ("none", CropConfig::None),
            ("pad:4", CropConfig::Pad { pad: 4 }),
            ("resized:0.8", CropConfig::Resized { min_scale: 0.8 }),
            ("resized:1", CropConfig::Resized { min_scale: 1.0 }),
        ] {
            assert_eq!(fit_config(&["--crop", spec]).augment.crop, want, "{spec}");
        }
        for (spec, expected) in [
            (
                "square",
                "--crop `square`: use none, pad:N or resized:MIN_SCALE",
            ),
            ("pad:-1", "--crop `pad:-1`: use none"),
            ("resized:big", "--crop `resized:big`: use none"),
            (
                "resized:0",
                "--crop resized:0: the minimum scale must be in (0, 1]",
            ),
            ("resized:1.5", "--crop resized:1.5: the minimum scale"),
        ] {
            let err = fit_error(&["--crop", spec]);
            assert!(err.starts_with(expected), "{spec}: {err}");
        }
        let augment = fit_config(&[
            "--hflip",
            "--rotate",
            "10",
            "--brightness",
            "0.2",
            "--contrast",
            "0.3",
        ])
        .augment;
        let want = AugmentConfig {
            crop: CropConfig::None,
            hflip: true,
            rotate_deg: 10.0,
            brightness: 0.2,
            contrast: 0.3,
        };
        assert_eq!(augment, want);
    }

    #[test]
    fn schedules() {
        let schedule = |extra: &[&str]| fit_config(extra).schedule;
        assert_eq!(
            schedule(&["--schedule", "constant"]),
            ScheduleConfig::Constant
        );
        assert_eq!(
            schedule(&["--schedule", "step"]),
            ScheduleConfig::Step {
                every: 1000,
                gamma: 0.1
            }
        );
        assert_eq!(
            schedule(&["--schedule", "step", "--step-every", "10", "--gamma", "0.5"]),
            ScheduleConfig::Step {
                every: 10,
                gamma: 0.5
            }
        );
        let cosine = [
            "--schedule",
            "cosine",
            "--warmup-steps",
            "5",
            "--min-lr",
            "1e-6",
        ];
        assert_eq!(
            schedule(&cosine),
            ScheduleConfig::Cosine {
                warmup: 5,
                min_lr: 1e-6
            }
        );
        let err = fit_error(&["--schedule", "cosine", "--lr", "1e-4", "--min-lr", "1e-3"]);
        assert!(
            err.starts_with("--min-lr 0.001 is above --lr 0.0001"),
            "{err}"
        );
        // Only a cosine schedule goes to --min-lr.
        let step = ["--schedule", "step", "--lr", "1e-4", "--min-lr", "1e-3"];
        assert!(matches!(schedule(&step), ScheduleConfig::Step { .. }));
    }

    #[test]
    fn init_specs() {
        let init = |spec: &str| fit_config(&["--init", spec]).init;
        assert_eq!(init("random"), Init::Random);
        assert_eq!(
            init("imagenet:/w/dn121.pth"),
            Init::Imagenet("/w/dn121.pth".into())
        );
        assert_eq!(
            init("checkpoint:/runs/a/best.safetensors"),
            Init::Checkpoint("/runs/a/best.safetensors".into())
        );
        for spec in ["imagenet", "imagenet:", "scratch"] {
            let err = fit_error(&["--init", spec]);
            let expected = format!("--init `{spec}`: use random, imagenet:PATH or checkpoint:PATH");
            assert!(err.starts_with(&expected), "{err}");
        }
        // The run's own best model as its start would be overwritten by it.
        let err = fit_error(&["--init", "checkpoint:/runs/r/best.safetensors"]);
        let expected = "--run-dir /runs/r would write /runs/r/best.safetensors, which is an input";
        assert!(err.starts_with(expected), "{err}");
    }

    #[test]
    fn optimizers() {
        let optimizer = |extra: &[&str]| fit_config(extra).optimizer;
        let adam = ["--beta1", "0.8", "--beta2", "0.99", "--eps", "1e-6"];
        let decay = ["--weight-decay", "1e-5"];
        assert_eq!(
            optimizer(&[&adam[..], &decay].concat()),
            OptimizerConfig::Adam {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 1e-5
            }
        );
        assert_eq!(
            optimizer(&[&adam[..], &decay, &["--optimizer", "adamw"]].concat()),
            OptimizerConfig::AdamW {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 1e-5
            }
        );
        let sgd = ["--optimizer", "sgd", "--momentum", "0.5", "--nesterov"];
        assert_eq!(
            optimizer(&[&sgd[..], &decay].concat()),
            OptimizerConfig::Sgd {
                momentum: 0.5,
                nesterov: true,
                weight_decay: 1e-5
            }
        );
        assert_eq!(
            optimizer(&["--optimizer", "pesg"]),
            OptimizerConfig::Pesg {
                momentum: 0.9,
                weight_decay: 0.0,
                epoch_decay: 2e-3,
                clip_value: 1.0,
                decay_every: 1,
                decay_factor: 10.0,
            }
        );
        let config = fit_config(&["--loss", "aucm", "--margin", "0.6", "--optimizer", "pesg"]);
        assert_eq!(config.loss, LossConfig::Aucm { margin: 0.6 });
    }

    #[test]
    fn rules_between_options_name_both_flags() {
        let err = fit_error(&["--epochs", "2", "--freeze-epochs", "3"]);
        assert!(
            err.starts_with("--freeze-epochs 3 is more than --epochs 2"),
            "{err}"
        );
        assert_eq!(
            fit_config(&["--epochs", "2", "--freeze-epochs", "2"]).freeze_epochs,
            2
        );
        let err = fit_error(&["--mean", "0.5"]);
        assert!(
            err.starts_with("--mean and --std need 1 value(s) each"),
            "{err}"
        );
        let err = fit_error(&["--in-channels", "3", "--mean", "0.5", "--std", "0.2"]);
        assert!(
            err.starts_with("--mean and --std need 3 value(s) each"),
            "{err}"
        );
        let own = fit_config(&["--mean", "0.5", "--std", "0.25"]).normalisation;
        assert_eq!((own.mean, own.std), (vec![0.5], vec![0.25]));
        assert_eq!(
            fit_config(&["--in-channels", "3"]).normalisation,
            Normalisation::imagenet(3)
        );
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, expected) in [
            (&["--task", "lungs"][..], "--task: unknown task `lungs`"),
            (&["--arch", "vgg16"], "--arch: unknown architecture"),
            (&["--precision", "fp16"], "--precision: "),
            (&["--device", "gpu"], "--device: "),
            (&["--select", "f1"], "--select `f1`: use auc or loss"),
        ] {
            let err = fit_error(args);
            assert!(err.starts_with(expected), "{args:?}: {err}");
        }
        assert_eq!(fit_config(&["--select", "loss"]).select, Select::Loss);
        assert_eq!(
            fit_config(&["--precision", "bf16"]).precision,
            Precision::Bf16
        );
    }

    #[test]
    fn pretrain_defaults_and_choices() {
        let run = pretrain(&[]).unwrap();
        let want = PretrainConfig {
            manifest: "/data/m.parquet".into(),
            shards: "/data/shards".into(),
            run_dir: "/runs/bt".into(),
            arch: "densenet121".parse().unwrap(),
            in_channels: 1,
            subset: fit_config(&[]).subset,
            init: Init::Random,
            positives: Positives::Augment,
            projector: vec![2048, 2048, 2048],
            lambda: 5e-3,
            optimizer: OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-6,
            },
            lr: 1e-3,
            schedule: ScheduleConfig::Cosine {
                warmup: 0,
                min_lr: 0.0,
            },
            batch_size: 32,
            epochs: 10,
            augment: AugmentConfig {
                crop: CropConfig::Resized { min_scale: 0.5 },
                hflip: true,
                rotate_deg: 10.0,
                brightness: 0.4,
                contrast: 0.4,
            },
            normalisation: Normalisation::imagenet(1),
            seed: 0,
            log_every: 10,
            precision: Precision::F32,
        };
        assert_eq!(run.config, want);
        assert!(!run.options.progress && !run.options.resume);

        let lars = pretrain(&["--optimizer", "lars", "--weight-decay", "1.5e-6"]).unwrap();
        let want = OptimizerConfig::Lars {
            momentum: 0.9,
            weight_decay: 1.5e-6,
            eta: 1e-3,
            bias_lr_factor: 0.0048 / 0.2,
        };
        assert_eq!(lars.config.optimizer, want);
        let config = pretrain(&["--positives", "patient", "--hflip", "false"])
            .unwrap()
            .config;
        assert_eq!(config.positives, Positives::Patient);
        assert!(!config.augment.hflip);
        let constant = pretrain(&["--schedule", "constant"]).unwrap().config;
        assert_eq!(constant.schedule, ScheduleConfig::Constant);
        for (args, expected) in [
            (
                &["--schedule", "step"][..],
                "pretrain supports --schedule constant or cosine",
            ),
            (
                &["--positives", "twin"],
                "--positives `twin`: use augment, study or patient",
            ),
            (&["--crop", "pad"], "--crop `pad`: use none"),
            (
                &["--run-dir", "/data/shards"],
                "--run-dir /data/shards is also an input (--shards",
            ),
        ] {
            let err = format!("{:#}", pretrain(args).unwrap_err());
            assert!(err.starts_with(expected), "{args:?}: {err}");
        }
    }

    fn predict(extra: &[&str], check: impl FnOnce(Result<PredictOptions>)) {
        let defaults = [
            ["--checkpoint", "/runs/r/best.safetensors"],
            ["--shards", "/data/shards"],
            ["--manifest", "/data/m.parquet"],
            ["--out", "/out/test.parquet"],
        ];
        let Command::Predict(args) = parse(&line("predict", &defaults, extra)) else {
            unreachable!("a predict command")
        };
        check(args.job().map(|job| match job {
            PredictJob::Split(options) => options,
            PredictJob::Images(_) => panic!("a split to predict"),
        }));
    }

    #[test]
    fn predict_options() {
        predict(&[], |options| {
            let o = options.unwrap();
            assert_eq!(o.split, Split::Test);
            assert_eq!((o.batch_size, o.chunk_images), (32, 2048));
            assert!(!o.frontal_only && o.device.is_cpu() && o.precision == Precision::F32);
            assert_eq!(o.out, std::path::Path::new("/out/test.parquet"));
        });
        predict(&["--split", "official", "--frontal-only"], |options| {
            let o = options.unwrap();
            assert!(o.split == Split::Official && o.frontal_only);
        });
        for (args, expected) in [
            (
                &["--split", "dev"][..],
                "--split `dev`: use train, valid, test or official",
            ),
            (
                &["--out", "/data/m.parquet"],
                "--out /data/m.parquet is also an input (--manifest /data/m.parquet)",
            ),
            (&["--device", "tpu"], "--device: "),
        ] {
            predict(args, |options| {
                let err = format!("{:#}", options.expect_err("refused"));
                assert!(err.starts_with(expected), "{args:?}: {err}");
            });
        }
    }

    /// `predict --image` with `extra`, resolved (or the parser's error).
    fn predict_images(extra: &[&str]) -> std::result::Result<Result<ImagePredictOptions>, String> {
        let base = [
            "cxr-train",
            "predict",
            "--checkpoint",
            "/runs/r/best.safetensors",
        ];
        let line = [&base[..], extra].concat();
        let cli = Cli::try_parse_from(line).map_err(|e| e.to_string())?;
        let Command::Predict(args) = cli.command else {
            unreachable!("a predict command")
        };
        Ok(args.job().map(|job| match job {
            PredictJob::Images(options) => options,
            PredictJob::Split(_) => panic!("images to predict"),
        }))
    }

    #[test]
    fn predict_image_options() {
        let files = ["--image", "/x/a.png", "/y/b.dcm", "--out", "/out/p.parquet"];
        let o = predict_images(&files).unwrap().unwrap();
        assert_eq!(o.images, [PathBuf::from("/x/a.png"), "/y/b.dcm".into()]);
        assert_eq!(o.input, InputFlags::default());
        assert_eq!(o.cam, None);
        let extra = [
            "--size",
            "96",
            "--resize",
            "centre-crop",
            "--full-decode",
            "--dicom-intensity",
            "full-range",
            "--cam",
            "Edema",
        ];
        let o = predict_images(&[&files[..], &extra].concat())
            .unwrap()
            .unwrap();
        let want = InputFlags {
            size: Some(96),
            resize: Some(Resize::CentreCrop),
            full_decode: Some(true),
            dicom: Some(cxr_image::DicomIntensity::FullRange),
        };
        assert_eq!(o.input, want);
        // Heatmaps go beside the predictions unless --cam-dir says otherwise.
        assert_eq!(o.cam, Some(("Edema".into(), "/out".into())));
        let o = predict_images(
            &[
                &files[..],
                &["--full-decode", "false", "--cam", "view", "--cam-dir", "/h"],
            ]
            .concat(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.input.full_decode, Some(false));
        assert_eq!(o.cam, Some(("view".into(), "/h".into())));
    }

    #[test]
    fn predict_image_refusals() {
        let files = ["--image", "/x/a.png", "--out", "/out/p.parquet"];
        // Refused by the parser: a split's flags with --image, image flags without it.
        for extra in [
            &["--shards", "/s"][..],
            &["--split", "valid"],
            &["--frontal-only"],
        ] {
            let err = predict_images(&[&files[..], extra].concat()).unwrap_err();
            assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
        }
        let split = [
            "--shards",
            "/s",
            "--manifest",
            "/m.parquet",
            "--out",
            "/o.parquet",
        ];
        for extra in [
            &["--cam", "Edema"][..],
            &["--size", "64"],
            &["--resize", "pad"],
            &["--full-decode"],
            &["--dicom-intensity", "window"],
        ] {
            let err = predict_images(&[&split[..], extra].concat()).unwrap_err();
            let refused = format!("'--shards <SHARDS>' cannot be used with '{}", extra[0]);
            assert!(err.contains(&refused), "{extra:?}: {err}");
        }
        let err = predict_images(&["--out", "/o.parquet"]).unwrap_err();
        assert!(err.contains("--shards <SHARDS>"), "{err}");
        let err = predict_images(&[&files[..], &["--size", "8"]].concat()).unwrap_err();
        assert!(err.contains("--size 8 is out of range"), "{err}");
        // Refused as the line is resolved.
        for (extra, expected) in [
            (
                &["--image", "/out/p.parquet"][..],
                "--out /out/p.parquet is also an input (--image /out/p.parquet)",
            ),
            (
                &["--dicom-intensity", "bright"],
                "--dicom-intensity: DICOM intensity `bright`: use window or full-range",
            ),
        ] {
            let err = predict_images(&[&files[..], extra].concat())
                .unwrap()
                .unwrap_err();
            let err = format!("{err:#}");
            assert!(err.starts_with(expected), "{extra:?}: {err}");
        }
    }

    #[test]
    fn bench_jobs() {
        let Command::Bench(args) = parse(&["bench", "--model", "resnet18", "--json"]) else {
            unreachable!("a bench command")
        };
        let BenchJob::Model(options) = args.job().unwrap() else {
            panic!("a model bench")
        };
        assert_eq!(options.arch, "resnet18");
        assert_eq!(
            (options.size, options.batch, options.steps, options.warmup),
            (224, 8, 5, 1)
        );
        assert!(args.json());
        let loader = [
            "bench",
            "--loader",
            "--shards",
            "/s",
            "--manifest",
            "/m.parquet",
        ];
        let Command::Bench(args) = parse(&[&loader[..], &["--crop", "pad:2"]].concat()) else {
            unreachable!("a bench command")
        };
        let BenchJob::Loader(options) = args.job().unwrap() else {
            panic!("a loader bench")
        };
        let want = AugmentConfig {
            crop: CropConfig::Pad { pad: 2 },
            hflip: true,
            ..AugmentConfig::none()
        };
        assert_eq!(options.augment, want);
        assert!(!args.json());
        // --loader without its inputs is refused as the line is parsed.
        let line = ["cxr-train", "bench", "--loader", "--shards", "/s"];
        assert!(Cli::try_parse_from(line).is_err());
    }

    #[test]
    fn gpu_check_options() {
        let Command::GpuCheck(args) = parse(&["gpu-check", "--device", "cpu"]) else {
            unreachable!("a gpu-check command")
        };
        let options = args.options().unwrap();
        assert_eq!(options.device_name, "cpu");
        assert_eq!(options.models, gpu_check::default_models());
        assert_eq!((options.size, options.batch, options.steps), (64, 8, 3));
        assert!(!options.tf32);
    }

    #[test]
    fn threads_are_global() {
        for line in [
            &["cxr-train", "--threads", "2", "gpu-check"][..],
            &["cxr-train", "gpu-check", "--threads", "2"],
        ] {
            assert_eq!(Cli::try_parse_from(line).unwrap().threads, Some(2));
        }
    }
}
