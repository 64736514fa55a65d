//! `cxr-train gpu-check`: the models on a GPU against the same models on the CPU.
//!
//! The golden tests pin the CPU path to PyTorch, but a GPU machine has no Rust, no test binaries
//! and no golden files, and a lease on one is minutes long. So the check travels inside the
//! binary: the same seeded models (the golden files' tiny architectures, DenseNet121 and
//! ResNet50 at a small size) and the same inputs run on the CPU and on the device for a few
//! training steps (train-mode forward, BCE, backward, a plain SGD step), and the differences of
//! the logits, the loss, every gradient and every running statistic are printed, with the
//! eval-mode logits after the last step. What agrees with the CPU agrees with PyTorch. Each step
//! starts both sides from the reference's weights and statistics: compared from their own
//! states, the two would drift apart through the updates (BatchNorm over a few values per
//! channel amplifies rounding by orders of magnitude per step), and step 3 would measure that
//! chaos rather than the device.
//!
//! On the CPU (`--device cpu`) the "device" side runs the layers on candle's own ops
//! ([`cxr_models::with_candle_ops`]), the path CUDA runs, against this crate's CPU kernels: the
//! check can be rehearsed, and its tolerances tried, where no GPU is.
//!
//! Errors are relative L2 norms, `||got - want|| / ||want||` per tensor (see `worst` for the
//! floor), for f32 arithmetic with TF32 off. The forward's (logits, loss, running statistics)
//! must be within 1e-3: measured on the CPU, candle's ops against the kernels, at most 1.3e-5
//! over the tiny models and ResNet18 at 32 to 96 px and batches of 4 to 16, and 4e-5 for
//! ResNet50 at 64 px; cuDNN's algorithms (FFT, Winograd) sum in other orders again. Gradients are
//! mostly within 1e-3 too (measured 4e-6 to 3e-4), but two correct f32 implementations can
//! disagree on a ReLU or max-pool decision whose input is within rounding of the switch, and
//! with about a million decisions per step that happens every few steps: measured up to 2.2e-2
//! for the tensors behind the flipped position. So a gradient is judged at 5e-2 (1e-1 for the
//! first convolution, which gathers every decision of the network) and the report counts the
//! tensors over 1e-3: a wrong kernel moves most of them, by far more. With TF32 on, products are
//! rounded to 10 mantissa bits: the numbers are printed but not judged.

use std::fmt::{self, Write as _};
use std::time::Instant;

use crate::augment::SampleRng;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use cxr_models::{
    bce_with_logits, Architecture, HeadSpec, LoadOptions, Mode, Model, ModelConfig, Precision,
};

/// The models checked by default: the golden tiny ones, then two full-size ones.
pub fn default_models() -> Vec<String> {
    let full_size = ["densenet121", "resnet50"];
    let names = cxr_models::TINY_ARCHITECTURE_NAMES.iter().chain(&full_size);
    names.map(|name| name.to_string()).collect()
}

/// What to check.
#[derive(Clone, Debug)]
pub struct GpuCheckOptions {
    /// The device under test; the reference is always the CPU.
    pub device: Device,
    /// Its name, as given (`cuda:0`).
    pub device_name: String,
    /// Architecture names: [`cxr_models::TINY_ARCHITECTURE_NAMES`] or any of `fit --arch`.
    pub models: Vec<String>,
    /// Input height and width.
    pub size: usize,
    pub batch: usize,
    /// Training steps (each compared), then one eval forward.
    pub steps: usize,
    /// SGD learning rate between steps.
    pub lr: f64,
    /// Whether the device may use TF32 (then nothing is judged).
    pub tf32: bool,
    /// Both sides' precision: in bf16 the reference is the CPU's emulation of it (candle's ops
    /// with bf16-rounded operands and outputs), and the numbers are printed, not judged.
    pub precision: Precision,
}

/// Relative tolerances (see the module documentation for the measurements behind them).
#[derive(Clone, Copy, Debug)]
struct Tolerances {
    forward: f64,
    gradient: f64,
    first_conv_gradient: f64,
}

const F32_TOLERANCES: Tolerances = Tolerances {
    forward: 1e-3,
    gradient: 5e-2,
    first_conv_gradient: 1e-1,
};

