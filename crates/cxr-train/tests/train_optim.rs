//! Optimiser updates against values computed by hand from PyTorch's documented update rules
//! and against PyTorch's own numbers (a frozen parameter), gradient clipping, resuming, and the
//! learning-rate schedules.

use candle_core::{Device, Tensor, Var};
use cxr_train::config::{OptimizerConfig, ScheduleConfig};
use cxr_train::optim::Optimizer;
use cxr_train::schedule::learning_rate;

/// Run `steps` updates of `optimizer` on f(p) = sum(c * p), whose gradient is the constant `c`.
fn run(config: OptimizerConfig, p0: &[f32], c: &[f32], lr: f64, steps: usize) -> Vec<f32> {
    let dev = Device::Cpu;
    let var = Var::new(p0, &dev).unwrap();
    let coef = Tensor::new(c, &dev).unwrap();
    let mut opt = Optimizer::new(config, vec![var.clone()]);
    for _ in 0..steps {
        let loss = var.as_tensor().mul(&coef).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, lr).unwrap();
    }
    var.as_tensor().to_vec1::<f32>().unwrap()
}

fn close(a: &[f32], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

/// torch.optim.Adam (weight decay as L2), written out for one scalar.
fn adam_reference(mut p: f64, c: f64, lr: f64, wd: f64, steps: usize, decoupled: bool) -> f64 {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let (mut m, mut v) = (0.0, 0.0);
    for t in 1..=steps as i32 {
        let mut g = c;
        if decoupled {
            p *= 1.0 - lr * wd;
        } else {
            g += wd * p;
        }
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let m_hat = m / (1.0 - b1.powi(t));
        let v_hat = v / (1.0 - b2.powi(t));
        p -= lr * m_hat / (v_hat.sqrt() + eps);
    }
    p
}

#[test]
fn adam_with_l2_matches_pytorch_semantics() {
    let config = OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let got = run(config, &[1.0, -2.0], &[0.5, 3.0], 0.01, 3);
    // One step by hand: g = 0.5 + 0.1 * 1.0 = 0.6; m_hat = g, v_hat = g^2, so p = 1 - 0.01 * g / (|g| + eps).
    let one = run(config, &[1.0], &[0.5], 0.01, 1);
    close(&one, &[1.0 - 0.01 * 0.6 / (0.6 + 1e-8)]);
    close(
        &got,
        &[
            adam_reference(1.0, 0.5, 0.01, 0.1, 3, false),
            adam_reference(-2.0, 3.0, 0.01, 0.1, 3, false),
        ],
    );
}

#[test]
fn adamw_decouples_weight_decay() {
    let config = OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let got = run(config, &[1.0, -2.0], &[0.5, 3.0], 0.01, 3);
    close(
        &got,
        &[
            adam_reference(1.0, 0.5, 0.01, 0.1, 3, true),
            adam_reference(-2.0, 3.0, 0.01, 0.1, 3, true),
        ],
    );
    let adam = run(
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        &[1.0],
        &[0.5],
        0.01,
        3,
    );
    assert!(
        (adam[0] - got[0]).abs() > 1e-5,
        "Adam's L2 and AdamW's decay must differ"
    );
}

#[test]
fn sgd_momentum_and_nesterov_match_pytorch_semantics() {
    // p0 = 1, c = 0.5, wd = 0.1, mu = 0.9, lr = 0.1; PyTorch: g = c + wd p; buf = g (first),
    // then buf = mu buf + g; p -= lr * buf (nesterov: g + mu buf).
    let reference = |nesterov: bool| {
        let (mut p, mut buf) = (1.0f64, None::<f64>);
        for _ in 0..3 {
            let g = 0.5 + 0.1 * p;
            let b = buf.map_or(g, |b| 0.9 * b + g);
            buf = Some(b);
            p -= 0.1 * if nesterov { g + 0.9 * b } else { b };
        }
        p
    };
    for nesterov in [false, true] {
        let config = OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov,
            weight_decay: 0.1,
        };
        close(&run(config, &[1.0], &[0.5], 0.1, 3), &[reference(nesterov)]);
    }
    // Two steps written out without momentum buffers: 1 - 0.1*0.6 = 0.94; g = 0.594,
    // buf = 0.9*0.6 + 0.594 = 1.134; p = 0.94 - 0.1134 = 0.8266.
    let config = OptimizerConfig::Sgd {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.1,
    };
    close(&run(config, &[1.0], &[0.5], 0.1, 2), &[0.8266]);
}

