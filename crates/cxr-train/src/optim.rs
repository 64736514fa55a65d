//! Optimisers over candle `Var`s with PyTorch's exact update rules.
//!
//! candle-nn offers AdamW and plain SGD only, while the study's recipes use `torch.optim.Adam`
//! (weight decay added to the gradient, i.e. L2, which is *not* AdamW) and SGD with momentum.
//! The formulas here follow PyTorch's documentation line by line, so a learning rate or weight
//! decay taken from a paper means the same thing. The state (moments, momentum buffers, step
//! counts) is exposed as named tensors so that a checkpoint can store it and `--resume` can
//! continue bit for bit.
//!
//! As in PyTorch, each parameter counts its own updates (`state['step']`), and a parameter
//! without a gradient in a step is skipped without counting it: a backbone frozen for the
//! first epochs (`--freeze-epochs`) starts its Adam moments, and its bias correction, at its
//! first update, not at the optimiser's.
//!
//! Each algorithm is its own type holding what it keeps per parameter (`Algorithm`). In a
//! checkpoint those lists are `first`, `second` and `third`, whatever they mean to the
//! algorithm (the names of states written before the types were split): Adam's moments, the
//! momentum buffers of SGD, LARS and PESG, and PESG's reference point and sum of iterates.
//! Adam's and SGD's arithmetic also runs in place on the CPU, through cxr-models' kernel for
//! it (`update_in_place`), value for value the composed arithmetic.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use cxr_models::{can_update_in_place, update_in_place};
use std::collections::HashMap;

use crate::config::OptimizerConfig;
use crate::dam::Aucm;

