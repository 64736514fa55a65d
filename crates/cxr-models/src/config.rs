//! What to build: architecture, input channels and heads.
//!
//! The study compares architectures by name ("densenet121", "resnet50"), so [`Architecture`]
//! parses torchvision's names; the tests and ablations also need the tiny variants, so every
//! family is a plain configuration struct with torchvision's constructor arguments. The whole
//! configuration is serialisable: it is written into each checkpoint so that a checkpoint alone
//! is enough to rebuild its model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// torchvision `DenseNet(growth_rate, block_config, num_init_features, bn_size)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenseNetConfig {
    /// Channels each dense layer adds (`k` in the paper).
    pub growth_rate: usize,
    /// Number of dense layers in each dense block.
    pub block_config: Vec<usize>,
    /// Bottleneck width as a multiple of the growth rate.
    pub bn_size: usize,
    /// Channels of the stem convolution.
    pub num_init_features: usize,
}

impl DenseNetConfig {
    /// torchvision `densenet121`.
    pub fn densenet121() -> Self {
        Self::standard(vec![6, 12, 24, 16])
    }

    /// torchvision `densenet169`.
    pub fn densenet169() -> Self {
        Self::standard(vec![6, 12, 32, 32])
    }

    /// torchvision `densenet201`.
    pub fn densenet201() -> Self {
        Self::standard(vec![6, 12, 48, 32])
    }

    fn standard(block_config: Vec<usize>) -> Self {
        Self {
            growth_rate: 32,
            block_config,
            bn_size: 4,
            num_init_features: 64,
        }
    }

    /// Channels of the final feature map (the input size of the heads).
    pub fn num_features(&self) -> usize {
        let mut features = self.num_init_features;
        for (i, layers) in self.block_config.iter().enumerate() {
            features += layers * self.growth_rate;
            if i + 1 != self.block_config.len() {
                features /= 2;
            }
        }
        features
    }
}

/// The residual block of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResidualBlock {
    /// Two 3x3 convolutions (resnet18, resnet34).
    Basic,
    /// 1x1, 3x3, 1x1 convolutions with 4x expansion (resnet50, resnet101, resnet152).
    Bottleneck,
}

impl ResidualBlock {
    /// Output channels of a block relative to its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

/// torchvision `ResNet(block, layers, width_per_group=...)` (groups = 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Block type.
    pub block: ResidualBlock,
    /// Number of blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Bottleneck width per group (64 in the standard models; must be 64 for basic blocks).
    pub width_per_group: usize,
}

impl ResNetConfig {
    /// torchvision `resnet18`.
    pub fn resnet18() -> Self {
        Self::standard(ResidualBlock::Basic, [2, 2, 2, 2])
    }

    /// torchvision `resnet34`.
    pub fn resnet34() -> Self {
        Self::standard(ResidualBlock::Basic, [3, 4, 6, 3])
    }

    /// torchvision `resnet50`.
    pub fn resnet50() -> Self {
        Self::standard(ResidualBlock::Bottleneck, [3, 4, 6, 3])
    }

    /// torchvision `resnet101`.
    pub fn resnet101() -> Self {
        Self::standard(ResidualBlock::Bottleneck, [3, 4, 23, 3])
    }

    /// torchvision `resnet152`.
    pub fn resnet152() -> Self {
        Self::standard(ResidualBlock::Bottleneck, [3, 8, 36, 3])
    }

    fn standard(block: ResidualBlock, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers,
            width_per_group: 64,
        }
    }

    /// Channels of the final feature map (the input size of the heads).
    pub fn num_features(&self) -> usize {
        512 * self.block.expansion()
    }
}

/// A backbone family and its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// DenseNet-BC.
    DenseNet(DenseNetConfig),
    /// ResNet v1.5 (stride in the 3x3 convolution), as torchvision builds it.
    ResNet(ResNetConfig),
}

/// The names [`Architecture::from_str`] accepts.
pub const ARCHITECTURE_NAMES: [&str; 8] = [
    "densenet121",
    "densenet169",
    "densenet201",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
];

/// The small models of the golden files (`shared/golden/make_golden.py`): the layer types of
/// the full-size ones at a few thousand to a few million parameters. The golden tests and
/// `cxr-train gpu-check` build them with [`Architecture::tiny`].
pub const TINY_ARCHITECTURE_NAMES: [&str; 3] = [
    "tiny_densenet",
    "tiny_resnet_basic",
    "tiny_resnet_bottleneck",
];