/// Barlow Twins' LARS (its `main.py`), written out: a weight matrix gets weight decay and the
/// trust ratio, a bias neither and a fraction of the learning rate; momentum as SGD's.
#[test]
fn lars_matches_the_barlow_twins_code() {
    let (lr, wd, eta, factor, momentum) = (0.5, 0.1, 0.01, 0.25, 0.9);
    let (w0, cw) = ([3.0f64, -4.0, 1.0, 2.0], [0.5f64, 1.0, -2.0, 0.25]);
    let (b0, cb) = ([1.0f64, -1.0], [0.3f64, -0.7]);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (mut w, mut b) = (w0.to_vec(), b0.to_vec());
    let (mut mu_w, mut mu_b) = (vec![0.0; 4], vec![0.0; 2]);
    for _ in 0..3 {
        let d: Vec<f64> = w.iter().zip(&cw).map(|(w, c)| c + wd * w).collect();
        let q = eta * norm(&w) / norm(&d);
        for i in 0..4 {
            mu_w[i] = momentum * mu_w[i] + q * d[i];
            w[i] -= lr * mu_w[i];
        }
        for i in 0..2 {
            mu_b[i] = momentum * mu_b[i] + cb[i];
            b[i] -= lr * factor * mu_b[i];
        }
    }

    let dev = Device::Cpu;
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let weight = Var::from_tensor(
        &Tensor::new(f32s(&w0), &dev)
            .unwrap()
            .reshape((2, 2))
            .unwrap(),
    )
    .unwrap();
    let bias = Var::new(f32s(&b0), &dev).unwrap();
    let coef_w = Tensor::new(f32s(&cw), &dev)
        .unwrap()
        .reshape((2, 2))
        .unwrap();
    let coef_b = Tensor::new(f32s(&cb), &dev).unwrap();
    let config = OptimizerConfig::Lars {
        momentum,
        weight_decay: wd,
        eta,
        bias_lr_factor: factor,
    };
    let mut opt = Optimizer::new(config, vec![weight.clone(), bias.clone()]);
    for _ in 0..3 {
        let loss = (weight.as_tensor().mul(&coef_w).unwrap().sum_all().unwrap()
            + bias.as_tensor().mul(&coef_b).unwrap().sum_all().unwrap())
        .unwrap();
        opt.step(&loss.backward().unwrap(), lr).unwrap();
    }
    close(
        &weight.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
        &w,
    );
    close(&bias.as_tensor().to_vec1().unwrap(), &b);
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let dev = Device::Cpu;
    let a = Var::new(&[3f32], &dev).unwrap();
    let b = Var::new(&[0f32], &dev).unwrap();
    let loss = ((a.as_tensor() * 3.0).unwrap().sum_all().unwrap()
        + (b.as_tensor() * 4.0).unwrap().sum_all().unwrap())
    .unwrap();
    let mut grads = loss.backward().unwrap();
    let opt = Optimizer::new(
        OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        vec![a.clone(), b.clone()],
    );
    let norm = opt.clip_grad_norm(&mut grads, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-6);
    let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
    let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
    assert!(
        (ga - 0.6).abs() < 1e-5 && (gb - 0.8).abs() < 1e-5,
        "{ga} {gb}"
    );
}

#[test]
fn optimiser_state_round_trips() {
    let dev = Device::Cpu;
    let config = OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let var = Var::new(&[1f32, 2.0], &dev).unwrap();
    let mut opt = Optimizer::new(config, vec![var.clone()]);
    let grads = var.as_tensor().sum_all().unwrap().backward().unwrap();
    opt.step(&grads, 0.1).unwrap();
    let (state, steps) = opt.state();
    let mut other = Optimizer::new(config, vec![var.clone()]);
    other.load_state(state, steps).unwrap();
    assert_eq!(other.steps(), 1);
    assert_eq!(other.parameter_steps(), &[1]);
    let bad = Var::new(&[1f32, 2.0, 3.0], &dev).unwrap();
    let (state, steps) = opt.state();
    let err = Optimizer::new(config, vec![bad])
        .load_state(state, steps)
        .unwrap_err();
    assert!(err.to_string().contains("another model"), "{err}");
}