/// An optimiser over a fixed list of parameters.
pub struct Optimizer {
    vars: Vec<Var>,
    algorithm: Box<dyn Algorithm>,
    /// Calls to [`Optimizer::step`] so far, whichever parameters they updated.
    steps: u64,
    /// Updates each parameter received (PyTorch's per-parameter `state['step']`): counted only
    /// in steps that gave it a gradient. Adam's bias correction uses these.
    parameter_steps: Vec<u64>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, vars: Vec<Var>) -> Self {
        let n = vars.len();
        let algorithm: Box<dyn Algorithm> = match config {
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(Adam::new([beta1, beta2, eps, weight_decay], false, n)),
            OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(Adam::new([beta1, beta2, eps, weight_decay], true, n)),
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => Box::new(Sgd {
                momentum,
                nesterov,
                weight_decay,
                buffers: vec![None; n],
            }),
            OptimizerConfig::Lars {
                momentum,
                weight_decay,
                eta,
                bias_lr_factor,
            } => Box::new(Lars {
                momentum,
                weight_decay,
                eta,
                bias_lr_factor,
                buffers: vec![None; n],
            }),
            OptimizerConfig::Pesg { .. } => Box::new(Pesg::new(config, n, None)),
        };
        Optimizer {
            vars,
            algorithm,
            steps: 0,
            parameter_steps: vec![0; n],
        }
    }

    /// PESG (`config` must be [`OptimizerConfig::Pesg`]) over `vars` and the AUC-margin loss's
    /// variables: `a` and `b` descend with the weights, `alpha` ascends (see `dam.rs`).
    pub fn pesg(config: OptimizerConfig, mut vars: Vec<Var>, aucm: &Aucm) -> Self {
        vars.push(aucm.a.clone());
        vars.push(aucm.b.clone());
        let dual = Dual {
            margin: aucm.margin,
            a: aucm.a.clone(),
            b: aucm.b.clone(),
            alpha: aucm.alpha.clone(),
        };
        let n = vars.len();
        Optimizer {
            vars,
            algorithm: Box::new(Pesg::new(config, n, Some(dual))),
            steps: 0,
            parameter_steps: vec![0; n],
        }
    }

    /// PESG's `update_regularizer`: the reference point becomes the average of the iterates
    /// since it last moved (the learning-rate division is the schedule's, see
    /// `dam::pesg_learning_rate`). Does nothing before the first update, or for the other
    /// algorithms.
    pub fn move_reference(&mut self) -> Result<()> {
        self.algorithm.move_reference()
    }

    /// Calls to [`Optimizer::step`] so far (the training step, whichever parameters had
    /// gradients).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Updates each parameter has received, in the order of the parameter list: PyTorch's
    /// per-parameter `state['step']`. A parameter without a gradient (frozen) does not count.
    pub fn parameter_steps(&self) -> &[u64] {
        &self.parameter_steps
    }

    /// Scale the gradients so that their global L2 norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does (factor `max_norm / (norm + 1e-6)`, only when it is
    /// below 1). Returns the norm before clipping.
    pub fn clip_grad_norm(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let mut total = 0f64;
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                total += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        let norm = total.sqrt();
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            for var in &self.vars {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    grads.insert(var.as_tensor(), (g.detach() * factor)?);
                }
            }
        }
        Ok(norm)
    }

    /// Apply one update with learning rate `lr`. Parameters without a gradient are left alone
    /// and their step counts stay (as PyTorch's), so Adam's bias correction for a parameter
    /// released from a freeze starts at its own first update.
    ///
    /// Gradients and parameters are detached first: a gradient can carry the op graph of the
    /// forward pass, and a moment built from it would keep every step's activations alive.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            self.parameter_steps[i] += 1;
            let update = Update {
                var,
                p: &var.as_tensor().detach(),
                grad: &grad.detach(),
                lr,
                // `powi` takes an i32; beyond it the bias correction is 1 to the last bit.
                t: i32::try_from(self.parameter_steps[i]).unwrap_or(i32::MAX),
            };
            self.algorithm.update(i, update)?;
        }
        self.algorithm.end_step(lr)
    }

    /// The state as named tensors (`first.{i}`, `second.{i}`, `third.{i}`, the per-parameter
    /// update counts `steps` (I64, one per parameter: f32 would stop counting at 2^24), and for
    /// PESG `dual.alpha` and `dual.since_reference`) plus the count of [`Optimizer::step`] calls.
    pub fn state(&self) -> (HashMap<String, Tensor>, u64) {
        let mut map = HashMap::new();
        let counts: Vec<i64> = self.parameter_steps.iter().map(|&t| t as i64).collect();
        map.insert(
            PARAMETER_STEPS.to_string(),
            Tensor::new(counts, &candle_core::Device::Cpu).expect("a vector"),
        );
        for (kind, list) in self.algorithm.per_parameter() {
            for (i, t) in list.iter().enumerate() {
                if let Some(t) = t {
                    // A copy: the in-place updates change the kept tensors.
                    map.insert(format!("{kind}.{i}"), t.copy().expect("a copy"));
                }
            }
        }
        map.extend(self.algorithm.scalars());
        (map, self.steps)
    }

    /// Restore a state written by [`Optimizer::state`] for the same parameter list.
    ///
    /// A state written before the counts were kept per parameter (no `steps` tensor) gives
    /// `steps` to every parameter with a moment or buffer and 0 to the others: exact unless a
    /// parameter was frozen for a while after the start.
    pub fn load_state(&mut self, mut map: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let counts = match map.remove(PARAMETER_STEPS) {
            Some(t) => Some(self.parameter_counts(&t)?),
            None => None,
        };
        self.algorithm.load_scalars(&mut map)?;
        let device = self.vars.first().map(|v| v.device().clone());
        for (kind, list) in self.algorithm.per_parameter_mut() {
            for (i, slot) in list.iter_mut().enumerate() {
                *slot = match map.remove(&format!("{kind}.{i}")) {
                    Some(t) => {
                        if t.dims() != self.vars[i].dims() {
                            bail!(
                                "optimiser state `{kind}.{i}` has shape {:?} but the parameter has {:?}; \
                                 the checkpoint belongs to another model",
                                t.dims(),
                                self.vars[i].dims()
                            );
                        }
                        Some(t.to_device(device.as_ref().expect("vars exist"))?)
                    }
                    None => None,
                };
            }
        }
        if let Some(extra) = map.keys().next() {
            bail!("optimiser state holds `{extra}`, which no parameter matches; the checkpoint belongs to another model");
        }
        self.parameter_steps = counts.unwrap_or_else(|| {
            (0..self.vars.len())
                .map(|i| if self.algorithm.updated(i) { steps } else { 0 })
                .collect()
        });
        self.steps = steps;
        Ok(())
    }

    /// The per-parameter update counts of a state's `steps` tensor, checked.
    fn parameter_counts(&self, t: &Tensor) -> Result<Vec<u64>> {
        let counts = t
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(candle_core::DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        if counts.len() != self.vars.len() {
            bail!(
                "optimiser state counts steps for {} parameters but there are {}; \
                 the checkpoint belongs to another model",
                counts.len(),
                self.vars.len()
            );
        }
        if let Some(bad) = counts.iter().find(|&&c| c < 0) {
            bail!("optimiser state holds a negative step count ({bad}): it is corrupt");
        }
        Ok(counts.into_iter().map(|c| c as u64).collect())
    }
}

