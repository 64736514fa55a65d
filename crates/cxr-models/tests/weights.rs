//! Loading, saving and head handling: the behaviours training and evaluation rely on.

mod common;

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};
use candle_nn::Optimizer;
use common::{
    bit_identical, device, golden_config, golden_dir, max_diff, tiny_densenet, tiny_resnet,
};
use cxr_models::{
    read_metadata, read_weights, HeadSpec, LoadOptions, Mode, Model, ModelConfig, ModelError,
    ResidualBlock, SaveOptions,
};

fn tiny_densenet_weights() -> Vec<(String, Tensor)> {
    read_weights(golden_dir().join("tiny_densenet.safetensors"), &device()).unwrap()
}

fn tiny_densenet_model(heads: Vec<HeadSpec>) -> Model {
    let config = ModelConfig {
        heads,
        ..golden_config("tiny_densenet")
    };
    Model::new(config, &device(), 3).unwrap()
}

fn grey_input(channels: usize) -> Tensor {
    Tensor::randn(0f32, 1f32, (2, channels, 64, 64), &device()).unwrap()
}

fn state_map(model: &Model) -> HashMap<String, Tensor> {
    model.state_dict().unwrap().into_iter().collect()
}

fn assert_same_state(a: &Model, b: &Model) {
    let (a, b) = (a.state_dict().unwrap(), b.state_dict().unwrap());
    assert_eq!(a.len(), b.len());
    for ((name_a, ta), (name_b, tb)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bit_identical(ta, tb), "{name_a} differs");
    }
}

#[test]
fn rgb_first_conv_summed_for_one_channel_equals_grey_image_three_times() {
    let dev = device();
    for arch in [tiny_densenet(), tiny_resnet(ResidualBlock::Basic)] {
        let config = |in_channels| ModelConfig {
            arch: arch.clone(),
            in_channels,
            heads: vec![HeadSpec::new("pathologies", 14)],
        };
        let rgb = Model::new(config(3), &dev, 11).unwrap();
        let mut grey = Model::new(config(1), &dev, 12).unwrap();
        let report = grey
            .load_state_dict(rgb.state_dict().unwrap(), LoadOptions::strict())
            .unwrap();
        assert_eq!(report.summed_rgb.as_deref(), Some(arch.first_conv_weight()));

        let x = grey_input(1);
        let x3 = x.repeat((1, 3, 1, 1)).unwrap();
        let a = grey.forward(&x, Mode::Eval).unwrap();
        let b = rgb.forward(&x3, Mode::Eval).unwrap();
        let (abs, rel) = max_diff(a.primary(), b.primary());
        let (feat_abs, _) = max_diff(&a.features, &b.features);
        eprintln!("{arch}: 1-channel vs RGB x3 logits max abs {abs:.2e} (rel {rel:.2e}), features {feat_abs:.2e}");
        assert!(rel < 1e-5, "{arch}: {abs} {rel}");
    }
}

#[test]
fn save_then_load_round_trips_bit_identical_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let classes: Vec<String> = (0..14).map(|i| format!("finding{i}")).collect();
    let mut model = tiny_densenet_model(vec![
        HeadSpec::with_classes("pathologies", classes),
        HeadSpec::new("sex", 1),
        HeadSpec::new("age", 1),
    ]);
    let report = model
        .load(
            golden_dir().join("tiny_densenet.safetensors"),
            LoadOptions::non_strict(),
        )
        .unwrap();
    let reinit: Vec<&str> = report
        .reinitialised_heads
        .iter()
        .map(|h| h.head.as_str())
        .collect();
    assert_eq!(reinit, ["sex", "age"], "{report}");
    // Move the running statistics and counters away from the file's values.
    model.forward(&grey_input(1), Mode::Train).unwrap();

    let options = SaveOptions {
        drop_aux_heads: false,
        training_config: BTreeMap::from([
            ("lr".to_string(), "1e-4".to_string()),
            ("split".to_string(), "chexpert-train".to_string()),
        ]),
        code_revision: Some("abc1234".to_string()),
    };
    let path = dir.path().join("model.safetensors");
    model.save(&path, &options).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind: {leftovers:?}");

    let (loaded, meta) = Model::from_checkpoint(&path, &device()).unwrap();
    assert_eq!(&meta.config, model.config());
    assert_eq!(meta.training_config, options.training_config);
    assert_eq!(meta.code_revision, options.code_revision);
    assert_eq!(read_metadata(&path).unwrap(), meta);
    assert_same_state(&model, &loaded);
    let tracked = &state_map(&loaded)["features.norm0.num_batches_tracked"];
    assert_eq!(tracked.dtype(), DType::I64);
    assert_eq!(tracked.to_scalar::<i64>().unwrap(), 8);

    // Without the auxiliary heads: a plain torchvision state_dict, same keys as the golden file.
    let plain = dir.path().join("plain.safetensors");
    let drop = SaveOptions {
        drop_aux_heads: true,
        ..options.clone()
    };
    model.save(&plain, &drop).unwrap();
    let keys = |ts: Vec<(String, Tensor)>| ts.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        keys(read_weights(&plain, &device()).unwrap()),
        keys(tiny_densenet_weights())
    );
    let (single, meta) = Model::from_checkpoint(&plain, &device()).unwrap();
    assert_eq!(meta.config.heads, model.config().heads[..1]);
    let x = grey_input(1);
    let a = model.forward(&x, Mode::Eval).unwrap();
    let b = single.forward(&x, Mode::Eval).unwrap();
    assert!(bit_identical(a.primary(), b.primary()));

    // Saving over an existing checkpoint replaces it.
    model.save(&plain, &options).unwrap();
    assert_eq!(read_metadata(&plain).unwrap().config.heads.len(), 3);
}

