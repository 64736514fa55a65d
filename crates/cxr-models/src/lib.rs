//! DenseNet and ResNet families in candle, numerically identical to torchvision.
//!
//! The study pretrains and compares torchvision's chest X-ray classifiers, so the models here are
//! torchvision's, layer for layer: the same tensor names (a checkpoint moves between this crate
//! and PyTorch unchanged), the same initialisation schemes, the same BatchNorm train/eval
//! behaviour, and golden tests against PyTorch's own numbers (`tests/golden.rs`). [`grad_cam`]
//! explains a model's output with Grad-CAM, as the `pytorch-grad-cam` library computes it.
//!
//! A [`Model`] is a backbone plus named heads, built from a [`ModelConfig`]:
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use cxr_models::{bce_with_logits, HeadSpec, LoadOptions, Mode, Model, ModelConfig, SaveOptions};
//!
//! # fn main() -> cxr_models::Result<()> {
//! let config = ModelConfig {
//!     arch: "densenet121".parse()?,
//!     in_channels: 1,
//!     heads: vec![HeadSpec::new("pathologies", 14), HeadSpec::new("sex", 1)],
//! };
//! let mut model = Model::new(config, &Device::Cpu, 42)?;
//! // ImageNet weights: 1000 classes and RGB, so the heads are re-initialised (non-strict) and
//! // the first convolution is summed over RGB.
//! let report = model.load("densenet121-imagenet.safetensors", LoadOptions::non_strict())?;
//! eprintln!("{report}");
//! let optimiser_vars = model.trainable_vars(); // no BatchNorm buffers
//! let x = Tensor::zeros((8, 1, 224, 224), candle_core::DType::F32, &Device::Cpu)?;
//! let out = model.forward(&x, Mode::Train)?;
//! let targets = out.primary().zeros_like()?;
//! let loss = bce_with_logits(out.primary(), &targets, None)?;
//! let grads = loss.backward()?;
//! model.save("checkpoint.safetensors", &SaveOptions::default())?;
//! # let _ = (optimiser_vars, grads);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cuda")]
mod batchnorm_cuda;
mod config;
#[cfg(feature = "cudnn")]
pub mod cudnn;
mod densenet;
mod device;
mod error;
mod finite;
pub mod grad_cam;
mod heads;
mod init;
mod kernels;
mod layers;
mod loss;
mod model;
mod precision;
mod resnet;
mod state;
mod weights;

pub use config::{
    Architecture, DenseNetConfig, HeadSpec, ModelConfig, ResNetConfig, ResidualBlock,
    ARCHITECTURE_NAMES, TINY_ARCHITECTURE_NAMES,
};
pub use device::{device, gpu_memory, GpuMemory};
pub use error::{ModelError, NonFiniteTensor, Result, TensorMismatch, WeightMismatch};
pub use finite::check_finite;
pub use grad_cam::GradCam;
pub use kernels::{can_update_in_place, update_in_place, with_candle_ops};
pub use layers::Mode;
pub use loss::bce_with_logits;
pub use model::{Inference, Model, ModelOutput};
pub use precision::{matmul, Precision};
pub use weights::{
    read_metadata, read_weights, write_weights, CheckpointMetadata, LoadOptions, LoadReport,
    ReinitialisedHead, SaveOptions,
};
