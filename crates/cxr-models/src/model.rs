//! A backbone plus named heads: what training and evaluation hold on to.
//!
//! The backbone and the heads register their tensors in one [`State`] while they are built, in
//! torchvision's `state_dict` order; [`Model`] exposes the trainable part for optimisers and the
//! whole for loading and saving (see `weights.rs`).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::config::{Architecture, HeadSpec, ModelConfig};
use crate::densenet::DenseNet;
use crate::error::{ModelError, Result};
use crate::heads::Head;
use crate::init::InitRng;
use crate::kernels;
use crate::layers::{global_avg_pool, Frozen, Mode};
use crate::precision::{self, Precision};
use crate::resnet::ResNet;
use crate::state::{Builder, Slot, State, DTYPE};

enum Backbone {
    DenseNet(DenseNet),
    ResNet(ResNet),
}

impl Backbone {
    /// Activations before the global pool (see [`ModelOutput::features`]).
    fn features(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            Backbone::DenseNet(net) => net.features(x, mode),
            Backbone::ResNet(net) => net.features(x, mode),
        }
    }

    /// The map the heads average over space, `[N, C, h, w]`: DenseNet's features after the
    /// final ReLU, ResNet's `layer4` output as it is. Grad-CAM explains this map.
    fn pooled_map(&self, features: &Tensor) -> Result<Tensor> {
        match self {
            Backbone::DenseNet(_) => DenseNet::pooled_map(features),
            Backbone::ResNet(_) => Ok(features.clone()),
        }
    }
}

/// What a forward pass returns.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// Activations before the global pool, `[N, C, h, w]`: DenseNet's `model.features(x)`
    /// (after `norm5`, before the final ReLU), ResNet's `layer4` output.
    pub features: Tensor,
    /// Globally pooled features, `[N, C]`: the heads' input (DenseNet: ReLU, then the mean).
    pub pooled: Tensor,
    /// Logits `[N, outputs]` of every head, in configuration order (primary first).
    pub heads: Vec<(String, Tensor)>,
}

impl ModelOutput {
    /// Logits of the head with this name.
    pub fn head(&self, name: &str) -> Option<&Tensor> {
        self.heads.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Logits of the primary (first) head.
    pub fn primary(&self) -> &Tensor {
        &self.heads[0].1
    }
}

/// [`Model::infer`] for many calls with the weights frozen: what depends on the weights alone
/// (each fused block's parameters packed into one buffer, the transform of its Winograd
/// convolutions, which then also pays at batch sizes where it would not once per call) is made
/// at the first call and kept. ResNet50 at batch 8 spends about 30 ms of 0.75 s per call on
/// that on two cores (see the README's Speed section). The weights must not change while it is
/// used: an optimizer step or a load in between would go unseen.
pub struct Inference<'m> {
    model: &'m Model,
    frozen: Arc<Frozen>,
}

impl Inference<'_> {
    /// [`Model::infer`] with the kept weights.
    pub fn infer(&self, x: &Tensor) -> Result<ModelOutput> {
        self.frozen.scope(|| self.model.infer(x))
    }
}

/// A DenseNet or ResNet with named heads, tensors named as torchvision names them.
pub struct Model {
    pub(crate) config: ModelConfig,
    backbone: Backbone,
    pub(crate) heads: Vec<Head>,
    pub(crate) state: State,
    pub(crate) rng: InitRng,
    pub(crate) device: Device,
    precision: Precision,
}