/// The cuDNN convolution plans made so far in this process (None without cuDNN).
fn cudnn_plans() -> Option<usize> {
    #[cfg(feature = "cudnn")]
    return Some(cxr_models::cudnn::plans_made());
    #[cfg(not(feature = "cudnn"))]
    None
}

/// One compared quantity.
#[derive(Clone, Debug)]
pub struct Diff {
    /// After which training step (0: the eval forward after the last one).
    pub step: usize,
    pub quantity: String,
    /// The tensor with the largest relative difference, for quantities over many tensors.
    pub worst: Option<String>,
    pub max_abs: f64,
    /// `||got - want|| / ||want||`.
    pub rel_l2: f64,
    /// Relative tolerance; None when not judged (TF32).
    pub tol: Option<f64>,
    /// For quantities over many tensors: how many are over 1e-3, of how many.
    pub over_strict: Option<(usize, usize)>,
}

impl Diff {
    pub fn ok(&self) -> bool {
        self.tol.is_none_or(|tol| self.rel_l2 <= tol)
    }
}

/// Everything compared for one model.
#[derive(Clone, Debug)]
pub struct ModelCheck {
    pub model: String,
    pub size: usize,
    pub batch: usize,
    pub diffs: Vec<Diff>,
    /// Seconds on the reference and on the device under test.
    pub reference_s: f64,
    pub device_s: f64,
    /// cuDNN convolution plans made by the first step, and by the later ones (none: the
    /// descriptors and algorithms of every shape were kept).
    pub cudnn_plans: Option<(usize, usize)>,
}

impl ModelCheck {
    pub fn ok(&self) -> bool {
        self.diffs.iter().all(Diff::ok) && self.cudnn_plans.is_none_or(|(_, later)| later == 0)
    }
}

impl fmt::Display for ModelCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {}x{} batch {}: reference {:.2}s, device {:.2}s",
            self.model, self.size, self.size, self.batch, self.reference_s, self.device_s
        )?;
        if let Some((first, later)) = self.cudnn_plans {
            let ok = if later == 0 { "yes" } else { "NO" };
            writeln!(
                f,
                "  cuDNN plans (descriptors, algorithms): {first} made in step 1, {later} after \
                 ({ok}: none expected)"
            )?;
        }
        writeln!(
            f,
            "  {:<5} {:<16} {:>10} {:>10} {:>8}  {:<3} {:<9} worst tensor",
            "step", "quantity", "max abs", "rel L2", "tol", "ok", ">1e-3"
        )?;
        for d in &self.diffs {
            let step = match d.step {
                0 => "eval".to_string(),
                s => s.to_string(),
            };
            let tol = d.tol.map_or("-".into(), |t| format!("{t:.0e}"));
            let ok = match (d.tol, d.ok()) {
                (None, _) => "-",
                (_, true) => "yes",
                (_, false) => "NO",
            };
            writeln!(
                f,
                "  {step:<5} {:<16} {:>10.2e} {:>10.2e} {tol:>8}  {ok:<3} {:<9} {}",
                d.quantity,
                d.max_abs,
                d.rel_l2,
                d.over_strict
                    .map_or(String::new(), |(n, of)| format!("{n}/{of}")),
                d.worst.as_deref().unwrap_or("")
            )?;
        }
        Ok(())
    }
}

/// The configuration of a checked model: one grey channel, 14 outputs.
fn model_config(name: &str) -> Result<ModelConfig> {
    let arch = match Architecture::tiny(name) {
        Some(arch) => arch,
        None => name.parse::<Architecture>()?,
    };
    Ok(ModelConfig {
        arch,
        in_channels: 1,
        heads: vec![HeadSpec::new("pathologies", 14)],
    })
}

/// Checks every model in turn.
pub fn run(opts: &GpuCheckOptions) -> Result<Vec<ModelCheck>> {
    if opts.steps == 0 || opts.batch < 2 {
        bail!("gpu-check needs at least 1 step and a batch of 2 (BatchNorm's batch statistics)");
    }
    for name in &opts.models {
        model_config(name)?;
    }
    #[cfg(feature = "cudnn")]
    cxr_models::cudnn::set_tf32(opts.tf32);
    opts.models
        .iter()
        .map(|name| check_model(opts, name))
        .collect()
}

