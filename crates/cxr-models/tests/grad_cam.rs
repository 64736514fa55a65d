//! Grad-CAM against the `pytorch-grad-cam` library on the same weights and images.
//!
//! `tests/data/grad_cam.safetensors` is made by `tests/reference/gradcam.py` (PyTorch and the
//! library's `GradCAM`) from the golden tiny models of the shared folder and two real NIH films
//! at 160 px (5 x 5 feature maps). Tolerance: every value within 1e-4 of the reference's largest
//! value, for the raw map (`ReLU(sum_k alpha_k A_k)`), the channel weights and the 160 x 160
//! heatmap the library returns; the models' own logits agree with PyTorch to about 1e-6 (see
//! `golden.rs`), and float summation order is all that should differ.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{device, golden_config, golden_dir, max_diff};
use cxr_models::grad_cam::heatmap;
use cxr_models::{read_weights, LoadOptions, Model};
use std::collections::HashMap;
use std::path::Path;

const TOLERANCE: f64 = 1e-4;

fn golden() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/grad_cam.safetensors");
    read_weights(path, &Device::Cpu)
        .expect("tests/data/grad_cam.safetensors (tests/reference/gradcam.py makes it)")
        .into_iter()
        .collect()
}

/// Our Grad-CAM of the golden model `name` and the reference's, compared.
fn check(name: &str) {
    let io = golden();
    let want = |what: &str| io[&format!("{name}.{what}")].clone();
    let dev = device();
    let mut model = Model::new(golden_config(name), &dev, 0).unwrap();
    model
        .load(
            golden_dir().join(format!("{name}.safetensors")),
            LoadOptions::strict(),
        )
        .unwrap();
    let target = want("target").to_scalar::<i64>().unwrap() as usize;
    let input = io["input"].to_device(&dev).unwrap();
    let got = model.grad_cam(&input, "pathologies", target).unwrap();
    let on_cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();

    let mut report = Vec::new();
    for (what, ours) in [
        ("logits", on_cpu(&got.logits)),
        ("weights", on_cpu(&got.weights)),
        ("cam", on_cpu(&got.cam)),
    ] {
        let (abs, rel) = max_diff(&ours, &want(what));
        report.push(format!("{what} {abs:.2e} ({rel:.2e} of the largest)"));
        assert!(
            rel < TOLERANCE,
            "{name}: {what} differs by {rel:.2e} of its largest value"
        );
    }

    // The library's heatmap from our raw map, image by image.
    let cam = on_cpu(&got.cam);
    let (n, h, w) = cam.dims3().unwrap();
    let reference = want("heatmap");
    let size = reference.dim(1).unwrap();
    for i in 0..n {
        let raw: Vec<f32> = cam
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ours = Tensor::from_vec(
            heatmap(&raw, (h, w), (size, size)),
            (size, size),
            &Device::Cpu,
        )
        .unwrap();
        let (abs, _) = max_diff(&ours, &reference.get(i).unwrap());
        report.push(format!("heatmap {i} {abs:.2e}"));
        assert!(
            abs < TOLERANCE,
            "{name}: heatmap of image {i} differs by {abs:.2e}"
        );
    }
    eprintln!("{name} against pytorch-grad-cam: {}", report.join(", "));
}

#[test]
fn densenet_matches_pytorch_grad_cam() {
    check("tiny_densenet");
}

#[test]
fn resnet_matches_pytorch_grad_cam() {
    check("tiny_resnet_basic");
}

/// The images of a batch are explained independently: one image alone gives its own map.
#[test]
fn an_image_alone_gives_the_map_it_gets_in_a_batch() {
    let io = golden();
    let dev = device();
    let mut model = Model::new(golden_config("tiny_resnet_basic"), &dev, 0).unwrap();
    model
        .load(
            golden_dir().join("tiny_resnet_basic.safetensors"),
            LoadOptions::strict(),
        )
        .unwrap();
    let input = io["input"].to_device(&dev).unwrap();
    let both = model.grad_cam(&input, "pathologies", 9).unwrap();
    let second = model
        .grad_cam(&input.narrow(0, 1, 1).unwrap(), "pathologies", 9)
        .unwrap();
    let (abs, _) = max_diff(
        &second.cam.get(0).unwrap().to_dtype(DType::F32).unwrap(),
        &both.cam.get(1).unwrap(),
    );
    assert!(abs < 1e-7, "{abs:e}");
}

#[test]
fn unknown_heads_and_outputs_are_refused() {
    let model = Model::new(golden_config("tiny_resnet_basic"), &Device::Cpu, 0).unwrap();
    let x = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = model.grad_cam(&x, "sex", 0).unwrap_err().to_string();
    assert!(
        err.contains("no head `sex` (its heads: pathologies)"),
        "{err}"
    );
    let err = model
        .grad_cam(&x, "pathologies", 14)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has 14 outputs; output 14 does not exist"),
        "{err}"
    );
}