impl Architecture {
    /// One of [`TINY_ARCHITECTURE_NAMES`], as the golden files were made.
    pub fn tiny(name: &str) -> Option<Self> {
        let resnet = |block, width_per_group| {
            Self::ResNet(ResNetConfig {
                block,
                layers: [1, 1, 1, 1],
                width_per_group,
            })
        };
        Some(match name {
            "tiny_densenet" => Self::DenseNet(DenseNetConfig {
                growth_rate: 8,
                block_config: vec![1, 2, 2, 1],
                bn_size: 2,
                num_init_features: 16,
            }),
            "tiny_resnet_basic" => resnet(ResidualBlock::Basic, 64),
            "tiny_resnet_bottleneck" => resnet(ResidualBlock::Bottleneck, 16),
            _ => return None,
        })
    }

    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "densenet121" => Self::DenseNet(DenseNetConfig::densenet121()),
            "densenet169" => Self::DenseNet(DenseNetConfig::densenet169()),
            "densenet201" => Self::DenseNet(DenseNetConfig::densenet201()),
            "resnet18" => Self::ResNet(ResNetConfig::resnet18()),
            "resnet34" => Self::ResNet(ResNetConfig::resnet34()),
            "resnet50" => Self::ResNet(ResNetConfig::resnet50()),
            "resnet101" => Self::ResNet(ResNetConfig::resnet101()),
            "resnet152" => Self::ResNet(ResNetConfig::resnet152()),
            _ => return None,
        })
    }

    /// Channels of the final feature map, i.e. the input size of every head.
    pub fn num_features(&self) -> usize {
        match self {
            Self::DenseNet(c) => c.num_features(),
            Self::ResNet(c) => c.num_features(),
        }
    }

    /// torchvision's name of the first convolution's weight, the tensor that depends on the
    /// number of input channels.
    pub fn first_conv_weight(&self) -> &'static str {
        match self {
            Self::DenseNet(_) => "features.conv0.weight",
            Self::ResNet(_) => "conv1.weight",
        }
    }

    /// torchvision's name of the classification layer, used for the primary head.
    pub fn primary_head_prefix(&self) -> &'static str {
        match self {
            Self::DenseNet(_) => "classifier",
            Self::ResNet(_) => "fc",
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        match self {
            Self::DenseNet(c) => {
                if c.growth_rate == 0 || c.bn_size == 0 || c.num_init_features == 0 {
                    return bad(format!("DenseNet sizes must be positive: {c:?}"));
                }
                if c.block_config.is_empty() || c.block_config.contains(&0) {
                    return bad(format!(
                        "DenseNet block_config needs at least one block and no empty block: {:?}",
                        c.block_config
                    ));
                }
            }
            Self::ResNet(c) => {
                if c.layers.contains(&0) {
                    return bad(format!("every ResNet stage needs a block: {:?}", c.layers));
                }
                if c.block == ResidualBlock::Basic && c.width_per_group != 64 {
                    return bad(
                        "basic-block ResNets only support width_per_group = 64 (as torchvision)"
                            .into(),
                    );
                }
                if c.block == ResidualBlock::Bottleneck && c.width_per_group < 4 {
                    return bad(format!(
                        "width_per_group {} leaves layer1 without channels; use at least 4",
                        c.width_per_group
                    ));
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Architecture {
    type Err = ModelError;

    /// Parses torchvision's names, e.g. `"densenet121"` or `"ResNet50"` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim().to_ascii_lowercase();
        Self::named(&name).ok_or_else(|| ModelError::UnknownArchitecture {
            name: s.to_string(),
            known: ARCHITECTURE_NAMES.join(", "),
        })
    }
}

impl fmt::Display for Architecture {
    /// torchvision's name for a standard configuration, the full parameters otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = ARCHITECTURE_NAMES
            .iter()
            .find(|n| Self::named(n).as_ref() == Some(self))
        {
            return f.write_str(name);
        }
        match self {
            Self::DenseNet(c) => write!(
                f,
                "densenet(growth_rate={}, block_config={:?}, bn_size={}, num_init_features={})",
                c.growth_rate, c.block_config, c.bn_size, c.num_init_features
            ),
            Self::ResNet(c) => write!(
                f,
                "resnet(block={:?}, layers={:?}, width_per_group={})",
                c.block, c.layers, c.width_per_group
            ),
        }
    }
}

/// One output head: a linear layer on the pooled features.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Name, e.g. `"pathologies"`; letters, digits, `_` and `-` only (it becomes a tensor name).
    pub name: String,
    /// Number of outputs (logits).
    pub outputs: usize,
    /// Optional names of the outputs, e.g. the 14 pathologies; empty, or exactly `outputs` long.
    #[serde(default)]
    pub classes: Vec<String>,
}

impl HeadSpec {
    /// A head with unnamed outputs.
    pub fn new(name: impl Into<String>, outputs: usize) -> Self {
        Self {
            name: name.into(),
            outputs,
            classes: Vec::new(),
        }
    }

    /// A head with one output per named class.
    pub fn with_classes(name: impl Into<String>, classes: Vec<String>) -> Self {
        Self {
            name: name.into(),
            outputs: classes.len(),
            classes,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(ModelError::InvalidConfig(format!(
                "head name {:?} must be non-empty and use only letters, digits, '_' and '-'",
                self.name
            )));
        }
        if self.outputs == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "head {:?} needs at least one output",
                self.name
            )));
        }
        if !self.classes.is_empty() && self.classes.len() != self.outputs {
            return Err(ModelError::InvalidConfig(format!(
                "head {:?} has {} outputs but {} class names",
                self.name,
                self.outputs,
                self.classes.len()
            )));
        }
        Ok(())
    }
}