/// One side of the comparison: a model, where it runs, and how.
struct Side {
    model: Model,
    candle_ops: bool,
    seconds: f64,
}

impl Side {
    fn new(config: &ModelConfig, device: &Device, candle_ops: bool) -> Result<Self> {
        Ok(Self {
            model: Model::new(config.clone(), device, 0)?,
            candle_ops,
            seconds: 0.0,
        })
    }

    /// Runs `f` on this side's path, timing it to the device's end.
    fn run<R>(&mut self, f: impl FnOnce(&Model) -> Result<R>) -> Result<R> {
        let started = Instant::now();
        let out = match self.candle_ops {
            true => cxr_models::with_candle_ops(|| f(&self.model)),
            false => f(&self.model),
        }?;
        self.model.device().synchronize()?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// What one training step produced, copied to the CPU.
struct StepValues {
    logits: Tensor,
    loss: Tensor,
    grads: Vec<(String, Tensor)>,
    stats: Vec<(String, Tensor)>,
}

fn check_model(opts: &GpuCheckOptions, name: &str) -> Result<ModelCheck> {
    let (config, size) = (model_config(name)?, opts.size);
    let on_cpu = opts.device.is_cpu();
    let bf16 = opts.precision == Precision::Bf16;
    let mut reference = Side::new(&config, &Device::Cpu, bf16)?;
    let mut tested = Side::new(&config, &opts.device, on_cpu)?;
    reference.model.set_precision(opts.precision);
    tested.model.set_precision(opts.precision);
    let (x, targets) = inputs(opts.batch, size)?;
    let first_conv = config.arch.first_conv_weight();
    let tol = F32_TOLERANCES;
    let judged = |tol: f64| ((!opts.tf32 || on_cpu) && !bf16).then_some(tol);
    let mut diffs = Vec::new();
    let (start, mut after_first, mut after_last) = (cudnn_plans(), None, None);
    for step in 1..=opts.steps {
        let want = reference.run(|m| train_step(m, &x, &targets, opts.lr))?;
        let got = tested.run(|m| train_step(m, &x, &targets, opts.lr))?;
        after_last = cudnn_plans();
        if step == 1 {
            after_first = after_last;
        }
        let forward = judged(tol.forward);
        diffs.push(diff(step, "logits", &got.logits, &want.logits, forward)?);
        diffs.push(diff(step, "loss", &got.loss, &want.loss, forward)?);
        diffs.push(worst(step, "gradients", &got.grads, &want.grads, |name| {
            judged(match name == first_conv {
                true => tol.first_conv_gradient,
                false => tol.gradient,
            })
        })?);
        diffs.push(worst(
            step,
            "running stats",
            &got.stats,
            &want.stats,
            |_| forward,
        )?);
        // The next step starts both sides from the reference's state, so that each step is
        // compared on its own and rounding does not compound through the updates.
        let state = reference.model.state_dict()?;
        tested.model.load_state_dict(state, LoadOptions::strict())?;
    }
    let want = reference.run(|m| eval_logits(m, &x))?;
    let got = tested.run(|m| eval_logits(m, &x))?;
    diffs.push(diff(0, "eval logits", &got, &want, judged(tol.forward))?);
    Ok(ModelCheck {
        model: name.to_string(),
        size,
        batch: opts.batch,
        diffs,
        reference_s: reference.seconds,
        device_s: tested.seconds,
        cudnn_plans: match (start, after_first, after_last) {
            (Some(start), Some(first), Some(last)) => Some((first - start, last - first)),
            _ => None,
        },
    })
}

/// A fixed standard-normal input and 0/1 targets, the same on every run and machine.
fn inputs(batch: usize, size: usize) -> Result<(Tensor, Tensor)> {
    let mut rng = SampleRng::new(0x6770_752d_6368_6563, 0, 0);
    let x: Vec<f32> = (0..batch * size * size)
        .map(|_| {
            // Box-Muller; 1 - u keeps the logarithm finite.
            let (u, v) = (1.0 - rng.uniform(), rng.uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    let t: Vec<f32> = (0..batch * 14)
        .map(|_| f32::from(u8::from(rng.uniform() < 0.5)))
        .collect();
    Ok((
        Tensor::from_vec(x, (batch, 1, size, size), &Device::Cpu)?,
        Tensor::from_vec(t, (batch, 14), &Device::Cpu)?,
    ))
}

/// Train-mode forward, BCE, backward, then `w -= lr * grad` for every parameter.
fn train_step(model: &Model, x: &Tensor, targets: &Tensor, lr: f64) -> Result<StepValues> {
    let device = model.device();
    let out = model.forward(&x.to_device(device)?, Mode::Train)?;
    let loss = bce_with_logits(out.primary(), &targets.to_device(device)?, None)?;
    let grads = loss.backward()?;
    let mut named_grads = Vec::new();
    for (name, var) in model.named_parameters() {
        let Some(grad) = grads.get(var.as_tensor()) else {
            bail!("no gradient for {name}");
        };
        named_grads.push((name, grad.to_device(&Device::Cpu)?));
        var.set(&(var.as_tensor() - (grad * lr)?)?)?;
    }
    let stats = model
        .state_dict()?
        .into_iter()
        .filter(|(name, t)| t.dtype() == DType::F32 && name.contains(".running_"))
        .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(StepValues {
        logits: out.primary().to_device(&Device::Cpu)?,
        loss: loss.to_device(&Device::Cpu)?,
        grads: named_grads,
        stats,
    })
}

fn eval_logits(model: &Model, x: &Tensor) -> Result<Tensor> {
    let out = model.infer(&x.to_device(model.device())?)?;
    Ok(out.primary().to_device(&Device::Cpu)?)
}

fn diff(
    step: usize,
    quantity: &str,
    got: &Tensor,
    want: &Tensor,
    tol: Option<f64>,
) -> Result<Diff> {
    let (max_abs, rel_l2) = max_diff(got, want, 0.0)?;
    Ok(Diff {
        step,
        quantity: quantity.into(),
        worst: None,
        max_abs,
        rel_l2,
        tol,
        over_strict: None,
    })
}

/// The tensor whose difference is furthest past its tolerance (or the largest, unjudged).
///
/// Each tensor's error is relative to its own norm, floored at 1% of the largest RMS value of
/// the whole set: a gradient that is zero in exact arithmetic (BatchNorm weights whose output is
/// normalised again downstream are scale-invariant) is pure rounding in both implementations,
/// and its own norm would make that noise look like a 100% error.
fn worst(
    step: usize,
    quantity: &str,
    got: &[(String, Tensor)],
    want: &[(String, Tensor)],
    tol: impl Fn(&str) -> Option<f64>,
) -> Result<Diff> {
    let mut rms_max = 0f64;
    for (_, w) in want {
        let n = w.elem_count().max(1) as f64;
        let sum2 = w
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
        rms_max = rms_max.max((sum2 / n).sqrt());
    }
    let mut worst: Option<(f64, Diff)> = None;
    let mut over = 0;
    for ((name, g), (_, w)) in got.iter().zip(want) {
        let floor = 0.01 * rms_max * (w.elem_count() as f64).sqrt();
        let (max_abs, rel_l2) = max_diff(g, w, floor)?;
        let d = Diff {
            step,
            quantity: quantity.into(),
            worst: Some(name.clone()),
            max_abs,
            rel_l2,
            tol: tol(name),
            over_strict: None,
        };
        over += usize::from(rel_l2 > 1e-3);
        let badness = d.rel_l2 / d.tol.unwrap_or(1.0);
        if worst.as_ref().is_none_or(|(b, _)| badness > *b) {
            worst = Some((badness, d));
        }
    }
    match worst {
        Some((_, d)) => Ok(Diff {
            over_strict: Some((over, got.len())),
            ..d
        }),
        None => bail!("no {quantity} to compare"),
    }
}

/// Largest absolute difference, and the relative L2 error `||got - want|| / ||want||`; a value
/// that is not finite on either side counts as an infinite difference.
///
/// L2, not the largest difference over the largest value: two correct f32 implementations can
/// disagree on a ReLU or max-pool decision whose input is within rounding of the switch (a
/// million such decisions in a step make one likely), which moves the gradient of the few
/// weights behind that position by up to tens of percent, but the tensor's norm by far less.
fn max_diff(got: &Tensor, want: &Tensor, floor: f64) -> Result<(f64, f64)> {
    if got.dims() != want.dims() {
        bail!("shapes differ: {:?} against {:?}", got.dims(), want.dims());
    }
    let flat = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    let (got, want) = (flat(got)?, flat(want)?);
    let (mut max_abs, mut err2, mut norm2) = (0f64, 0f64, 0f64);
    for (g, w) in got.iter().zip(&want) {
        let d = (g - w).abs();
        max_abs = if d.is_finite() {
            max_abs.max(d)
        } else {
            f64::INFINITY
        };
        err2 += d * d;
        norm2 += w * w;
    }
    let rel = match max_abs.is_finite() {
        true => err2.sqrt() / norm2.sqrt().max(floor).max(1e-30),
        false => f64::INFINITY,
    };
    Ok((max_abs, rel))
}

/// The whole report, and a last line saying whether everything judged agreed.
pub fn report(checks: &[ModelCheck], opts: &GpuCheckOptions) -> String {
    let mut out = String::new();
    let device = match &opts.device {
        Device::Cpu => "the CPU on candle's own ops (the CUDA path)".to_string(),
        _ => opts.device_name.clone(),
    };
    let _ = writeln!(
        out,
        "gpu-check: {device} against {}, {} steps of SGD (lr {}), TF32 {}",
        match opts.precision {
            Precision::F32 => "the CPU kernels in f32",
            Precision::Bf16 => "the CPU's emulation of bf16 (printed, not judged)",
        },
        opts.steps,
        opts.lr,
        if opts.tf32 { "on: not judged" } else { "off" }
    );
    for check in checks {
        let _ = write!(out, "{check}");
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.model.as_str())
        .collect();
    let _ = match failed.is_empty() {
        true => writeln!(out, "gpu-check: all {} models agree", checks.len()),
        false => writeln!(out, "gpu-check: outside tolerance: {}", failed.join(", ")),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_value_that_is_not_finite_is_an_infinite_error() {
        let (abs, rel) = max_diff(&t(&[1.0, f32::NAN, 2.0]), &t(&[1.0, 1.0, 2.0]), 0.0).unwrap();
        assert!(abs.is_infinite() && rel.is_infinite());
        let d = diff(1, "logits", &t(&[f32::INFINITY]), &t(&[1.0]), Some(1e-3)).unwrap();
        assert!(!d.ok());
        let (_, rel) = max_diff(&t(&[3.0, 4.0]), &t(&[3.0, 4.5]), 0.0).unwrap();
        assert!((rel - 0.5 / 4.5f64.hypot(3.0)).abs() < 1e-12);
    }

    /// A gradient that is zero but for rounding is judged against the set's scale, not its own;
    /// a tensor that is wrong is still found, and named.
    #[test]
    fn rounding_of_a_vanishing_gradient_is_not_an_error_but_a_wrong_tensor_is() {
        let big = t(&[1.0, -2.0, 0.5, 1.5]);
        let vanishing = t(&[1e-9, -1e-9]);
        let want = vec![
            ("big".to_string(), big.clone()),
            ("zero".to_string(), vanishing),
        ];
        let noisy = vec![
            ("big".to_string(), big),
            ("zero".to_string(), t(&[-1e-9, 2e-9])),
        ];
        let d = worst(1, "gradients", &noisy, &want, |_| Some(5e-2)).unwrap();
        assert!(d.ok() && d.rel_l2 < 1e-6, "{d:?}");
        let wrong = vec![noisy[0].clone(), ("zero".to_string(), t(&[0.3, 0.0]))];
        let d = worst(1, "gradients", &wrong, &want, |_| Some(5e-2)).unwrap();
        assert!(!d.ok(), "{d:?}");
        assert_eq!(
            (d.worst.as_deref(), d.over_strict),
            (Some("zero"), Some((1, 2)))
        );
    }
}
