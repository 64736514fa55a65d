//! Output heads: linear layers on the pooled features.
//!
//! The study trains one backbone with several targets (pathologies, sex, age, view), and
//! training runs add or drop targets, so heads are named and separate from the backbone. The
//! primary (first) head takes torchvision's name, `classifier` for DenseNet and `fc` for ResNet,
//! so a checkpoint of a single-head model is a plain torchvision `state_dict`
//! (`torchvision.models.densenet121(num_classes=14).load_state_dict(...)` works). Auxiliary heads
//! are stored as `heads.<name>.weight` / `heads.<name>.bias`, which PyTorch only accepts with
//! `strict=False`; [`crate::SaveOptions::drop_aux_heads`] writes a copy without them.

use candle_core::{Tensor, Var};

use crate::config::{Architecture, HeadSpec};
use crate::error::Result;
use crate::init::{Init, InitRng};
use crate::layers::param;
use crate::state::{join, reinit_var, Builder};

/// Name prefix of the auxiliary heads.
pub(crate) const AUX_PREFIX: &str = "heads";

/// One head: `logits = pooled @ weight^T + bias`.
pub(crate) struct Head {
    pub(crate) spec: HeadSpec,
    pub(crate) prefix: String,
    weight: Var,
    bias: Var,
    weight_init: Init,
    bias_init: Init,
}

impl Head {
    /// Builds head number `index` (0 = primary) with torchvision's Linear initialisation: weight
    /// uniform with bound 1/sqrt(in); bias the same for ResNet's `fc`, zero for DenseNet's
    /// `classifier` (torchvision's DenseNet sets `nn.init.constant_(m.bias, 0)`).
    pub(crate) fn new(
        b: &mut Builder,
        arch: &Architecture,
        index: usize,
        spec: &HeadSpec,
    ) -> Result<Self> {
        let prefix = if index == 0 {
            arch.primary_head_prefix().to_string()
        } else {
            join(AUX_PREFIX, &spec.name)
        };
        let in_features = arch.num_features();
        let weight_init = Init::Uniform {
            bound: 1.0 / (in_features as f64).sqrt(),
        };
        let bias_init = match arch {
            Architecture::DenseNet(_) => Init::Zeros,
            Architecture::ResNet(_) => weight_init,
        };
        let weight = b.param(
            join(&prefix, "weight"),
            &[spec.outputs, in_features],
            weight_init,
        )?;
        let bias = b.param(join(&prefix, "bias"), &[spec.outputs], bias_init)?;
        Ok(Self {
            spec: spec.clone(),
            prefix,
            weight,
            bias,
            weight_init,
            bias_init,
        })
    }

    /// `[N, in_features] -> [N, outputs]`.
    pub(crate) fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let w = param(&self.weight);
        let product = crate::precision::matmul(pooled, &w.t()?)?;
        Ok(product.broadcast_add(&param(&self.bias))?)
    }

    /// Whether `name` is one of this head's tensors.
    pub(crate) fn owns(&self, name: &str) -> bool {
        name.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Draws fresh initial values, as if the head had just been built.
    pub(crate) fn reinit(&self, rng: &mut InitRng) -> Result<()> {
        reinit_var(&self.weight, self.weight_init, rng)?;
        reinit_var(&self.bias, self.bias_init, rng)
    }
}
