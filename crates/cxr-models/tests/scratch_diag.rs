mod common;
use candle_core::{Device, Tensor, D};
use common::*;
use cxr_models::*;
use std::collections::HashMap;

#[test]
fn diag() {
    let dev = Device::Cpu;
    let io: HashMap<String, Tensor> = candle_core::safetensors::load(golden_dir().join("densenet121_io.safetensors"), &dev).unwrap();
    let run = |x: &Tensor| {
        let mut model = Model::new(golden_config("densenet121"), &dev, 0).unwrap();
        model.load(golden_dir().join("densenet121.safetensors"), LoadOptions::strict()).unwrap();
        let out = model.forward(x, Mode::Train).unwrap();
        let loss = bce_with_logits(out.primary(), &io["target"], None).unwrap();
        let g = loss.backward().unwrap();
        let p: HashMap<String, _> = model.named_parameters().into_iter().collect();
        let g0 = g.get(p["features.conv0.weight"].as_tensor()).unwrap().clone();
        let g5 = g.get(p["features.norm5.weight"].as_tensor()).unwrap().clone();
        (out.features.clone(), g0, g5)
    };
    let x = &io["input"];
    let (feat, g0, g5) = run(x);
    let diff5 = (&g5 - &io["grad.features.norm5.weight"]).unwrap().abs().unwrap();
    let c = diff5.argmax(0).unwrap().to_scalar::<u32>().unwrap() as usize;
    let fc = feat.narrow(1, c, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let minabs = fc.iter().map(|v| v.abs()).fold(f32::MAX, f32::min);
    eprintln!("worst norm5 channel {c}: diff {} ours {} torch {}, min |y| in channel {minabs}", diff5.get(c).unwrap(), g5.get(c).unwrap(), io["grad.features.norm5.weight"].get(c).unwrap());
    let allmin = feat.abs().unwrap().flatten_all().unwrap().min(D::Minus1).unwrap();
    eprintln!("global min |y5| {allmin}");
    // sensitivity: perturb input by relative 1e-7
    let noise = (x.randn_like(0.0, 1e-7).unwrap() * x).unwrap();
    let x2 = (x + noise).unwrap();
    let (_, g0b, g5b) = run(&x2);
    eprintln!("conv0 vs torch {:?}; conv0 ours vs ours-perturbed {:?}", max_diff(&g0, &io["grad.features.conv0.weight"]), max_diff(&g0b, &g0));
    eprintln!("norm5 ours vs ours-perturbed {:?}", max_diff(&g5b, &g5));
}