/// The name of the per-parameter step counts in [`Optimizer::state`].
const PARAMETER_STEPS: &str = "steps";

/// The checkpoint names of an algorithm's per-parameter lists, in order.
const FIRST: &str = "first";
const SECOND: &str = "second";
const THIRD: &str = "third";

/// One parameter's update in one step.
struct Update<'a> {
    var: &'a Var,
    /// The parameter's values, detached.
    p: &'a Tensor,
    /// Its gradient, detached.
    grad: &'a Tensor,
    lr: f64,
    /// The parameter's update count, this one included.
    t: i32,
}

/// An optimisation algorithm: its hyper-parameters and what it keeps per parameter.
trait Algorithm: Send + Sync {
    /// Update parameter `i`.
    fn update(&mut self, i: usize, update: Update) -> Result<()>;

    /// What it keeps per parameter, under its checkpoint names (`None`: not yet).
    fn per_parameter(&self) -> Vec<(&'static str, &[Option<Tensor>])>;

    fn per_parameter_mut(&mut self) -> Vec<(&'static str, &mut Vec<Option<Tensor>>)>;

    /// Whether parameter `i` has been updated, as far as its state tells (a state without
    /// per-parameter counts): it has a moment, or a buffer or reference point.
    fn updated(&self, i: usize) -> bool {
        let lists = self.per_parameter().into_iter();
        let mut moments = lists.filter(|(kind, _)| [FIRST, SECOND].contains(kind));
        moments.any(|(_, list)| list[i].is_some())
    }

    /// After every parameter's update in a step.
    fn end_step(&mut self, _lr: f64) -> Result<()> {
        Ok(())
    }

    fn move_reference(&mut self) -> Result<()> {
        Ok(())
    }

    /// Named tensors it keeps besides the per-parameter lists.
    fn scalars(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restores [`Algorithm::scalars`], taking them out of `map`.
    fn load_scalars(&mut self, _map: &mut HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}

/// `torch.optim.Adam` (`decoupled`: `AdamW`) and its moments.
struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    /// First moments (`first`).
    m: Vec<Option<Tensor>>,
    /// Second moments (`second`).
    v: Vec<Option<Tensor>>,
}

impl Adam {
    fn new([beta1, beta2, eps, weight_decay]: [f64; 4], decoupled: bool, n: usize) -> Self {
        Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            m: vec![None; n],
            v: vec![None; n],
        }
    }
}

impl Algorithm for Adam {
    fn update(&mut self, i: usize, u: Update) -> Result<()> {
        let hyper = [self.beta1, self.beta2, self.eps, self.weight_decay];
        let adam = AdamStep::new(hyper, self.decoupled, u.lr, u.t);
        if can_update_in_place(&[u.var.as_tensor(), u.grad]) {
            let m = zeros_if_none(&mut self.m[i], u.p)?;
            let v = zeros_if_none(&mut self.v[i], u.p)?;
            return adam.update_in_place(u.var.as_tensor(), m, v, u.grad);
        }
        let (p_new, m, v) = adam.composed(u.p, u.grad, &self.m[i], &self.v[i])?;
        u.var.set(&p_new)?;
        self.m[i] = Some(m);
        self.v[i] = Some(v);
        Ok(())
    }

    fn per_parameter(&self) -> Vec<(&'static str, &[Option<Tensor>])> {
        vec![(FIRST, self.m.as_slice()), (SECOND, self.v.as_slice())]
    }

    fn per_parameter_mut(&mut self) -> Vec<(&'static str, &mut Vec<Option<Tensor>>)> {
        vec![(FIRST, &mut self.m), (SECOND, &mut self.v)]
    }
}

/// The tensor in `slot`, zeros shaped as `like` when there is none yet.
fn zeros_if_none<'a>(slot: &'a mut Option<Tensor>, like: &Tensor) -> Result<&'a Tensor> {
    if slot.is_none() {
        *slot = Some(like.zeros_like()?);
    }
    Ok(slot.as_ref().expect("just set"))
}

