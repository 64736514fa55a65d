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
    /// Adam: first moments; SGD: momentum buffers. `None` until the parameter's first update.
    first: Vec<Option<Tensor>>,
    /// Adam: second moments.
    second: Vec<Option<Tensor>>,
    /// Updates applied so far (PyTorch's `state['step']`, shared by all parameters here).
    steps: u64,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, vars: Vec<Var>) -> Self {
        let n = vars.len();
        Optimizer {
            config,
            vars,
            first: vec![None; n],
            second: vec![None; n],
            steps: 0,
        }
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
            }
        }
        Ok(())
    }

    /// The state as named tensors (`first.{i}`, `second.{i}`) plus the step count.
    pub fn state(&self) -> (HashMap<String, Tensor>, u64) {
        let mut map = HashMap::new();
        for (kind, list) in [("first", &self.first), ("second", &self.second)] {
            for (i, t) in list.iter().enumerate() {
                if let Some(t) = t {
                    map.insert(format!("{kind}.{i}"), t.clone());
                }
            }
        }
        (map, self.steps)
    }

    /// Restore a state written by [`Optimizer::state`] for the same parameter list.
    pub fn load_state(&mut self, mut map: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let device = self.vars.first().map(|v| v.device().clone());
        for (kind, list) in [("first", &mut self.first), ("second", &mut self.second)] {
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