/// Everything needed to build a model. The first head is the primary one and gets torchvision's
/// name (`classifier` / `fc`); the others are auxiliary (`heads.<name>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Backbone.
    pub arch: Architecture,
    /// 1 for grey X-rays, 3 for RGB (ImageNet) input.
    pub in_channels: usize,
    /// Output heads, primary first.
    pub heads: Vec<HeadSpec>,
}

impl ModelConfig {
    /// Checks the configuration; [`crate::Model::new`] calls this.
    pub fn validate(&self) -> Result<()> {
        self.arch.validate()?;
        if self.in_channels != 1 && self.in_channels != 3 {
            return Err(ModelError::InvalidConfig(format!(
                "in_channels must be 1 (grey X-ray) or 3 (RGB), got {}",
                self.in_channels
            )));
        }
        if self.heads.is_empty() {
            return Err(ModelError::InvalidConfig(
                "a model needs at least one head; the first is the primary head".into(),
            ));
        }
        for (i, head) in self.heads.iter().enumerate() {
            head.validate()?;
            if self.heads[..i].iter().any(|h| h.name == head.name) {
                return Err(ModelError::InvalidConfig(format!(
                    "head name {:?} is used twice",
                    head.name
                )));
            }
        }
        Ok(())
    }

    /// A one-line description, used in messages.
    pub fn describe(&self) -> String {
        let heads: Vec<String> = self
            .heads
            .iter()
            .map(|h| format!("{}({})", h.name, h.outputs))
            .collect();
        format!(
            "{} with {} input channel{}, heads {}",
            self.arch,
            self.in_channels,
            if self.in_channels == 1 { "" } else { "s" },
            heads.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_torchvision_names() {
        for name in ARCHITECTURE_NAMES {
            let arch: Architecture = name.parse().unwrap();
            assert_eq!(arch.to_string(), name);
        }
        assert_eq!(
            "ResNet50".parse::<Architecture>().unwrap(),
            Architecture::ResNet(ResNetConfig::resnet50())
        );
        let err = "vgg16".parse::<Architecture>().unwrap_err().to_string();
        assert!(
            err.contains("densenet121") && err.contains("vgg16"),
            "{err}"
        );
    }

    #[test]
    fn feature_sizes_match_torchvision() {
        let sizes: Vec<usize> = ARCHITECTURE_NAMES
            .iter()
            .map(|n| n.parse::<Architecture>().unwrap().num_features())
            .collect();
        assert_eq!(sizes, [1024, 1664, 1920, 512, 512, 2048, 2048, 2048]);
    }

    #[test]
    fn rejects_bad_configs() {
        let arch = Architecture::DenseNet(DenseNetConfig::densenet121());
        let config = |in_channels, heads| ModelConfig {
            arch: arch.clone(),
            in_channels,
            heads,
        };
        assert!(config(2, vec![HeadSpec::new("a", 1)]).validate().is_err());
        assert!(config(1, vec![]).validate().is_err());
        let dup = vec![HeadSpec::new("a", 1), HeadSpec::new("a", 2)];
        assert!(config(1, dup).validate().is_err());
        assert!(config(1, vec![HeadSpec::new("a.b", 1)]).validate().is_err());
        let classes = HeadSpec {
            classes: vec!["x".into()],
            ..HeadSpec::new("a", 2)
        };
        assert!(config(1, vec![classes]).validate().is_err());
        assert!(config(1, vec![HeadSpec::new("sex", 1)]).validate().is_ok());
    }
}
