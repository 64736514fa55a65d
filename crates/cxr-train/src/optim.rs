//! Optimisers over candle `Var`s with PyTorch's exact update rules.
//!
//! candle-nn offers AdamW and plain SGD only, while the study's recipes use `torch.optim.Adam`
//! (weight decay added to the gradient, i.e. L2, which is *not* AdamW) and SGD with momentum.
//! The formulas here follow PyTorch's documentation line by line, so a learning rate or weight
//! decay taken from a paper means the same thing. The state (moments, momentum buffers, step
//! count) is exposed as named tensors so that a checkpoint can store it and `--resume` can
//! continue bit for bit.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

use crate::config::OptimizerConfig;

/// An optimiser over a fixed list of parameters.
pub struct Optimizer {
    config: OptimizerConfig,
    vars: Vec<Var>,
    /// Adam: first moments; SGD and PESG: momentum buffers. `None` until the first update.
    first: Vec<Option<Tensor>>,
    /// Adam: second moments; PESG: the reference point `w_ref` (`None`: zero).
    second: Vec<Option<Tensor>>,
    /// PESG: the sum of the iterates since the reference point last moved.
    third: Vec<Option<Tensor>>,
    /// PESG: the AUC-margin loss's margin and dual variable `alpha`, and `a`, `b` (which are
    /// also the last two entries of `vars`).
    dual: Option<Dual>,
    /// PESG: updates since the reference point last moved (LibAUC's `T`).
    since_reference: u64,
    /// Updates applied so far (PyTorch's `state['step']`, shared by all parameters here).
    steps: u64,
}