impl Model {
    /// Builds a randomly initialised model (torchvision's schemes; the same `seed` gives the same
    /// weights on every device, see `init.rs`).
    pub fn new(config: ModelConfig, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut state = State::new();
        let mut rng = InitRng::new(seed);
        let mut b = Builder {
            state: &mut state,
            rng: &mut rng,
            device,
        };
        let backbone = match &config.arch {
            Architecture::DenseNet(c) => {
                Backbone::DenseNet(DenseNet::new(&mut b, c, config.in_channels)?)
            }
            Architecture::ResNet(c) => {
                Backbone::ResNet(ResNet::new(&mut b, c, config.in_channels)?)
            }
        };
        let heads = config
            .heads
            .iter()
            .enumerate()
            .map(|(i, spec)| Head::new(&mut b, &config.arch, i, spec))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            backbone,
            heads,
            state,
            rng,
            device: device.clone(),
            precision: Precision::F32,
        })
    }

    /// The arithmetic of the convolutions and matrix products from now on (see
    /// [`Precision`]). bf16 needs a CUDA device, or [`crate::with_candle_ops`] on the CPU.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Runs `f` in this model's precision: what [`Model::forward`] does around the layers, for
    /// layers outside the model that belong to its computation (a projector on its features).
    pub fn precision_scope<R, E: From<ModelError>>(
        &self,
        f: impl FnOnce() -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        if self.precision == Precision::Bf16 && self.device.is_cpu() && !kernels::candle_ops() {
            return Err(E::from(ModelError::InvalidInput(
                "bf16 runs on CUDA (its tensor cores); on the CPU the models run in f32 (use \
                 --precision f32, or --device cuda)"
                    .into(),
            )));
        }
        precision::scope(self.precision, f)
    }

    /// The configuration, heads included as they are now.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// [`Model::forward`] in [`Mode::Eval`] for inference, recording nothing for a backward
    /// (PyTorch's `model.eval()` under `torch.no_grad()`): each block's buffers are freed as
    /// the next one runs, so it is faster and takes less memory. For many calls on the same
    /// weights, [`Model::inference`] is faster still.
    pub fn infer(&self, x: &Tensor) -> Result<ModelOutput> {
        crate::layers::without_grad(|| self.forward(&x.detach(), Mode::Eval))
    }

    /// Inference over many batches with the weights as they are now (prediction over a
    /// dataset): see [`Inference`].
    pub fn inference(&self) -> Inference<'_> {
        Inference {
            model: self,
            frozen: Arc::default(),
        }
    }

    /// Runs the model on `x` (`[N, in_channels, H, W]`, f32). In [`Mode::Train`] BatchNorm uses
    /// batch statistics and updates its running statistics (as PyTorch does, also when no
    /// backward follows).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<ModelOutput> {
        self.precision_scope(|| self.forward_layers(x, mode))
    }

    fn forward_layers(&self, x: &Tensor, mode: Mode) -> Result<ModelOutput> {
        self.check_input(x)?;
        let features = self.backbone.features(x, mode)?;
        let pooled = global_avg_pool(&self.backbone.pooled_map(&features)?)?;
        let heads = self
            .heads
            .iter()
            .map(|h| Ok((h.spec.name.clone(), h.forward(&pooled)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelOutput {
            features,
            pooled,
            heads,
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.config.in_channels || x.dtype() != DTYPE {
            return Err(ModelError::InvalidInput(format!(
                "expected an f32 tensor [N, {}, H, W], got {:?} {:?}",
                self.config.in_channels,
                x.dtype(),
                dims
            )));
        }
        Ok(())
    }

    /// The map the heads pool (see [`Backbone::pooled_map`]) for `x`, in [`Mode::Eval`] and
    /// recording nothing: where [`Model::grad_cam`] starts its backward from.
    pub(crate) fn eval_pooled_map(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        self.precision_scope(|| {
            crate::layers::without_grad(|| {
                let features = self.backbone.features(&x.detach(), Mode::Eval)?;
                self.backbone.pooled_map(&features)
            })
        })
    }

    /// The logits `[N, outputs]` of the head `name` from a pooled map: the rest of
    /// [`Model::forward`] after the backbone, recorded for a backward when `map` is a variable.
    pub(crate) fn head_logits(&self, map: &Tensor, name: &str) -> Result<Tensor> {
        let head = self
            .heads
            .iter()
            .find(|h| h.spec.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.heads.iter().map(|h| h.spec.name.as_str()).collect();
                ModelError::InvalidInput(format!(
                    "the model has no head `{name}` (its heads: {})",
                    names.join(", ")
                ))
            })?;
        self.precision_scope(|| head.forward(&global_avg_pool(map)?))
    }

    /// The trainable parameters under their torchvision names (no BatchNorm buffers).
    pub fn varmap(&self) -> &VarMap {
        self.state.varmap()
    }

    /// The trainable parameters in `state_dict` order, ready for `candle_nn::AdamW::new`.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.named_parameters()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// The trainable parameters with their names, in `state_dict` order (filter by name to freeze
    /// a part, e.g. train only names starting with `classifier.` / `heads.`).
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        self.state
            .entries()
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Param(var) => Some((name.clone(), var.clone())),
                Slot::Stat(..) => None,
            })
            .collect()
    }

    /// A snapshot of every tensor (parameters and buffers) with torchvision's names, dtypes and
    /// order: f32, except `num_batches_tracked`, an i64 scalar on the CPU. The tensors are copies:
    /// later training does not change them.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        self.state
            .entries()
            .iter()
            .map(|(name, slot)| Ok((name.clone(), slot.value()?)))
            .collect()
    }

    /// Names, dtypes and shapes of [`Model::state_dict`], without copying any data.
    pub fn state_dict_spec(&self) -> Vec<(String, DType, Vec<usize>)> {
        self.state
            .entries()
            .iter()
            .map(|(name, slot)| (name.clone(), slot.dtype(), slot.shape()))
            .collect()
    }

    /// Adds an auxiliary head, freshly initialised (drawn from the model's generator).
    pub fn add_head(&mut self, spec: HeadSpec) -> Result<()> {
        let mut config = self.config.clone();
        config.heads.push(spec.clone());
        config.validate()?;
        let mut b = Builder {
            state: &mut self.state,
            rng: &mut self.rng,
            device: &self.device,
        };
        let head = Head::new(&mut b, &config.arch, config.heads.len() - 1, &spec)?;
        self.heads.push(head);
        self.config = config;
        Ok(())
    }

    /// Removes an auxiliary head and its tensors. The primary head cannot be removed: build a
    /// model with another configuration and load non-strictly instead.
    pub fn remove_head(&mut self, name: &str) -> Result<()> {
        let err = |reason: &str| ModelError::Head {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let index = self
            .heads
            .iter()
            .position(|h| h.spec.name == name)
            .ok_or_else(|| err("the model has no head with that name"))?;
        if index == 0 {
            return Err(err(
                "it is the primary head; build a model with the heads you want and load this \
                 checkpoint with LoadOptions::non_strict()",
            ));
        }
        let head = self.heads.remove(index);
        self.state.remove_prefix(&head.prefix);
        self.config.heads.remove(index);
        Ok(())
    }
}