/// `torch.optim.SGD` (weight decay as L2, optionally Nesterov) and its momentum buffers
/// (`first`; none without momentum).
struct Sgd {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: Vec<Option<Tensor>>,
}

impl Algorithm for Sgd {
    fn update(&mut self, i: usize, u: Update) -> Result<()> {
        let sgd = SgdStep::new(self.momentum, self.nesterov, self.weight_decay, u.lr);
        if self.momentum != 0.0 && can_update_in_place(&[u.var.as_tensor(), u.grad]) {
            // Zero: the first update then sets the buffer to the step itself, as PyTorch's does.
            let buf = zeros_if_none(&mut self.buffers[i], u.p)?;
            return sgd.update_in_place(u.var.as_tensor(), buf, u.grad);
        }
        let (p_new, buf) = sgd.composed(u.p, u.grad, &self.buffers[i])?;
        u.var.set(&p_new)?;
        self.buffers[i] = buf;
        Ok(())
    }

    fn per_parameter(&self) -> Vec<(&'static str, &[Option<Tensor>])> {
        vec![(FIRST, self.buffers.as_slice())]
    }

    fn per_parameter_mut(&mut self) -> Vec<(&'static str, &mut Vec<Option<Tensor>>)> {
        vec![(FIRST, &mut self.buffers)]
    }
}

/// LARS as Barlow Twins trains with it (see [`OptimizerConfig::Lars`]) and its momentum
/// buffers (`first`).
struct Lars {
    momentum: f64,
    weight_decay: f64,
    eta: f64,
    bias_lr_factor: f64,
    buffers: Vec<Option<Tensor>>,
}

impl Algorithm for Lars {
    fn update(&mut self, i: usize, u: Update) -> Result<()> {
        let (step, lr) = match u.var.rank() {
            1 => (u.grad.clone(), u.lr * self.bias_lr_factor),
            _ => (lars_step(u.p, u.grad, self.weight_decay, self.eta)?, u.lr),
        };
        let buf = match &self.buffers[i] {
            Some(b) => ((b * self.momentum)? + step)?,
            None => step,
        };
        u.var.set(&(u.p - (&buf * lr)?)?)?;
        self.buffers[i] = Some(buf);
        Ok(())
    }

    fn per_parameter(&self) -> Vec<(&'static str, &[Option<Tensor>])> {
        vec![(FIRST, self.buffers.as_slice())]
    }

    fn per_parameter_mut(&mut self) -> Vec<(&'static str, &mut Vec<Option<Tensor>>)> {
        vec![(FIRST, &mut self.buffers)]
    }
}

/// LibAUC's PESG (see [`OptimizerConfig::Pesg`]) with what it keeps per parameter, and the
/// AUC-margin loss's dual variable when it optimises that loss.
struct Pesg {
    momentum: f64,
    weight_decay: f64,
    epoch_decay: f64,
    clip_value: f64,
    /// LibAUC's momentum buffers (`first`).
    buffers: Vec<Option<Tensor>>,
    /// The reference point `w_ref` (`second`; `None`: zero).
    reference: Vec<Option<Tensor>>,
    /// The sum of the iterates since the reference point last moved (`third`).
    iterates: Vec<Option<Tensor>>,
    /// Steps since the reference point last moved (LibAUC's `T`).
    since_reference: u64,
    dual: Option<Dual>,
}

/// The AUC-margin variables PESG updates besides the weights: `a` and `b` (also the last two
/// parameters) and the dual variable `alpha`, which ascends.
struct Dual {
    margin: f64,
    a: Var,
    b: Var,
    alpha: Var,
}