/// The AUC-margin variables PESG updates besides the weights.
struct Dual {
    margin: f64,
    a: Var,
    b: Var,
    alpha: Var,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, vars: Vec<Var>) -> Self {
        let n = vars.len();
        Optimizer {
            config,
            vars,
            first: vec![None; n],
            second: vec![None; n],
            third: vec![None; n],
            dual: None,
            since_reference: 0,
            steps: 0,
        }
    }

    /// PESG over `vars` and the AUC-margin loss's variables: `a` and `b` descend with the
    /// weights, `alpha` ascends (see `dam.rs`).
    pub fn pesg(config: OptimizerConfig, mut vars: Vec<Var>, aucm: &crate::dam::Aucm) -> Self {
        vars.push(aucm.a.clone());
        vars.push(aucm.b.clone());
        let mut optimizer = Optimizer::new(config, vars);
        optimizer.dual = Some(Dual {
            margin: aucm.margin,
            a: aucm.a.clone(),
            b: aucm.b.clone(),
            alpha: aucm.alpha.clone(),
        });
        optimizer
    }

    /// PESG's `update_regularizer`: the reference point becomes the average of the iterates
    /// since it last moved (the learning-rate division is the schedule's, see
    /// `dam::pesg_learning_rate`). Does nothing before the first update.
    pub fn move_reference(&mut self) -> Result<()> {
        if self.since_reference == 0 {
            return Ok(());
        }
        let t = self.since_reference as f64;
        for i in 0..self.vars.len() {
            if let Some(acc) = self.third[i].take() {
                self.second[i] = Some((acc / t)?);
            }
        }
        self.since_reference = 0;
        Ok(())
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
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

    /// Apply one update with learning rate `lr`. Parameters without a gradient are left alone.
    ///
    /// Gradients and parameters are detached first: a gradient can carry the op graph of the
    /// forward pass, and a moment built from it would keep every step's activations alive.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = &var.as_tensor().detach();
            let grad = &grad.detach();
            match self.config {
                OptimizerConfig::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                }
                | OptimizerConfig::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let decoupled = matches!(self.config, OptimizerConfig::AdamW { .. });
                    let mut p_new = p.clone();
                    let mut g = grad.clone();
                    if weight_decay != 0.0 {
                        if decoupled {
                            p_new = (p * (1.0 - lr * weight_decay))?;
                        } else {
                            g = (g + (p * weight_decay)?)?;
                        }
                    }
                    let m = match &self.first[i] {
                        Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                        None => (&g * (1.0 - beta1))?,
                    };
                    let v = match &self.second[i] {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
                    let update = ((&m / denom)? * (lr / bc1))?;
                    var.set(&(p_new - update)?)?;
                    self.first[i] = Some(m);
                    self.second[i] = Some(v);
                }
                OptimizerConfig::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                } => {
                    let mut g = grad.clone();
                    if weight_decay != 0.0 {
                        g = (g + (p * weight_decay)?)?;
                    }
                    if momentum != 0.0 {
                        let buf = match &self.first[i] {
                            Some(b) => ((b * momentum)? + &g)?,
                            None => g.clone(),
                        };
                        g = if nesterov {
                            (g + (&buf * momentum)?)?
                        } else {
                            buf.clone()
                        };
                        self.first[i] = Some(buf);
                    }
                    var.set(&(p - (g * lr)?)?)?;
                }
                OptimizerConfig::Pesg {
                    momentum,
                    weight_decay,
                    epoch_decay,
                    clip_value,
                    ..
                } => {
                    let mut d = grad.clamp(-clip_value, clip_value)?;
                    if epoch_decay > 0.0 {
                        let pull = match &self.second[i] {
                            Some(reference) => (p - reference)?,
                            None => p.clone(),
                        };
                        d = (d + (pull * epoch_decay)?)?;
                    }
                    if weight_decay != 0.0 {
                        d = (d + (p * weight_decay)?)?;
                    }
                    if momentum != 0.0 {
                        let buf = match &self.first[i] {
                            Some(b) => ((b * (1.0 - momentum))? + (&d * momentum)?)?,
                            None => d.clone(),
                        };
                        d = buf.clone();
                        self.first[i] = Some(buf);
                    }
                    let p_new = (p - (d * lr)?)?;
                    if epoch_decay > 0.0 {
                        self.third[i] = Some(match &self.third[i] {
                            Some(acc) => (acc + &p_new)?,
                            None => p_new.clone(),
                        });
                    }
                    var.set(&p_new)?;
                }
            }
        }
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

    /// The state as named tensors (`first.{i}`, `second.{i}`, `third.{i}`, and for PESG
    /// `dual.alpha` and `dual.since_reference`) plus the step count.
    pub fn state(&self) -> (HashMap<String, Tensor>, u64) {
        let mut map = HashMap::new();
        for (kind, list) in [
            ("first", &self.first),
            ("second", &self.second),
            ("third", &self.third),
        ] {
            for (i, t) in list.iter().enumerate() {
                if let Some(t) = t {
                    map.insert(format!("{kind}.{i}"), t.clone());
                }
            }
        }
        if let Some(dual) = &self.dual {
            map.insert("dual.alpha".into(), dual.alpha.as_tensor().detach());
            map.insert(
                "dual.since_reference".into(),
                Tensor::new(self.since_reference as f32, &candle_core::Device::Cpu)
                    .expect("a scalar"),
            );
        }
        (map, self.steps)
    }

    /// Restore a state written by [`Optimizer::state`] for the same parameter list.
    pub fn load_state(&mut self, mut map: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let device = self.vars.first().map(|v| v.device().clone());
        if let Some(dual) = &self.dual {
            if let Some(alpha) = map.remove("dual.alpha") {
                dual.alpha.set(&alpha.to_device(dual.alpha.device())?)?;
            }
            if let Some(t) = map.remove("dual.since_reference") {
                self.since_reference = t.to_scalar::<f32>()? as u64;
            }
        }
        for (kind, list) in [
            ("first", &mut self.first),
            ("second", &mut self.second),
            ("third", &mut self.third),
        ] {
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
        self.steps = steps;
        Ok(())
    }
}