#[test]
fn mismatching_checkpoint_lists_every_problem_and_changes_nothing() {
    let mut tensors = tiny_densenet_weights();
    tensors.retain(|(n, _)| {
        n != "features.norm0.weight" && n != "features.denseblock2.denselayer1.conv2.weight"
    });
    let dev = device();
    for (name, t) in tensors.iter_mut() {
        if name == "features.conv0.weight" {
            *t = Tensor::zeros((16, 2, 7, 7), DType::F32, &dev).unwrap();
        }
        if name == "classifier.weight" {
            *t = Tensor::zeros((5, 23), DType::F32, &dev).unwrap();
        }
    }
    tensors.push((
        "features.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &dev).unwrap(),
    ));
    tensors.push((
        "heads.view.weight".into(),
        Tensor::zeros((1, 23), DType::F32, &dev).unwrap(),
    ));

    let mut model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let before = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let err = model
        .load_state_dict(tensors.clone(), LoadOptions::strict())
        .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    let ModelError::IncompatibleWeights(m) = err else {
        panic!("wrong error: {message}")
    };
    assert_eq!(
        m.missing,
        [
            "features.norm0.weight",
            "features.denseblock2.denselayer1.conv2.weight"
        ]
    );
    assert_eq!(m.unexpected, ["features.extra.weight", "heads.view.weight"]);
    let mismatched: Vec<&str> = m.mismatched.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(mismatched, ["features.conv0.weight", "classifier.weight"]);
    assert_eq!(m.mismatched[1].model, "[14, 23] f32");
    assert_eq!(m.mismatched[1].checkpoint, "[5, 23] f32");
    let listed = m.missing.iter().chain(&m.unexpected).map(String::as_str);
    for name in listed.chain(mismatched.iter().copied()) {
        assert!(message.contains(name), "message lacks {name}");
    }
    assert!(message.contains("non_strict"), "no hint in: {message}");
    assert_same_state(&model, &before);

    // Non-strict forgives the head and the extra auxiliary head, not the backbone.
    let err = model
        .load_state_dict(tensors, LoadOptions::non_strict())
        .unwrap_err();
    let ModelError::IncompatibleWeights(m) = err else {
        panic!("wrong error")
    };
    assert_eq!(m.missing.len(), 2);
    assert_eq!(m.unexpected, ["features.extra.weight"]);
    assert_eq!(m.mismatched.len(), 1);
    assert_same_state(&model, &before);
}

#[test]
fn non_strict_load_reinitialises_heads_of_another_size() {
    let mut model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 5)]);
    let fresh_head = state_map(&model)["classifier.weight"].clone();
    let mut tensors = tiny_densenet_weights();
    tensors.push((
        "heads.view.weight".into(),
        Tensor::zeros((1, 23), DType::F32, &device()).unwrap(),
    ));
    let err = model
        .load_state_dict(tensors.clone(), LoadOptions::strict())
        .unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleWeights(_)));

    let report = model
        .load_state_dict(tensors.clone(), LoadOptions::non_strict())
        .unwrap();
    eprintln!("{report}");
    assert_eq!(report.reinitialised_heads.len(), 1);
    assert_eq!(report.reinitialised_heads[0].head, "pathologies");
    assert!(report.reinitialised_heads[0].reason.contains("[14, 23]"));
    assert_eq!(report.ignored, ["heads.view.weight"]);
    let state = state_map(&model);
    let golden: HashMap<String, Tensor> = tensors.into_iter().collect();
    assert!(bit_identical(
        &state["features.conv0.weight"],
        &golden["features.conv0.weight"]
    ));
    // Re-initialised: fresh values, neither the old ones nor the checkpoint's.
    let head = &state["classifier.weight"];
    assert_eq!(head.dims(), [5, 23]);
    assert!(!bit_identical(head, &fresh_head));
    let bound = 1.0 / (23f32).sqrt();
    let max = head
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max <= bound && max > 0.0);
}

