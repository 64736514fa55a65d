//! Where a model's tensors live: trainable parameters apart from BatchNorm buffers.
//!
//! torchvision's `state_dict` is one ordered namespace that mixes parameters (conv weights,
//! BatchNorm weight/bias, linear layers) with buffers (`running_mean`, `running_var`,
//! `num_batches_tracked`). An optimiser must only ever see the parameters, so those are
//! [`candle_core::Var`]s kept in a [`candle_nn::VarMap`]; the buffers are plain tensors behind a
//! mutex (BatchNorm updates them during a train-mode forward, which takes `&self`). The
//! [`State`] registry remembers both, in torchvision's order, for loading and saving.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::Result;
use crate::init::{Init, InitRng};

/// The element type of every parameter and float buffer.
pub(crate) const DTYPE: DType = DType::F32;

/// A BatchNorm layer's buffers.
#[derive(Debug)]
pub(crate) struct RunningStats {
    pub(crate) mean: Tensor,
    pub(crate) var: Tensor,
    pub(crate) num_batches_tracked: i64,
}

/// Shared between the BatchNorm layer (which updates it) and the registry (which saves it).
pub(crate) type SharedStats = Arc<Mutex<RunningStats>>;

/// Locks running statistics. A poisoned lock only means another thread panicked mid-forward;
/// the tensors inside are still whole (each field is replaced atomically), so carry on.
pub(crate) fn lock(stats: &SharedStats) -> MutexGuard<'_, RunningStats> {
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which buffer of a BatchNorm layer a registry entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatField {
    Mean,
    Var,
    NumBatchesTracked,
}

/// One `state_dict` entry.
#[derive(Clone)]
pub(crate) enum Slot {
    Param(Var),
    Stat(SharedStats, StatField),
}

impl Slot {
    /// Shape as torchvision stores it (`num_batches_tracked` is a 0-d tensor).
    pub(crate) fn shape(&self) -> Vec<usize> {
        match self {
            Self::Param(var) => var.dims().to_vec(),
            Self::Stat(stats, StatField::Mean) => lock(stats).mean.dims().to_vec(),
            Self::Stat(stats, StatField::Var) => lock(stats).var.dims().to_vec(),
            Self::Stat(_, StatField::NumBatchesTracked) => Vec::new(),
        }
    }

    /// dtype as torchvision stores it.
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Self::Stat(_, StatField::NumBatchesTracked) => DType::I64,
            _ => DTYPE,
        }
    }

    /// A snapshot of the current value: detached, and (unlike PyTorch's `state_dict`) not
    /// sharing storage with the parameter, so optimiser steps do not change it afterwards.
    /// Buffers need no copy: BatchNorm replaces them rather than writing into them.
    pub(crate) fn value(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Param(var) => var.as_detached_tensor().copy()?,
            Self::Stat(stats, StatField::Mean) => lock(stats).mean.clone(),
            Self::Stat(stats, StatField::Var) => lock(stats).var.clone(),
            Self::Stat(stats, StatField::NumBatchesTracked) => {
                Tensor::new(lock(stats).num_batches_tracked, &Device::Cpu)?
            }
        })
    }

    /// Overwrites the value. The caller has checked the shape; the dtype is converted here.
    pub(crate) fn set(&self, value: &Tensor, device: &Device) -> Result<()> {
        match self {
            Self::Param(var) => var.set(&value.to_dtype(DTYPE)?.to_device(device)?)?,
            Self::Stat(stats, field) => {
                let mut stats = lock(stats);
                match field {
                    StatField::Mean => stats.mean = owned_copy(value, device)?,
                    StatField::Var => stats.var = owned_copy(value, device)?,
                    StatField::NumBatchesTracked => {
                        // f64 holds every count a training run can reach exactly.
                        stats.num_batches_tracked = value
                            .to_dtype(DType::F64)?
                            .flatten_all()?
                            .to_vec1::<f64>()?[0]
                            as i64
                    }
                }
            }
        }
        Ok(())
    }
}

/// A contiguous f32 copy on `device` that shares no storage with `value`.
fn owned_copy(value: &Tensor, device: &Device) -> Result<Tensor> {
    Ok(value
        .detach()
        .to_dtype(DTYPE)?
        .to_device(device)?
        .force_contiguous()?)
}

/// All of a model's tensors under their torchvision names, in `state_dict` order.
pub(crate) struct State {
    params: VarMap,
    entries: Vec<(String, Slot)>,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            params: VarMap::new(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn varmap(&self) -> &VarMap {
        &self.params
    }

    pub(crate) fn entries(&self) -> &[(String, Slot)] {
        &self.entries
    }

    fn push_param(&mut self, name: String, var: Var) {
        self.params
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), var.clone());
        self.entries.push((name, Slot::Param(var)));
    }

    /// Forgets every tensor whose name starts with `prefix` followed by a dot.
    pub(crate) fn remove_prefix(&mut self, prefix: &str) {
        let dotted = format!("{prefix}.");
        self.entries.retain(|(name, _)| !name.starts_with(&dotted));
        self.params
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| !name.starts_with(&dotted));
    }
}

/// Creates tensors while a model is being built: draws their initial values and registers them.
pub(crate) struct Builder<'a> {
    pub(crate) state: &'a mut State,
    pub(crate) rng: &'a mut InitRng,
    pub(crate) device: &'a Device,
}

impl Builder<'_> {
    /// A trainable parameter.
    pub(crate) fn param(&mut self, name: String, shape: &[usize], init: Init) -> Result<Var> {
        let var = new_var(shape, init, self.rng, self.device)?;
        self.state.push_param(name, var.clone());
        Ok(var)
    }

    /// A BatchNorm layer's buffers, at PyTorch's initial values (mean 0, variance 1, count 0).
    pub(crate) fn running_stats(&mut self, prefix: &str, channels: usize) -> Result<SharedStats> {
        let stats = Arc::new(Mutex::new(RunningStats {
            mean: Tensor::zeros(channels, DTYPE, self.device)?,
            var: Tensor::ones(channels, DTYPE, self.device)?,
            num_batches_tracked: 0,
        }));
        for (suffix, field) in [
            ("running_mean", StatField::Mean),
            ("running_var", StatField::Var),
            ("num_batches_tracked", StatField::NumBatchesTracked),
        ] {
            self.state
                .entries
                .push((join(prefix, suffix), Slot::Stat(stats.clone(), field)));
        }
        Ok(stats)
    }
}

/// A fresh variable with values drawn from `init`.
fn new_var(shape: &[usize], init: Init, rng: &mut InitRng, device: &Device) -> Result<Var> {
    Ok(Var::from_vec(init.sample(shape, rng), shape, device)?)
}

/// Overwrites an existing parameter with fresh values from `init` (used to re-initialise heads).
pub(crate) fn reinit_var(var: &Var, init: Init, rng: &mut InitRng) -> Result<()> {
    let values = Tensor::from_vec(init.sample(var.dims(), rng), var.dims(), var.device())?;
    var.set(&values)?;
    Ok(())
}

/// `prefix.name`, or `name` at the top level.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
