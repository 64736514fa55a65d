//! ResNet as torchvision builds it (`torchvision.models.resnet`, v1.5: the stride sits in the
//! 3x3 convolution of a bottleneck).
//!
//! Tensor names follow torchvision (`layer2.0.conv1`, `layer2.0.downsample.0`, ...).
//! Initialisation follows torchvision: convolutions `kaiming_normal_(mode="fan_out",
//! nonlinearity="relu")`, BatchNorm weight 1 and bias 0, no zero-init of the last BN of a block.

use candle_core::Tensor;

use crate::config::{ResNetConfig, ResidualBlock};
use crate::error::Result;
use crate::init::{Fan, Init};
use crate::kernels;
use crate::layers::{
    fused_inputs, max_pool2d, record_fused, BatchNorm, Conv2d, ConvSpec, Mode, BN_EPS,
};
use crate::state::Builder;

const CONV_INIT: Init = Init::KaimingNormal(Fan::Out);

/// A convolution followed by its BatchNorm.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(b: &mut Builder, conv_name: &str, bn_name: &str, spec: ConvSpec) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(b, conv_name, spec, CONV_INIT)?,
            bn: BatchNorm::new(b, bn_name, spec.c_out)?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?, mode)
    }

    fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.forward_relu(&self.conv.forward(x)?, mode)
    }
}

/// A basic block (`conv1..conv2`) or a bottleneck (`conv1..conv3`): conv-BN pairs with ReLUs
/// between them, plus the (possibly projected) input, then a ReLU.
struct Block {
    path: Vec<ConvBn>,
    downsample: Option<ConvBn>,
    spec: kernels::ResidualSpec,
}

impl Block {
    fn new(
        b: &mut Builder,
        name: &str,
        cfg: &ResNetConfig,
        c_in: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Self> {
        let c_out = planes * cfg.block.expansion();
        let specs = match cfg.block {
            ResidualBlock::Basic => vec![
                ConvSpec::same(c_in, planes, 3, stride),
                ConvSpec::same(planes, planes, 3, 1),
            ],
            ResidualBlock::Bottleneck => {
                let width = planes * cfg.width_per_group / 64;
                vec![
                    ConvSpec::same(c_in, width, 1, 1),
                    ConvSpec::same(width, width, 3, stride),
                    ConvSpec::same(width, c_out, 1, 1),
                ]
            }
        };
        let path = specs
            .iter()
            .copied()
            .enumerate()
            .map(|(i, s)| {
                let conv = format!("{name}.conv{}", i + 1);
                ConvBn::new(b, &conv, &format!("{name}.bn{}", i + 1), s)
            })
            .collect::<Result<Vec<_>>>()?;
        let projection =
            (stride != 1 || c_in != c_out).then(|| ConvSpec::same(c_in, c_out, 1, stride));
        let downsample = match projection {
            Some(s) => {
                let conv = format!("{name}.downsample.0");
                let bn = format!("{name}.downsample.1");
                Some(ConvBn::new(b, &conv, &bn, s)?)
            }
            None => None,
        };
        let spec = kernels::ResidualSpec {
            path: specs,
            downsample: projection,
            eps: BN_EPS,
        };
        Ok(Self {
            path,
            downsample,
            spec,
        })
    }

    /// The block in candle's ops (off the CPU, or not in f32).
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (last, inner) = self.path.split_last().expect("a block has convolutions");
        let mut out = x.clone();
        for conv_bn in inner {
            out = conv_bn.forward_relu(&out, mode)?;
        }
        let out = last.forward(&out, mode)?;
        let identity = match &self.downsample {
            Some(down) => down.forward(x, mode)?,
            None => x.clone(),
        };
        Ok((out + identity)?.relu()?)
    }

    /// Its convolutions with their BatchNorms: the path's, then the projection.
    fn conv_bns(&self) -> impl Iterator<Item = &ConvBn> {
        self.path.iter().chain(&self.downsample)
    }
}

/// The blocks of one `layerN`: on the CPU one fused op ([`kernels::residual_blocks`]),
/// elsewhere candle's ops block by block.
struct Stage(Vec<Block>);

impl Stage {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if kernels::on_cpu_f32(x) {
            return self.fused(x, mode);
        }
        let mut x = x.clone();
        for block in &self.0 {
            x = block.forward(&x, mode)?;
        }
        Ok(x)
    }

    fn fused(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        BatchNorm::count(x, mode)?;
        let conv_bns = || self.0.iter().flat_map(Block::conv_bns);
        let params = conv_bns().flat_map(|cb| [cb.conv.weight(), cb.bn.weight(), cb.bn.bias()]);
        let inputs = fused_inputs(x, params, conv_bns().map(|cb| &cb.bn), mode)?;
        let (y, stats) = kernels::residual_blocks(
            &inputs.x,
            &inputs.packed,
            self.0.iter().map(|b| b.spec.clone()).collect(),
            inputs.running,
            inputs.frozen,
        )?;
        record_fused(conv_bns().map(|cb| &cb.bn), stats)?;
        Ok(y)
    }
}

/// Everything of torchvision's ResNet before `avgpool`.
pub(crate) struct ResNet {
    stem: ConvBn,
    stages: Vec<Stage>,
}

impl ResNet {
    pub(crate) fn new(b: &mut Builder, cfg: &ResNetConfig, in_channels: usize) -> Result<Self> {
        let stem = ConvBn::new(b, "conv1", "bn1", ConvSpec::same(in_channels, 64, 7, 2))?;
        let mut channels = 64;
        let mut stages = Vec::with_capacity(4);
        for (i, &blocks) in cfg.layers.iter().enumerate() {
            let planes = 64 << i;
            let stride = if i == 0 { 1 } else { 2 };
            let stage = (0..blocks)
                .map(|j| {
                    let name = format!("layer{}.{j}", i + 1);
                    let (c_in, s) = if j == 0 {
                        (channels, stride)
                    } else {
                        (planes * cfg.block.expansion(), 1)
                    };
                    Block::new(b, &name, cfg, c_in, planes, s)
                })
                .collect::<Result<Vec<_>>>()?;
            channels = planes * cfg.block.expansion();
            stages.push(Stage(stage));
        }
        Ok(Self { stem, stages })
    }

    /// The output of `layer4`, which the heads average over space as it is (and Grad-CAM
    /// explains).
    pub(crate) fn features(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = self.stem.forward_relu(x, mode)?;
        let mut x = max_pool2d(&x, 3, 2, 1)?;
        for stage in &self.stages {
            x = stage.forward(&x, mode)?;
        }
        Ok(x)
    }
}
