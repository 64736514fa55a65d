//! Weight files holding NaN or infinity are refused by every way of loading them, naming the
//! file and the tensors, and the model is left as it was.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cxr_models::{
    read_weights, Architecture, HeadSpec, LoadOptions, Model, ModelConfig, ModelError,
    NonFiniteTensor, SaveOptions,
};

fn tiny_model(seed: u64) -> Model {
    let config = ModelConfig {
        arch: Architecture::tiny("tiny_resnet_basic").unwrap(),
        in_channels: 1,
        heads: vec![HeadSpec::new("pathologies", 3)],
    };
    Model::new(config, &Device::Cpu, seed).unwrap()
}

/// `tensor` with its first `count` values replaced by `value`.
fn poisoned(tensor: &Tensor, count: usize, value: f32) -> Tensor {
    let mut values = tensor
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    values[..count].fill(value);
    Tensor::from_vec(values, tensor.dims(), &Device::Cpu).unwrap()
}

fn non_finite(err: ModelError) -> (std::path::PathBuf, Vec<NonFiniteTensor>) {
    match err {
        ModelError::NonFinite { path, tensors } => (path, tensors),
        other => panic!("expected a non-finite refusal, got {other}"),
    }
}

fn write(path: &Path, tensors: &[(String, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

/// A checkpoint with one NaN convolution and a few infinite values elsewhere: `load` and
/// `read_weights` refuse it naming both tensors and their counts, and the model keeps its weights.
#[test]
fn load_refuses_nan_and_infinity_naming_file_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.safetensors");
    let source = tiny_model(1);
    let first_conv = source.config().arch.first_conv_weight().to_string();
    let mut tensors = source.state_dict().unwrap();
    let mut infinite_name = String::new();
    for (name, t) in tensors.iter_mut() {
        if *name == first_conv {
            *t = poisoned(t, t.elem_count(), f32::NAN);
        } else if name.ends_with("running_var") && infinite_name.is_empty() {
            *t = poisoned(t, 2, f32::INFINITY);
            infinite_name = name.clone();
        }
    }
    write(&path, &tensors);

    let mut model = tiny_model(2);
    let before = model.state_dict().unwrap();
    let err = model.load(&path, LoadOptions::strict()).unwrap_err();
    let message = err.to_string();
    let conv_count = source.state_dict().unwrap()[0].1.elem_count();
    for expected in [
        path.display().to_string(),
        format!("{first_conv}: {conv_count} of {conv_count} values non-finite ({conv_count} NaN)"),
        format!("{infinite_name}: 2 of "),
        "2 infinite".to_string(),
    ] {
        assert!(message.contains(&expected), "no `{expected}` in\n{message}");
    }
    let (file, bad) = non_finite(err);
    assert_eq!(file, path);
    assert_eq!(bad.len(), 2, "{bad:?}");
    // Nothing was loaded.
    for ((name, a), (_, b)) in before.iter().zip(model.state_dict().unwrap()) {
        let diff = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name} changed");
    }
    let err = read_weights(&path, &Device::Cpu).unwrap_err();
    assert_eq!(non_finite(err).1.len(), 2);
    // Non-strict (ImageNet-style) loads are refused alike.
    let err = model.load(&path, LoadOptions::non_strict()).unwrap_err();
    assert_eq!(non_finite(err).1.len(), 2);
}

/// A cxr checkpoint (metadata included) whose weights went NaN in training, as a diverged run
/// saves it: `from_checkpoint`, what prediction uses, refuses it.
#[test]
fn from_checkpoint_refuses_a_diverged_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best.safetensors");
    let mut model = tiny_model(3);
    let mut tensors = model.state_dict().unwrap();
    let index = tensors
        .iter()
        .position(|(n, _)| n.starts_with("layer1.") && n.ends_with("conv2.weight"))
        .unwrap();
    let name = tensors[index].0.clone();
    tensors[index].1 = poisoned(&tensors[index].1, 1, f32::NAN);
    // In memory nothing is checked (no file to blame); the save writes the NaN out.
    model
        .load_state_dict(tensors, LoadOptions::strict())
        .unwrap();
    model.save(&path, &SaveOptions::default()).unwrap();

    let err = match Model::from_checkpoint(&path, &Device::Cpu) {
        Err(err) => err,
        Ok(_) => panic!("a checkpoint holding NaN loaded"),
    };
    let (file, bad) = non_finite(err);
    assert_eq!(file, path);
    assert_eq!(bad.len(), 1);
    assert_eq!(
        (bad[0].name.as_str(), bad[0].nan, bad[0].infinite),
        (name.as_str(), 1, 0)
    );
}

/// Half-precision and f64 files are checked too; integer tensors (`num_batches_tracked`) have
/// no such values; a clean file of any of them loads.
#[test]
fn every_float_dtype_is_checked_and_integers_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let clean = tiny_model(4).state_dict().unwrap();
    for dtype in [DType::F16, DType::BF16, DType::F64, DType::F32] {
        let convert = |tensors: &[(String, Tensor)]| -> Vec<(String, Tensor)> {
            tensors
                .iter()
                .map(|(n, t)| {
                    let t = if t.dtype().is_float() {
                        t.to_dtype(dtype).unwrap()
                    } else {
                        t.clone()
                    };
                    (n.clone(), t)
                })
                .collect()
        };
        let good = dir.path().join(format!("good-{dtype:?}.safetensors"));
        write(&good, &convert(&clean));
        let mut model = tiny_model(5);
        model.load(&good, LoadOptions::strict()).unwrap();

        let mut bad = clean.clone();
        let last = bad.len() - 1;
        bad[last].1 = poisoned(&bad[last].1, 1, f32::NEG_INFINITY);
        let path = dir.path().join(format!("bad-{dtype:?}.safetensors"));
        write(&path, &convert(&bad));
        let err = model.load(&path, LoadOptions::strict()).unwrap_err();
        let (_, found) = non_finite(err);
        assert_eq!(found.len(), 1, "{dtype:?}");
        assert_eq!(found[0].name, bad[last].0, "{dtype:?}");
        assert_eq!((found[0].nan, found[0].infinite), (0, 1), "{dtype:?}");
    }
}
