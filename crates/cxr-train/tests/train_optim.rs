//! Optimiser updates against values computed by hand from PyTorch's documented update rules,
//! gradient clipping, and the learning-rate schedules.

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