#[test]
fn schedules() {
    let base = 0.1;
    assert_eq!(
        learning_rate(&ScheduleConfig::Constant, base, 123, 1000),
        base
    );
    let step = ScheduleConfig::Step {
        every: 10,
        gamma: 0.5,
    };
    assert_eq!(learning_rate(&step, base, 9, 100), 0.1);
    assert_eq!(learning_rate(&step, base, 10, 100), 0.05);
    assert_eq!(learning_rate(&step, base, 25, 100), 0.025);
    let cosine = ScheduleConfig::Cosine {
        warmup: 4,
        min_lr: 0.0,
    };
    let lrs: Vec<f64> = (0..14)
        .map(|s| learning_rate(&cosine, base, s, 14))
        .collect();
    for (s, want) in [(0, 0.025), (1, 0.05), (3, 0.1), (4, 0.1), (9, 0.05)] {
        assert!((lrs[s] - want).abs() < 1e-12, "step {s}: {}", lrs[s]);
    }
    assert!(lrs.windows(2).skip(4).all(|w| w[1] <= w[0]));
    assert!(learning_rate(&cosine, base, 14, 14).abs() < 1e-12);
    let floor = ScheduleConfig::Cosine {
        warmup: 0,
        min_lr: 0.01,
    };
    assert!((learning_rate(&floor, base, 100, 100) - 0.01).abs() < 1e-12);
}