impl Pesg {
    fn new(config: OptimizerConfig, n: usize, dual: Option<Dual>) -> Self {
        let OptimizerConfig::Pesg {
            momentum,
            weight_decay,
            epoch_decay,
            clip_value,
            ..
        } = config
        else {
            panic!("PESG's optimiser needs a PESG configuration, not {config:?}")
        };
        Pesg {
            momentum,
            weight_decay,
            epoch_decay,
            clip_value,
            buffers: vec![None; n],
            reference: vec![None; n],
            iterates: vec![None; n],
            since_reference: 0,
            dual,
        }
    }
}

impl Algorithm for Pesg {
    fn update(&mut self, i: usize, u: Update) -> Result<()> {
        let p = u.p;
        let mut d = u.grad.clamp(-self.clip_value, self.clip_value)?;
        if self.epoch_decay > 0.0 {
            let pull = match &self.reference[i] {
                Some(reference) => (p - reference)?,
                None => p.clone(),
            };
            d = (d + (pull * self.epoch_decay)?)?;
        }
        if self.weight_decay != 0.0 {
            d = (d + (p * self.weight_decay)?)?;
        }
        if self.momentum != 0.0 {
            let buf = match &self.buffers[i] {
                Some(b) => ((b * (1.0 - self.momentum))? + (&d * self.momentum)?)?,
                None => d.clone(),
            };
            d = buf.clone();
            self.buffers[i] = Some(buf);
        }
        let p_new = (p - (d * u.lr)?)?;
        if self.epoch_decay > 0.0 {
            self.iterates[i] = Some(match &self.iterates[i] {
                Some(acc) => (acc + &p_new)?,
                None => p_new.clone(),
            });
        }
        u.var.set(&p_new)?;
        Ok(())
    }

    fn per_parameter(&self) -> Vec<(&'static str, &[Option<Tensor>])> {
        vec![
            (FIRST, self.buffers.as_slice()),
            (SECOND, self.reference.as_slice()),
            (THIRD, self.iterates.as_slice()),
        ]
    }

    fn per_parameter_mut(&mut self) -> Vec<(&'static str, &mut Vec<Option<Tensor>>)> {
        vec![
            (FIRST, &mut self.buffers),
            (SECOND, &mut self.reference),
            (THIRD, &mut self.iterates),
        ]
    }

    /// Ascent of the dual variable, clamped to [0, 999].
    fn end_step(&mut self, lr: f64) -> Result<()> {
        if let Some(dual) = &self.dual {
            let alpha = dual.alpha.as_tensor().detach();
            let gap = ((dual.b.as_tensor().detach() - dual.a.as_tensor().detach())? + dual.margin)?;
            let step = ((gap * 2.0)? - (&alpha * 2.0)?)?;
            dual.alpha
                .set(&(alpha + (step * lr)?)?.clamp(0f64, 999f64)?)?;
        }
        self.since_reference += 1;
        Ok(())
    }

    fn move_reference(&mut self) -> Result<()> {
        if self.since_reference == 0 {
            return Ok(());
        }
        let t = self.since_reference as f64;
        for (reference, iterates) in self.reference.iter_mut().zip(&mut self.iterates) {
            if let Some(sum) = iterates.take() {
                *reference = Some((sum / t)?);
            }
        }
        self.since_reference = 0;
        Ok(())
    }

    /// `dual.alpha` and `dual.since_reference` (with the dual variable only).
    fn scalars(&self) -> Vec<(String, Tensor)> {
        let Some(dual) = &self.dual else {
            return Vec::new();
        };
        let since_reference = self.since_reference as f32;
        vec![
            (DUAL_ALPHA.into(), dual.alpha.as_tensor().detach()),
            (
                SINCE_REFERENCE.into(),
                Tensor::new(since_reference, &candle_core::Device::Cpu).expect("a scalar"),
            ),
        ]
    }

    fn load_scalars(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        let Some(dual) = &self.dual else {
            return Ok(());
        };
        if let Some(alpha) = map.remove(DUAL_ALPHA) {
            dual.alpha.set(&alpha.to_device(dual.alpha.device())?)?;
        }
        if let Some(t) = map.remove(SINCE_REFERENCE) {
            self.since_reference = t.to_scalar::<f32>()? as u64;
        }
        Ok(())
    }
}

/// PESG's checkpoint names for the dual variable and the steps since the reference moved.
const DUAL_ALPHA: &str = "dual.alpha";
const SINCE_REFERENCE: &str = "dual.since_reference";

