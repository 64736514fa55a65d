//! Helpers shared by the integration tests: where the golden files are, the golden models'
//! configurations, and tensor comparisons.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cxr_models::{Architecture, HeadSpec, ModelConfig, ResidualBlock};

/// The device the model tests run on: the one `CXR_TEST_DEVICE` names (cpu, cuda or cuda:N),
/// the CPU when it is unset. With cuDNN, TF32 is turned off: the golden tolerances are for f32
/// products.
pub fn device() -> Device {
    let spec = std::env::var("CXR_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    #[cfg(feature = "cudnn")]
    cxr_models::cudnn::set_tf32(false);
    cxr_models::device(&spec).unwrap_or_else(|e| panic!("CXR_TEST_DEVICE: {e}"))
}

/// `$CXR_SHARED/golden/models`, by default `shared/golden/models` beside the repository
/// (`cxr_core::testdata`; `golden/make_golden.py` there regenerates the files if they are lost).
pub fn golden_dir() -> PathBuf {
    cxr_core::testdata::shared_path("golden/models/tiny_densenet.safetensors");
    cxr_core::testdata::shared_dir().join("golden/models")
}

pub fn tiny_densenet() -> Architecture {
    Architecture::tiny("tiny_densenet").unwrap()
}

pub fn tiny_resnet(block: ResidualBlock) -> Architecture {
    let name = match block {
        ResidualBlock::Basic => "tiny_resnet_basic",
        ResidualBlock::Bottleneck => "tiny_resnet_bottleneck",
    };
    Architecture::tiny(name).unwrap()
}

/// The configuration `make_golden.py` used for a golden model: 14 outputs, and one input channel
/// for the tiny models.
pub fn golden_config(name: &str) -> ModelConfig {
    let (arch, in_channels) = match name {
        "densenet121" => ("densenet121".parse().unwrap(), 3),
        "tiny_densenet" => (tiny_densenet(), 1),
        "tiny_resnet_basic" => (tiny_resnet(ResidualBlock::Basic), 1),
        "tiny_resnet_bottleneck" => (tiny_resnet(ResidualBlock::Bottleneck), 1),
        other => panic!("no golden model {other}"),
    };
    ModelConfig {
        arch,
        in_channels,
        heads: vec![HeadSpec::new("pathologies", 14)],
    }
}

/// Largest absolute difference and that difference relative to the largest reference magnitude.
pub fn max_diff(got: &Tensor, want: &Tensor) -> (f64, f64) {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let flat = |t: &Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (got, want) = (flat(got), flat(want));
    // `f64::max` below skips NaN, which would hide a value the kernels left unwritten.
    let bad = got.iter().position(|v| !v.is_finite());
    assert!(bad.is_none(), "value {bad:?} is not finite");
    let max_abs = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    (max_abs, max_abs / scale.max(1e-30))
}

/// Whether two tensors hold exactly the same bits (same dtype and shape).
pub fn bit_identical(a: &Tensor, b: &Tensor) -> bool {
    if a.dtype() != b.dtype() || a.dims() != b.dims() {
        return false;
    }
    let bytes = |t: &Tensor| -> Vec<u8> {
        match t.dtype() {
            DType::I64 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            _ => t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
        }
    };
    bytes(a) == bytes(b)
}