/// LibAUC's PESG (`libauc/optimizers/pesg.py`, SGD mode) written out for one scalar weight `w`
/// with the loss `c * w + AUCM(a, b, alpha)` reduced to its gradients: `grad_w = c`, and `a`,
/// `b` with constant gradients `ga`, `gb`; `alpha` moves by the closed form
/// `lr * (2 (m + b - a) - 2 alpha)`, clamped to [0, 999].
#[test]
fn pesg_steps_match_libauc_by_hand() {
    use cxr_train::dam::Aucm;
    let dev = Device::Cpu;
    let (momentum, wd, epoch_decay, clip, margin, lr) = (0.9, 1e-3, 2e-3, 1.0, 1.0, 0.1);
    let config = OptimizerConfig::Pesg {
        momentum,
        weight_decay: wd,
        epoch_decay,
        clip_value: clip,
        decay_every: 1,
        decay_factor: 10.0,
    };
    let w = Var::new(&[0.5f32], &dev).unwrap();
    let aucm = Aucm::new(margin, vec![0.3], &dev).unwrap();
    let mut opt = Optimizer::pesg(config, vec![w.clone()], &aucm);
    // Gradients: w gets 3.0 (clipped to 1.0), a gets -0.4, b gets 0.2.
    let coefs = [3.0f32, -0.4, 0.2];
    let step = |opt: &mut Optimizer| {
        let loss = ((w.as_tensor() * coefs[0] as f64).unwrap()
            + (aucm.a.as_tensor() * coefs[1] as f64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .add(
            &(aucm.b.as_tensor() * coefs[2] as f64)
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap();
        opt.step(&loss.backward().unwrap(), lr).unwrap();
    };

    // The reference: vars (w, a, b), refs 0, momentum buffers, accumulators.
    let mut v = [0.5f64, 0.0, 0.0];
    let grads = [3.0f64, -0.4, 0.2];
    let mut refs = [0.0f64; 3];
    let mut buf: [Option<f64>; 3] = [None; 3];
    let mut acc = [0.0f64; 3];
    let mut alpha = 0.0f64;
    let mut t = 0u32;
    let reference_step = |v: &mut [f64; 3],
                          refs: &[f64; 3],
                          buf: &mut [Option<f64>; 3],
                          acc: &mut [f64; 3],
                          alpha: &mut f64,
                          t: &mut u32| {
        for i in 0..3 {
            let d = grads[i].clamp(-clip, clip) + epoch_decay * (v[i] - refs[i]) + wd * v[i];
            let b = match buf[i] {
                None => d,
                Some(b) => (1.0 - momentum) * b + momentum * d,
            };
            buf[i] = Some(b);
            v[i] -= lr * b;
            acc[i] += v[i];
        }
        *alpha = (*alpha + lr * (2.0 * (margin + v[2] - v[1]) - 2.0 * *alpha)).clamp(0.0, 999.0);
        *t += 1;
    };
    let check = |v: &[f64; 3], alpha: f64| {
        let got = [
            w.as_tensor().to_vec1::<f32>().unwrap()[0],
            aucm.a.as_tensor().to_vec1::<f32>().unwrap()[0],
            aucm.b.as_tensor().to_vec1::<f32>().unwrap()[0],
            aucm.alpha.as_tensor().to_vec1::<f32>().unwrap()[0],
        ];
        close(&got, &[v[0], v[1], v[2], alpha]);
    };
    for _ in 0..3 {
        step(&mut opt);
        reference_step(&mut v, &refs, &mut buf, &mut acc, &mut alpha, &mut t);
        check(&v, alpha);
    }
    // update_regularizer: the reference becomes the mean of the iterates, then two more steps.
    opt.move_reference().unwrap();
    for i in 0..3 {
        refs[i] = acc[i] / t as f64;
        acc[i] = 0.0;
    }
    t = 0;
    for _ in 0..2 {
        step(&mut opt);
        reference_step(&mut v, &refs, &mut buf, &mut acc, &mut alpha, &mut t);
        check(&v, alpha);
    }

    // The state round-trips: a fresh optimiser loaded with it continues identically.
    let (state, steps) = opt.state();
    let w2 = Var::new(&[w.as_tensor().to_vec1::<f32>().unwrap()[0]], &dev).unwrap();
    let aucm2 = Aucm::new(margin, vec![0.3], &dev).unwrap();
    aucm2.a.set(aucm.a.as_tensor()).unwrap();
    aucm2.b.set(aucm.b.as_tensor()).unwrap();
    let mut opt2 = Optimizer::pesg(config, vec![w2.clone()], &aucm2);
    opt2.load_state(state, steps).unwrap();
    assert_eq!(
        aucm2.alpha.as_tensor().to_vec1::<f32>().unwrap(),
        aucm.alpha.as_tensor().to_vec1::<f32>().unwrap()
    );
}

/// `tests/fixtures/optim/adam_freeze.golden.json`, written by `make_adam_freeze.py` next to it
/// with PyTorch: Adam and AdamW over a "backbone" without a gradient for the first steps (as
/// `--freeze-epochs` has it) and a "head", the parameters after every step.
fn freeze_golden() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/optim/adam_freeze.golden.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    let list = v.as_array().expect("a list of numbers");
    list.iter().map(|x| x.as_f64().expect("a number")).collect()
}

/// The golden file's problem in candle: loss = sum(c1 b^2) / 2 + sum(c2 h b[:3]) + sum(c3 h^2) / 2
/// over the backbone `b` and the head `h`.
struct FreezeProblem {
    backbone: Var,
    head: Var,
    c: [Tensor; 3],
}

impl FreezeProblem {
    /// At the golden file's initial values, or at `values` (backbone, head).
    fn new(golden: &serde_json::Value, values: Option<(Vec<f32>, Vec<f32>)>) -> Self {
        let dev = Device::Cpu;
        let f32s = |key: &str| f64s(&golden[key]).iter().map(|&x| x as f32).collect();
        let (b, h): (Vec<f32>, Vec<f32>) =
            values.unwrap_or_else(|| (f32s("backbone0"), f32s("head0")));
        let c = ["c1", "c2", "c3"].map(|k| Tensor::new(f32s(k), &dev).unwrap());
        FreezeProblem {
            backbone: Var::new(b, &dev).unwrap(),
            head: Var::new(h, &dev).unwrap(),
            c,
        }
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.backbone.clone(), self.head.clone()]
    }

    /// The gradients; a frozen backbone enters the loss detached, so it has none.
    fn grads(&self, frozen: bool) -> candle_core::backprop::GradStore {
        let b = match frozen {
            true => self.backbone.as_tensor().detach(),
            false => self.backbone.as_tensor().clone(),
        };
        let h = self.head.as_tensor();
        let [c1, c2, c3] = &self.c;
        let backbone_term = (c1.mul(&b.sqr().unwrap()).unwrap().sum_all().unwrap() / 2.0).unwrap();
        let cross = c2
            .mul(h)
            .unwrap()
            .mul(&b.narrow(0, 0, 3).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let head_term = (c3.mul(&h.sqr().unwrap()).unwrap().sum_all().unwrap() / 2.0).unwrap();
        let loss = ((backbone_term + cross).unwrap() + head_term).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(grads.get(self.backbone.as_tensor()).is_none(), frozen);
        assert!(grads.get(self.head.as_tensor()).is_some());
        grads
    }

    fn values(&self) -> (Vec<f32>, Vec<f32>) {
        let values = |v: &Var| v.as_tensor().to_vec1::<f32>().unwrap();
        (values(&self.backbone), values(&self.head))
    }
}

/// The golden file's optimiser `name` ("adam", "adamw") as our configuration, and its steps.
fn freeze_schedule(
    golden: &serde_json::Value,
    name: &str,
) -> (OptimizerConfig, f64, Vec<serde_json::Value>) {
    let run = &golden[name];
    let [beta1, beta2] = f64s(&golden["betas"])[..] else {
        panic!("betas")
    };
    let (eps, weight_decay) = (
        golden["eps"].as_f64().unwrap(),
        run["weight_decay"].as_f64().unwrap(),
    );
    let config = match name {
        "adam" => OptimizerConfig::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
        },
        "adamw" => OptimizerConfig::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        },
        _ => panic!("{name}"),
    };
    let steps = run["steps"].as_array().unwrap().clone();
    let frozen = golden["frozen_steps"].as_u64().unwrap() as usize;
    assert_eq!(
        steps.len(),
        frozen + golden["released_steps"].as_u64().unwrap() as usize
    );
    (config, golden["lr"].as_f64().unwrap(), steps)
}