/// LARS's step for a weight tensor before momentum: `d = g + weight_decay * w`, scaled by the
/// trust ratio `eta * ||w|| / ||d||` (1 where either norm is 0, as in Barlow Twins' code).
fn lars_step(w: &Tensor, g: &Tensor, weight_decay: f64, eta: f64) -> Result<Tensor> {
    let d = (g + (w * weight_decay)?)?;
    let norm = |t: &Tensor| -> Result<f64> {
        let squares = t.to_dtype(candle_core::DType::F64)?.sqr()?.sum_all()?;
        Ok(squares.to_scalar::<f64>()?.sqrt())
    };
    let (w_norm, d_norm) = (norm(w)?, norm(&d)?);
    if w_norm > 0.0 && d_norm > 0.0 {
        return Ok((d * (eta * w_norm / d_norm))?);
    }
    Ok(d)
}

/// One SGD-with-momentum step's constants, as f32 (`torch.optim.SGD`).
struct SgdStep {
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
    lr: f32,
}

impl SgdStep {
    fn new(momentum: f64, nesterov: bool, weight_decay: f64, lr: f64) -> Self {
        SgdStep {
            momentum: momentum as f32,
            nesterov,
            weight_decay: weight_decay as f32,
            lr: lr as f32,
        }
    }

    /// The update from candle's ops (any device): the new parameter and momentum buffer.
    fn composed(
        &self,
        p: &Tensor,
        grad: &Tensor,
        buf: &Option<Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (momentum, lr) = (f64::from(self.momentum), f64::from(self.lr));
        let mut g = grad.clone();
        if self.weight_decay != 0.0 {
            g = (g + (p * f64::from(self.weight_decay))?)?;
        }
        let mut new_buf = None;
        if self.momentum != 0.0 {
            let b = match buf {
                Some(b) => ((b * momentum)? + &g)?,
                None => g.clone(),
            };
            g = match self.nesterov {
                true => (g + (&b * momentum)?)?,
                false => b.clone(),
            };
            new_buf = Some(b);
        }
        Ok(((p - (g * lr)?)?, new_buf))
    }

    /// Updates `p` and its momentum buffer `buf` (contiguous f32 on the CPU) in place.
    fn update_in_place(&self, p: &Tensor, buf: &Tensor, g: &Tensor) -> Result<()> {
        update_in_place([p, buf], g, |[p, buf], g| {
            for ((p, buf), &g) in p.iter_mut().zip(buf).zip(g) {
                self.value(p, buf, g);
            }
        })?;
        Ok(())
    }

    /// One value's update, operation for operation the composed one (candle's `t * s` is
    /// `t * s + 0`).
    fn value(&self, p: &mut f32, buf: &mut f32, g: f32) {
        let d = match self.weight_decay {
            0.0 => g,
            wd => g + (*p * wd + 0.0),
        };
        *buf = (*buf * self.momentum + 0.0) + d;
        let step = match self.nesterov {
            true => d + (*buf * self.momentum + 0.0),
            false => *buf,
        };
        *p -= step * self.lr + 0.0;
    }
}

/// One Adam step's constants, as f32 (PyTorch's formulas, `torch.optim.Adam` and `AdamW`).
struct AdamStep {
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    inv_sqrt_bc2: f32,
    eps: f32,
    /// `lr / (1 - beta1^t)`.
    step: f32,
    /// Weight decay added to the gradient (Adam's L2; 0 for AdamW).
    l2: f32,
    /// The factor AdamW shrinks the parameter by first (1 for Adam).
    shrink: f32,
}

impl AdamStep {
    fn new([beta1, beta2, eps, weight_decay]: [f64; 4], decoupled: bool, lr: f64, t: i32) -> Self {
        AdamStep {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            inv_sqrt_bc2: (1.0 / (1.0 - beta2.powi(t)).sqrt()) as f32,
            eps: eps as f32,
            step: (lr / (1.0 - beta1.powi(t))) as f32,
            l2: if decoupled { 0.0 } else { weight_decay as f32 },
            shrink: if decoupled {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            },
        }
    }

