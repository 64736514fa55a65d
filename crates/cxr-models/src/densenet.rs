//! DenseNet-BC as torchvision builds it (`torchvision.models.densenet`).
//!
//! Tensor names follow torchvision's module tree (`features.denseblock1.denselayer1.conv1`, ...)
//! so that its `state_dict`s load unchanged. Initialisation follows torchvision too: convolutions
//! `kaiming_normal_` (fan-in, ReLU gain), BatchNorm weight 1 and bias 0 (see [`BatchNorm`]).
//! Dropout is omitted: torchvision's default `drop_rate` is 0 and the study does not use it.

use candle_core::Tensor;

use crate::config::DenseNetConfig;
use crate::error::Result;
use crate::init::{Fan, Init};
use crate::kernels;
use crate::layers::{
    avg_pool2d, fused_inputs, max_pool2d, record_fused, BatchNorm, Conv2d, ConvSpec, Mode, BN_EPS,
};
use crate::state::Builder;

const CONV_INIT: Init = Init::KaimingNormal(Fan::In);

/// BN-ReLU-conv1x1 (bottleneck) then BN-ReLU-conv3x3, producing `growth_rate` new channels.
struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2d,
    norm2: BatchNorm,
    conv2: Conv2d,
}

impl DenseLayer {
    fn new(b: &mut Builder, name: &str, c_in: usize, cfg: &DenseNetConfig) -> Result<Self> {
        let width = cfg.bn_size * cfg.growth_rate;
        let conv = |c_in, c_out, kernel, padding| ConvSpec {
            c_in,
            c_out,
            kernel,
            stride: 1,
            padding,
        };
        Ok(Self {
            norm1: BatchNorm::new(b, &format!("{name}.norm1"), c_in)?,
            conv1: Conv2d::new(
                b,
                &format!("{name}.conv1"),
                conv(c_in, width, 1, 0),
                CONV_INIT,
            )?,
            norm2: BatchNorm::new(b, &format!("{name}.norm2"), width)?,
            conv2: Conv2d::new(
                b,
                &format!("{name}.conv2"),
                conv(width, cfg.growth_rate, 3, 1),
                CONV_INIT,
            )?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let bottleneck = self.conv1.forward(&self.norm1.forward_relu(x, mode)?)?;
        self.conv2
            .forward(&self.norm2.forward_relu(&bottleneck, mode)?)
    }
}

/// BN-ReLU-conv1x1 halving the channels, then a 2x2 average pool.
struct Transition {
    norm: BatchNorm,
    conv: Conv2d,
}

impl Transition {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = self.conv.forward(&self.norm.forward_relu(x, mode)?)?;
        avg_pool2d(&x, 2)
    }
}

/// One dense block and the transition after it (none after the last block).
struct Stage {
    layers: Vec<DenseLayer>,
    transition: Option<Transition>,
    spec: kernels::DenseBlockSpec,
}

impl Stage {
    /// The dense block: on the CPU one fused op ([`kernels::dense_block`]), elsewhere each layer
    /// in turn, concatenating its output to its input.
    fn block(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if kernels::on_cpu_f32(x) {
            return self.fused_block(x, mode);
        }
        let mut x = x.clone();
        for layer in &self.layers {
            let new = layer.forward(&x, mode)?;
            x = Tensor::cat(&[&x, &new], 1)?;
        }
        Ok(x)
    }

    fn fused_block(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        BatchNorm::count(x, mode)?;
        let norms = || self.layers.iter().flat_map(|l| [&l.norm1, &l.norm2]);
        let params = self.layers.iter().flat_map(|l| {
            let (n1, n2) = (&l.norm1, &l.norm2);
            [n1.weight(), n1.bias(), l.conv1.weight()]
                .into_iter()
                .chain([n2.weight(), n2.bias(), l.conv2.weight()])
        });
        let inputs = fused_inputs(x, params, norms(), mode)?;
        let (y, stats) =
            kernels::dense_block(&inputs.x, &inputs.packed, self.spec, inputs.running)?;
        record_fused(norms(), stats)?;
        Ok(y)
    }
}

/// The `features` part of torchvision's DenseNet.
pub(crate) struct DenseNet {
    conv0: Conv2d,
    norm0: BatchNorm,
    stages: Vec<Stage>,
    norm5: BatchNorm,
}

impl DenseNet {
    pub(crate) fn new(b: &mut Builder, cfg: &DenseNetConfig, in_channels: usize) -> Result<Self> {
        let stem = ConvSpec {
            c_in: in_channels,
            c_out: cfg.num_init_features,
            kernel: 7,
            stride: 2,
            padding: 3,
        };
        let conv0 = Conv2d::new(b, "features.conv0", stem, CONV_INIT)?;
        let norm0 = BatchNorm::new(b, "features.norm0", cfg.num_init_features)?;
        let mut channels = cfg.num_init_features;
        let mut stages = Vec::with_capacity(cfg.block_config.len());
        for (i, &num_layers) in cfg.block_config.iter().enumerate() {
            let block = format!("features.denseblock{}", i + 1);
            let layers = (0..num_layers)
                .map(|j| {
                    let name = format!("{block}.denselayer{}", j + 1);
                    DenseLayer::new(b, &name, channels + j * cfg.growth_rate, cfg)
                })
                .collect::<Result<Vec<_>>>()?;
            channels += num_layers * cfg.growth_rate;
            let transition = if i + 1 < cfg.block_config.len() {
                let name = format!("features.transition{}", i + 1);
                let norm = BatchNorm::new(b, &format!("{name}.norm"), channels)?;
                let spec = ConvSpec {
                    c_in: channels,
                    c_out: channels / 2,
                    kernel: 1,
                    stride: 1,
                    padding: 0,
                };
                let conv = Conv2d::new(b, &format!("{name}.conv"), spec, CONV_INIT)?;
                channels /= 2;
                Some(Transition { norm, conv })
            } else {
                None
            };
            let spec = kernels::DenseBlockSpec {
                layers: num_layers,
                growth: cfg.growth_rate,
                width: cfg.bn_size * cfg.growth_rate,
                eps: BN_EPS,
            };
            stages.push(Stage {
                layers,
                transition,
                spec,
            });
        }
        let norm5 = BatchNorm::new(b, "features.norm5", channels)?;
        Ok(Self {
            conv0,
            norm0,
            stages,
            norm5,
        })
    }

    /// torchvision's `model.features(x)`: the output of `norm5`, before the final ReLU.
    pub(crate) fn features(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = self.norm0.forward_relu(&self.conv0.forward(x)?, mode)?;
        let mut x = max_pool2d(&x, 3, 2, 1)?;
        for stage in &self.stages {
            // Each layer sees the concatenation of the block input and all earlier outputs.
            x = stage.block(&x, mode)?;
            if let Some(transition) = &stage.transition {
                x = transition.forward(&x, mode)?;
            }
        }
        self.norm5.forward(&x, mode)
    }

    /// The map the heads average over space: the features after the final ReLU (torchvision's
    /// `F.relu(features)` in `DenseNet.forward`), which is also the map Grad-CAM explains.
    pub(crate) fn pooled_map(features: &Tensor) -> Result<Tensor> {
        Ok(features.relu()?)
    }
}