#[test]
fn dataparallel_prefix_is_removed() {
    let tensors: Vec<(String, Tensor)> = tiny_densenet_weights()
        .into_iter()
        .map(|(n, t)| (format!("module.{n}"), t))
        .collect();
    let mut model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let report = model
        .load_state_dict(tensors, LoadOptions::strict())
        .unwrap();
    assert!(report.stripped_module_prefix);
    assert_eq!(report.loaded, model.state_dict_spec().len());
}

#[test]
fn legacy_densenet_names_and_missing_counters_are_accepted() {
    // torchvision's ImageNet DenseNet files predate both `norm1` and `num_batches_tracked`.
    let tensors: Vec<(String, Tensor)> = tiny_densenet_weights()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, t)| {
            let legacy = n
                .replace(".norm1.", ".norm.1.")
                .replace(".conv2.", ".conv.2.");
            (legacy, t)
        })
        .collect();
    let mut model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let report = model
        .load_state_dict(tensors, LoadOptions::strict())
        .unwrap();
    assert!(report.renamed_legacy_keys > 0);
    assert_eq!(report.defaulted.len(), 17, "{report}");
    assert_eq!(report.loaded + 17, model.state_dict_spec().len());
    let tracked = &state_map(&model)["features.norm5.num_batches_tracked"];
    assert_eq!(tracked.to_scalar::<i64>().unwrap(), 0);
}

#[test]
fn unreadable_files_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a checkpoint").unwrap();
    let err = read_weights(&junk, &device()).unwrap_err().to_string();
    assert!(
        err.contains("junk.safetensors") && err.contains("neither"),
        "{err}"
    );

    let legacy = dir.path().join("old.pth");
    std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46]).unwrap();
    let err = read_weights(&legacy, &device()).unwrap_err().to_string();
    assert!(err.contains("legacy"), "{err}");

    let missing = read_weights(dir.path().join("absent.pth"), &device()).unwrap_err();
    assert!(matches!(missing, ModelError::ReadWeights { .. }));

    // A torchvision file has no cxr metadata: from_checkpoint says how to load it instead.
    let err = Model::from_checkpoint(golden_dir().join("tiny_densenet.safetensors"), &device())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Model::load"), "{err}");
}

#[test]
fn heads_can_be_added_and_removed() {
    let mut model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let params_before = model.trainable_vars().len();
    model.add_head(HeadSpec::new("sex", 1)).unwrap();
    model.add_head(HeadSpec::new("view", 3)).unwrap();
    assert!(model.add_head(HeadSpec::new("sex", 2)).is_err());
    assert_eq!(model.trainable_vars().len(), params_before + 4);
    let out = model.forward(&grey_input(1), Mode::Eval).unwrap();
    let names: Vec<&str> = out.heads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pathologies", "sex", "view"]);
    assert_eq!(out.head("view").unwrap().dims(), [2, 3]);
    assert_eq!(out.pooled.dims(), [2, 23]);
    assert_eq!(out.features.dims(), [2, 23, 2, 2]);
    assert!(model
        .state_dict_spec()
        .iter()
        .any(|(n, _, _)| n == "heads.view.weight"));

    model.remove_head("sex").unwrap();
    assert!(model.remove_head("pathologies").is_err());
    assert!(model.remove_head("nope").is_err());
    assert_eq!(model.trainable_vars().len(), params_before + 2);
    assert_eq!(model.varmap().all_vars().len(), params_before + 2);
    let names: Vec<String> = model
        .config()
        .heads
        .iter()
        .map(|h| h.name.clone())
        .collect();
    assert_eq!(names, ["pathologies", "view"]);
}

#[test]
fn optimiser_sees_parameters_but_not_batchnorm_buffers() {
    let model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let named = model.named_parameters();
    assert!(named
        .iter()
        .all(|(n, _)| !n.contains("running_") && !n.ends_with("num_batches_tracked")));
    let buffers = model
        .state_dict_spec()
        .iter()
        .filter(|(n, _, _)| n.contains("running_") || n.ends_with("num_batches_tracked"))
        .count();
    assert_eq!(named.len() + buffers, model.state_dict_spec().len());
    assert_eq!(model.varmap().all_vars().len(), named.len());

    // One SGD step moves parameters; running statistics move only through train-mode forwards.
    let x = grey_input(1);
    let out = model.forward(&x, Mode::Eval).unwrap();
    let loss = out.primary().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let stats_before = state_map(&model)["features.norm0.running_mean"].clone();
    let weight_before = state_map(&model)["features.norm0.weight"].clone();
    let mut sgd = candle_nn::SGD::new(model.trainable_vars(), 0.1).unwrap();
    sgd.step(&grads).unwrap();
    let after = state_map(&model);
    assert!(bit_identical(
        &after["features.norm0.running_mean"],
        &stats_before
    ));
    assert!(!bit_identical(
        &after["features.norm0.weight"],
        &weight_before
    ));
}