/// Panics unless the problem's parameters are PyTorch's after golden step `step` (0-based) to
/// 1e-6 relative; returns the largest relative difference.
fn check_golden_step(
    name: &str,
    step: usize,
    problem: &FreezeProblem,
    want: &serde_json::Value,
) -> f64 {
    let (backbone, head) = problem.values();
    let mut worst = 0f64;
    for (what, got) in [("backbone", &backbone), ("head", &head)] {
        let want = f64s(&want[what]);
        assert_eq!(got.len(), want.len());
        for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let rel = (g as f64 - w).abs() / w.abs().max(1e-3);
            assert!(
                rel <= 1e-6,
                "{name} step {}: {what}[{j}] is {g} but PyTorch's is {w} (relative difference \
                 {rel:.2e}); all {what}: {got:?} vs {want:?}",
                step + 1
            );
            worst = worst.max(rel);
        }
    }
    worst
}

/// Adam's bias correction counts each parameter's own updates, as PyTorch's `state['step']`:
/// a backbone without a gradient for the first steps starts its correction at its first
/// update. (Counted once for all parameters, the backbone's first update after 3 frozen steps
/// was 0.58 of PyTorch's, and after many steps it is 3.2 times PyTorch's.)
#[test]
fn adam_with_a_frozen_backbone_matches_pytorch() {
    check_freeze_schedule("adam");
}

/// The same for AdamW, whose decoupled decay also skips the frozen backbone.
#[test]
fn adamw_with_a_frozen_backbone_matches_pytorch() {
    check_freeze_schedule("adamw");
}