    /// The new parameter and moments from candle ops, for any device and dtype.
    fn composed(
        &self,
        p: &Tensor,
        g: &Tensor,
        m: &Option<Tensor>,
        v: &Option<Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = |x: f32| x as f64;
        let mut g = g.clone();
        if self.l2 != 0.0 {
            g = (g + (p * c(self.l2))?)?;
        }
        let m = match m {
            Some(m) => ((m * c(self.beta1))? + (&g * c(self.one_minus_beta1))?)?,
            None => (&g * c(self.one_minus_beta1))?,
        };
        let v = match v {
            Some(v) => ((v * c(self.beta2))? + (g.sqr()? * c(self.one_minus_beta2))?)?,
            None => (g.sqr()? * c(self.one_minus_beta2))?,
        };
        let denom = ((v.sqrt()? * c(self.inv_sqrt_bc2))? + c(self.eps))?;
        let update = ((&m / denom)? * c(self.step))?;
        let p_new = ((p * c(self.shrink))? - update)?;
        Ok((p_new, m, v))
    }

    /// Updates `p` and its moments `m` and `v` (contiguous f32 on the CPU) in place, with the
    /// composed update's arithmetic operation for operation in f32 (the same roundings).
    fn update_in_place(&self, p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> Result<()> {
        update_in_place([p, m, v], g, |[p, m, v], g| {
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                let g = if self.l2 != 0.0 { g + *p * self.l2 } else { g };
                *m = *m * self.beta1 + g * self.one_minus_beta1;
                *v = *v * self.beta2 + g * g * self.one_minus_beta2;
                let denom = v.sqrt() * self.inv_sqrt_bc2 + self.eps;
                *p = *p * self.shrink - *m / denom * self.step;
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `sin(k i)` over more than one thread's piece of values.
    fn wave(k: f32) -> Tensor {
        let n = 3 * (1 << 14) + 5;
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * k).sin()).collect();
        Tensor::from_vec(values, n, &Device::Cpu).unwrap()
    }

    /// The in-place SGD update equals the composed one bit for bit, over steps, plain and
    /// Nesterov: the in-place buffer starts at zero where the composed one starts as the first
    /// step.
    #[test]
    fn in_place_sgd_is_the_composed_one() {
        for nesterov in [false, true] {
            let sgd = SgdStep::new(0.9, nesterov, 1e-2, 0.05);
            let p = wave(0.37);
            let (mut want_p, mut want_buf) = (p.copy().unwrap(), None);
            let buf = p.zeros_like().unwrap();
            for t in 1..=3 {
                let g = wave(0.11 * t as f32);
                (want_p, want_buf) = sgd.composed(&want_p, &g, &want_buf).unwrap();
                sgd.update_in_place(&p, &buf, &g).unwrap();
            }
            let values = |t: &Tensor| t.to_vec1::<f32>().unwrap();
            assert!(
                values(&p) == values(&want_p),
                "nesterov {nesterov}: parameters differ"
            );
            assert!(
                values(&buf) == values(&want_buf.unwrap()),
                "nesterov {nesterov}: buffers"
            );
        }
    }

    /// The in-place update equals the composed one bit for bit, over steps, for Adam's L2 and
    /// AdamW's decoupled decay.
    #[test]
    fn in_place_adam_is_the_composed_one() {
        for decoupled in [false, true] {
            let p = wave(0.37);
            let (mut want_p, mut want_m, mut want_v) = (p.copy().unwrap(), None, None);
            let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
            for t in 1..=3 {
                let g = wave(0.11 * t as f32);
                let adam = AdamStep::new([0.9, 0.999, 1e-8, 1e-2], decoupled, 1e-3, t);
                let (np, nm, nv) = adam.composed(&want_p, &g, &want_m, &want_v).unwrap();
                (want_p, want_m, want_v) = (np, Some(nm), Some(nv));
                adam.update_in_place(&p, &m, &v, &g).unwrap();
            }
            for (got, want) in [
                (&p, &want_p),
                (&m, &want_m.unwrap()),
                (&v, &want_v.unwrap()),
            ] {
                let (got, want) = (
                    got.to_vec1::<f32>().unwrap(),
                    want.to_vec1::<f32>().unwrap(),
                );
                assert!(got == want, "decoupled {decoupled}: values differ");
            }
        }
    }
}
