//! bf16 numerics: the tiny golden models in bf16 against torchvision's f32 numbers.
//!
//! On a GPU, `Precision::Bf16` runs convolutions and matrix products on bf16 tensor cores; on the
//! CPU the same arithmetic is emulated on candle's ops (operands and outputs rounded to bf16,
//! products accumulated in f32), which is what this test runs, so that bf16's numbers are
//! checked where no GPU is. `cxr-train gpu-check --precision bf16` compares a GPU against this
//! emulation.
//!
//! The tolerances, as relative L2 errors against f32 unless said otherwise:
//! - bf16 keeps 8 significant bits: rounding an operand errs by up to 2^-9 (2.0e-3) relative, so
//!   each product carries up to 4e-3 from its two operands, and the output's rounding adds 2e-3.
//!   Summed over hundreds of terms of mixed signs the errors partly cancel, so one layer's output
//!   is off by a few 1e-3; BatchNorm renormalises after every convolution, so layers add errors
//!   rather than multiply them: about sqrt(L) x 4e-3 after L layers, 1.5e-2 for the tiny
//!   models' 9 to 14 convolutions. Logits are held to 5e-2 (measured 3e-3 to 3.3e-2; train mode
//!   is the larger, its BatchNorm normalising over as few as 2 values per channel) and the loss,
//!   an average, to 1e-2 (measured up to 1.2e-3).
//! - The head's weight gradient (pooled features times the logits' gradient, no decision in
//!   between) is held to 1e-1 (measured 1.5e-2 to 3.0e-2).
//! - The other gradients (convolutions', and BatchNorm's below the head) gather every ReLU and
//!   max-pool decision below the head, and are ill-conditioned in any precision (golden.rs: a 1e-7 relative change of the input moves
//!   the first convolution's gradient by 4e-3 in f32); bf16's rounding moves them by 10% to 75%
//!   (measured). What training needs from them is their direction and size: their cosine with
//!   f32's must be at least 0.7 (measured 0.77 to 0.99) and their norm within 25% (measured
//!   0.99 to 1.16).
//! - And bf16 must be in effect: the eval logits differ from f32's by more than 1e-3 (f32
//!   agrees with PyTorch to 1e-5, see golden.rs).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{golden_config, golden_dir};
use cxr_models::{bce_with_logits, LoadOptions, Mode, Model, Precision};

/// The values of a tensor as f64.
fn values(t: &Tensor) -> Vec<f64> {
    let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let v: Vec<f64> = t.to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "not finite");
    v
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `||got - want|| / ||want||`.
fn rel_l2(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (values(got), values(want));
    let diff: Vec<f64> = g.iter().zip(&w).map(|(a, b)| a - b).collect();
    norm(&diff) / norm(&w)
}

/// The cosine of the angle between two tensors, and the ratio of their norms.
fn direction_and_size(got: &Tensor, want: &Tensor) -> (f64, f64) {
    let (g, w) = (values(got), values(want));
    let dot: f64 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
    (dot / (norm(&g) * norm(&w)), norm(&g) / norm(&w))
}

#[test]
fn bf16_tiny_models_stay_near_f32() {
    let cpu = Device::Cpu;
    let mut report = String::from("\nbf16 (emulated on the CPU) against torchvision in f32:\n");
    for name in cxr_models::TINY_ARCHITECTURE_NAMES {
        let dir = golden_dir();
        let io = candle_core::safetensors::load(dir.join(format!("{name}_io.safetensors")), &cpu)
            .unwrap();
        let mut model = Model::new(golden_config(name), &cpu, 0).unwrap();
        let weights = dir.join(format!("{name}.safetensors"));
        model.load(weights, LoadOptions::strict()).unwrap();
        model.set_precision(Precision::Bf16);
        let (eval, train, loss, grads) = cxr_models::with_candle_ops(|| {
            let eval = model.forward(&io["input"], Mode::Eval).unwrap();
            let train = model.forward(&io["input"], Mode::Train).unwrap();
            let loss = bce_with_logits(train.primary(), &io["target"], None).unwrap();
            let grads = loss.backward().unwrap();
            (eval, train, loss, grads)
        });

        let mut checks = vec![
            ("eval logits", rel_l2(eval.primary(), &io["output"]), 5e-2),
            (
                "train logits",
                rel_l2(train.primary(), &io["output_train"]),
                5e-2,
            ),
            ("loss", rel_l2(&loss, &io["loss_train"]), 1e-2),
        ];
        let bf16_in_effect = checks[0].1 > 1e-3;
        let head = format!("{}.weight", model.config().arch.primary_head_prefix());
        let params: HashMap<String, _> = model.named_parameters().into_iter().collect();
        let mut names: Vec<&String> = io.keys().filter(|k| k.starts_with("grad.")).collect();
        names.sort();
        for key in names {
            let param = &key["grad.".len()..];
            let got = grads.get(params[param].as_tensor()).unwrap();
            if param == head {
                checks.push(("head gradient", rel_l2(got, &io[key]), 1e-1));
                continue;
            }
            let (cosine, size) = direction_and_size(got, &io[key]);
            report += &format!("  {name:<24} {param}: cosine {cosine:.4}, norm ratio {size:.3}\n");
            assert!(
                cosine >= 0.7 && (0.75..=1.25).contains(&size),
                "{name}: {param}'s gradient points elsewhere: cosine {cosine:.3}, norm ratio \
                 {size:.3}{report}"
            );
        }
        for (what, err, tol) in checks {
            report += &format!("  {name:<24} {what}: {err:.2e} (at most {tol:.0e})\n");
            assert!(
                err <= tol,
                "{name}: {what} off by {err:.2e} > {tol:.0e}{report}"
            );
        }
        assert!(bf16_in_effect, "{name}: bf16 is not in effect{report}");
    }
    eprintln!("{report}");
}

#[test]
fn bf16_is_refused_on_the_cpu_kernels() {
    let mut model = Model::new(golden_config("tiny_densenet"), &Device::Cpu, 0).unwrap();
    model.set_precision(Precision::Bf16);
    let x = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward(&x, Mode::Eval).unwrap_err().to_string();
    assert!(err.contains("bf16 runs on CUDA"), "{err}");
}