fn check_freeze_schedule(name: &str) {
    let golden = freeze_golden();
    let (config, lr, steps) = freeze_schedule(&golden, name);
    let problem = FreezeProblem::new(&golden, None);
    let mut opt = Optimizer::new(config, problem.vars());
    let mut worst = 0f64;
    for (step, want) in steps.iter().enumerate() {
        let frozen = want["backbone_frozen"].as_bool().unwrap();
        opt.step(&problem.grads(frozen), lr).unwrap();
        worst = worst.max(check_golden_step(name, step, &problem, want));
    }
    let frozen = golden["frozen_steps"].as_u64().unwrap();
    let n = steps.len() as u64;
    assert_eq!(opt.steps(), n);
    assert_eq!(opt.parameter_steps(), &[n - frozen, n]);
    eprintln!("{name}: largest relative difference from PyTorch {worst:.2e}");
}

/// Resuming from a state saved (through safetensors, as a checkpoint does) while the backbone
/// is frozen, or after it was released, continues exactly as the uninterrupted run: the
/// per-parameter step counts travel with the moments.
#[test]
fn resuming_keeps_per_parameter_step_counts() {
    let golden = freeze_golden();
    let dir = tempfile::tempdir().unwrap();
    for name in ["adam", "adamw"] {
        let (config, lr, steps) = freeze_schedule(&golden, name);
        let frozen = |s: usize| steps[s]["backbone_frozen"].as_bool().unwrap();
        for resume_at in [2, 4] {
            let problem = FreezeProblem::new(&golden, None);
            let mut opt = Optimizer::new(config, problem.vars());
            for s in 0..resume_at {
                opt.step(&problem.grads(frozen(s)), lr).unwrap();
            }
            let (state, count) = opt.state();
            let path = dir.path().join(format!("{name}-{resume_at}.safetensors"));
            candle_core::safetensors::save(&state, &path).unwrap();
            let state = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let resumed = FreezeProblem::new(&golden, Some(problem.values()));
            let mut other = Optimizer::new(config, resumed.vars());
            other.load_state(state, count).unwrap();
            assert_eq!(other.steps(), opt.steps());
            assert_eq!(other.parameter_steps(), opt.parameter_steps());
            for (s, want) in steps.iter().enumerate().skip(resume_at) {
                opt.step(&problem.grads(frozen(s)), lr).unwrap();
                other.step(&resumed.grads(frozen(s)), lr).unwrap();
                assert_eq!(
                    resumed.values(),
                    problem.values(),
                    "{name}, resumed after {resume_at} steps: step {} differs",
                    s + 1
                );
                check_golden_step(name, s, &resumed, want);
            }
            assert_eq!(other.parameter_steps(), opt.parameter_steps());
        }
    }
}

/// A state saved before the counts were kept per parameter (no `steps` tensor) still loads: a
/// parameter with moments gets the shared count, one without (still frozen) none. A count
/// vector for another parameter list is refused.
#[test]
fn a_state_without_per_parameter_counts_still_loads() {
    let golden = freeze_golden();
    let (config, lr, _) = freeze_schedule(&golden, "adam");
    let problem = FreezeProblem::new(&golden, None);
    let mut opt = Optimizer::new(config, problem.vars());
    for _ in 0..2 {
        opt.step(&problem.grads(true), lr).unwrap();
    }
    let (mut state, count) = opt.state();
    assert!(state.remove("steps").is_some());
    let mut other = Optimizer::new(config, problem.vars());
    other.load_state(state, count).unwrap();
    assert_eq!(other.parameter_steps(), &[0, 2]);

    opt.step(&problem.grads(false), lr).unwrap();
    let (mut state, count) = opt.state();
    assert_eq!(opt.parameter_steps(), &[1, 3]);
    state.remove("steps");
    let mut other = Optimizer::new(config, problem.vars());
    other.load_state(state, count).unwrap();
    assert_eq!(
        other.parameter_steps(),
        &[3, 3],
        "the old format's approximation"
    );

    let (mut state, count) = opt.state();
    state.insert(
        "steps".into(),
        Tensor::new(&[1i64, 3, 3], &Device::Cpu).unwrap(),
    );
    let err = Optimizer::new(config, problem.vars())
        .load_state(state, count)
        .unwrap_err();
    assert!(err.to_string().contains("another model"), "{err}");
}
