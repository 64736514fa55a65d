//! Save a randomly initialised DenseNet121 (14 outputs, 3 input channels) with a fixed input and
//! its eval-mode logits, so `tests/reference/torch_interop.py` can show that PyTorch's
//! `torchvision.models.densenet121(num_classes=14).load_state_dict` accepts our checkpoint and
//! computes the same logits.
//!
//! Usage: cargo run --release -p cxr-models --example torch_interop -- OUT_DIR

use candle_core::{Device, Tensor};
use cxr_models::{Architecture, HeadSpec, Mode, Model, ModelConfig, SaveOptions};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: torch_interop OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let device = Device::Cpu;
    let config = ModelConfig {
        arch: "densenet121".parse::<Architecture>()?,
        in_channels: 3,
        heads: vec![HeadSpec::new("pathologies", 14)],
    };
    let model = Model::new(config, &device, 7)?;
    let input = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &device)?;
    let logits = model.forward(&input, Mode::Eval)?.primary().clone();
    model.save(out.join("densenet121.safetensors"), &SaveOptions::default())?;
    let io = std::collections::HashMap::from([
        ("input".to_string(), input),
        ("logits".to_string(), logits),
    ]);
    candle_core::safetensors::save(&io, out.join("io.safetensors"))?;
    Ok(())
}