#[test]
fn same_seed_same_weights() {
    let config = golden_config("tiny_resnet_bottleneck");
    let a = Model::new(config.clone(), &device(), 9).unwrap();
    let b = Model::new(config.clone(), &device(), 9).unwrap();
    let c = Model::new(config, &device(), 10).unwrap();
    assert_same_state(&a, &b);
    let w = |m: &Model| state_map(m)["conv1.weight"].clone();
    assert!(!bit_identical(&w(&a), &w(&c)));
}

#[test]
fn wrong_input_shape_is_explained() {
    let model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let err = model
        .forward(&grey_input(3), Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, 1, H, W]"), "{err}");
}

#[test]
fn model_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Model>();
}

/// Batch statistics of one value per channel are undefined: an inner layer that small (here
/// ResNet's last stage at 1x1, batch 1) is an error in train mode, as it is in PyTorch, not a
/// NaN in the running variance; eval mode runs.
#[test]
fn train_mode_refuses_one_value_per_channel_in_an_inner_layer() {
    let model = Model::new(golden_config("tiny_resnet_basic"), &device(), 0).unwrap();
    let x = Tensor::randn(0f32, 1f32, (1, 1, 32, 32), &device()).unwrap();
    let err = model.forward(&x, Mode::Train).unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidInput(m) if m.contains("more than one value per channel")),
        "{err}"
    );
    assert!(model.forward(&x, Mode::Eval).is_ok());
}

/// `Model::infer` is the eval-mode forward, value for value, but records nothing for a
/// backward (PyTorch's `torch.no_grad()`): no parameter gets a gradient from its output, while
/// all of them do from the eval-mode forward's. The same on candle's own ops (CUDA's path).
#[test]
fn infer_is_the_eval_forward_without_a_backward() {
    infer_records_nothing();
    cxr_models::with_candle_ops(infer_records_nothing);
}

fn infer_records_nothing() {
    let model = tiny_densenet_model(vec![HeadSpec::new("pathologies", 14)]);
    let x = grey_input(1);
    let eval = model.forward(&x, Mode::Eval).unwrap();
    let inferred = model.infer(&x).unwrap();
    let values = |out: &cxr_models::ModelOutput| out.primary().to_vec2::<f32>().unwrap();
    assert_eq!(values(&inferred), values(&eval));
    // The parameters a backward from the output reaches: the stem, transitions and head run
    // layer by layer, the dense blocks fused.
    let reached = |out: &cxr_models::ModelOutput| {
        let grads = out.primary().sum_all().unwrap().backward().unwrap();
        let params = model.named_parameters().into_iter();
        params
            .filter(|(_, p)| grads.get(p.as_tensor()).is_some())
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    let all = model.named_parameters().len();
    assert_eq!(reached(&eval).len(), all, "the eval forward is recorded");
    assert_eq!(
        reached(&inferred),
        Vec::<String>::new(),
        "infer recorded these"
    );
    // Recording is back on afterwards.
    assert_eq!(reached(&model.forward(&x, Mode::Eval).unwrap()).len(), all);
}

/// `Model::inference` keeps what depends on the weights alone from its first call: its results
/// are `infer`'s (to rounding: with the transform kept, the 512-channel 2x2 convolutions run
/// as Winograd at batch 2 as well), the same at every call, and a weight changed afterwards goes
/// unseen by it, while a new `inference` sees the change.
#[test]
fn inference_keeps_the_weights_of_its_first_call() {
    let model = Model::new(golden_config("tiny_resnet_basic"), &device(), 5).unwrap();
    let x = grey_input(1);
    let values = |out: cxr_models::ModelOutput| out.primary().to_vec2::<f32>().unwrap();
    let close = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        let diff = a.iter().flatten().zip(b.iter().flatten());
        diff.map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) < 1e-4
    };
    let inference = model.inference();
    let first = values(inference.infer(&x).unwrap());
    assert!(close(&first, &values(model.infer(&x).unwrap())));
    assert_eq!(values(inference.infer(&x).unwrap()), first);

    let (name, weight) = model
        .named_parameters()
        .into_iter()
        .find(|(name, _)| name == "layer1.0.conv1.weight")
        .unwrap();
    weight.set(&(weight.as_tensor() * 2.0).unwrap()).unwrap();
    let changed = values(model.infer(&x).unwrap());
    assert!(!close(&changed, &first), "{name} changes the output");
    assert_eq!(values(inference.infer(&x).unwrap()), first);
    assert!(close(
        &values(model.inference().infer(&x).unwrap()),
        &changed
    ));
}
