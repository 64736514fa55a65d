//! Deep AUC Maximization: LibAUC's AUC-margin loss (AUCM), optimised with PESG
//! (`config::OptimizerConfig::Pesg`, stepped in `optim.rs`).
//!
//! Why here: the study's DAM runs (Yuan et al., *Large-scale Robust Deep AUC Maximization*, ICCV
//! 2021, arXiv:2012.03173) fine-tune a cross-entropy checkpoint by maximising AUC directly. The
//! formulas follow LibAUC (github.com/Optimization-AI/LibAUC) so that a margin or learning rate
//! from that paper means the same thing here:
//!
//! - `libauc/losses/auc.py`, `AUCMLoss` (version `v1`), per output with score `s = sigmoid(logit)`,
//!   positive rate `p`, margin `m` and the variables `a`, `b` (primal) and `alpha` (dual):
//!
//!   ```text
//!   F = (1-p) mean((s-a)^2 [y=1]) + p mean((s-b)^2 [y=0])
//!       + 2 alpha (p (1-p) m + mean(p s [y=0] - (1-p) s [y=1])) - p (1-p) alpha^2
//!   ```
//!
//!   The multi-label loss (LibAUC's `mAUCMLoss`) is the mean of `F` over outputs, each with its
//!   own `a`, `b`, `alpha`. Two choices of ours: `p` is the training set's positive rate of the
//!   output (LibAUC's `imratio`; with `imratio=None` it would use each batch's rate, which is
//!   undefined for batches without positives), and the means run over the labelled entries of
//!   the output (U-Ignore masks), which is LibAUC's mean when nothing is masked.
//! - `libauc/optimizers/pesg.py`, `PESG.step` (SGD mode), for every primal variable `w` (the
//!   network's weights, `a` and `b`):
//!
//!   ```text
//!   d = clamp(grad, -clip, clip) + epoch_decay (w - w_ref) + weight_decay w
//!   buf = d at the first step, else (1 - momentum) buf + momentum d     (LibAUC's convention)
//!   w = w - lr buf;   acc += w
//!   alpha = clamp(alpha + lr (2 (m + b - a) - 2 alpha), 0, 999)         (after a and b moved)
//!   ```
//!
//!   and `PESG.update_regularizer(decay_factor)`: `lr /= decay_factor`, `w_ref = acc / T` (the
//!   average of the iterates since the last update), `acc = 0`, `T = 0`. LibAUC's CheXpert
//!   recipe calls it at the start of every epoch after the first; `decay_every` says how often
//!   here. One difference: LibAUC draws the first `w_ref` from N(0, 0.01^2); it starts at zero
//!   here (the same pull towards the origin, without a random draw).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};

/// The AUC-margin loss of one multi-output head, with its primal (`a`, `b`) and dual (`alpha`)
/// variables, one per output.
pub struct Aucm {
    pub margin: f64,
    /// Positive rate of each output in the training set.
    pub positive_rate: Vec<f64>,
    pub a: Var,
    pub b: Var,
    pub alpha: Var,
}

impl Aucm {
    /// Zero-initialised variables, as LibAUC's.
    pub fn new(margin: f64, positive_rate: Vec<f64>, device: &Device) -> Result<Aucm> {
        if let Some(p) = positive_rate.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
            bail!(
                "the AUC-margin loss needs positives and negatives of every output in the \
                 training set (a positive rate of {p} was found); drop that output with \
                 --pathologies or use --loss bce"
            );
        }
        let k = positive_rate.len();
        let zeros = || Var::zeros(k, DType::F32, device);
        Ok(Aucm {
            margin,
            positive_rate,
            a: zeros()?,
            b: zeros()?,
            alpha: zeros()?,
        })
    }

    /// The mean over outputs of LibAUC's `AUCMLoss` on `logits` `[N, K]`, with 0/1 `targets` and
    /// a `mask` (1 = labelled) of the same shape.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let k = self.positive_rate.len();
        if logits.dims() != [logits.dim(0)?, k] {
            bail!(
                "AUC-margin loss for {k} outputs got logits of shape {:?}",
                logits.dims()
            );
        }
        let device = logits.device();
        let p: Vec<f32> = self.positive_rate.iter().map(|&p| p as f32).collect();
        let p = Tensor::from_vec(p, (1, k), device)?;
        let q = (1.0 - &p)?; // 1 - p
        let pq = (&p * &q)?;
        let s = candle_nn::ops::sigmoid(logits)?;
        let pos = (targets * mask)?;
        let neg = ((1.0 - targets)? * mask)?;
        let count = mask.sum_keepdim(0)?.clamp(1f64, f64::MAX)?; // [1, K]
        let mean = |t: Tensor| -> Result<Tensor> { Ok(t.sum_keepdim(0)?.div(&count)?) };
        let a = self.a.as_tensor().unsqueeze(0)?;
        let b = self.b.as_tensor().unsqueeze(0)?;
        let alpha = self.alpha.as_tensor().unsqueeze(0)?;
        let sq_a = mean(s.broadcast_sub(&a)?.sqr()?.mul(&pos)?)?;
        let sq_b = mean(s.broadcast_sub(&b)?.sqr()?.mul(&neg)?)?;
        let cross = mean((s.mul(&neg)?.broadcast_mul(&p)? - s.mul(&pos)?.broadcast_mul(&q)?)?)?;
        let margin_term = ((&pq * self.margin)? + cross)?;
        let per_output = ((q.mul(&sq_a)? + p.mul(&sq_b)?)?
            + ((alpha.mul(&margin_term)? * 2.0)? - pq.mul(&alpha.sqr()?)?)?)?;
        Ok(per_output.mean_all()?)
    }
}

/// The positive rate of every column of a head from its dense targets and masks
/// (`[rows, k]` row-major): positives over labelled entries.
pub fn positive_rates(values: &[f32], masks: &[f32], k: usize) -> Vec<f64> {
    let mut pos = vec![0f64; k];
    let mut labelled = vec![0f64; k];
    for (row_v, row_m) in values.chunks_exact(k).zip(masks.chunks_exact(k)) {
        for c in 0..k {
            pos[c] += (row_v[c] * row_m[c]) as f64;
            labelled[c] += row_m[c] as f64;
        }
    }
    pos.iter()
        .zip(&labelled)
        .map(|(p, n)| if *n > 0.0 { p / n } else { 0.0 })
        .collect()
}

/// The PESG learning rate: `lr` divided by `decay_factor` once for every `decay_every` epochs
/// completed (LibAUC's `update_regularizer(decay_factor)` at those epoch starts).
pub fn pesg_learning_rate(lr: f64, epoch: u64, decay_every: u64, decay_factor: f64) -> f64 {
    if decay_every == 0 {
        return lr;
    }
    lr / decay_factor.powi((epoch / decay_every) as i32)
}

/// Whether the reference point moves at the start of `epoch` (0-based).
pub fn pesg_moves_reference(epoch: u64, decay_every: u64) -> bool {
    decay_every > 0 && epoch > 0 && epoch.is_multiple_of(decay_every)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// LibAUC's formula written out for one output, every entry labelled.
    fn libauc(scores: &[f64], y: &[f64], p: f64, m: f64, a: f64, b: f64, alpha: f64) -> f64 {
        let n = scores.len() as f64;
        let mean = |f: &dyn Fn(f64, f64) -> f64| -> f64 {
            scores.iter().zip(y).map(|(&s, &y)| f(s, y)).sum::<f64>() / n
        };
        (1.0 - p) * mean(&|s, y| (s - a).powi(2) * y)
            + p * mean(&|s, y| (s - b).powi(2) * (1.0 - y))
            + 2.0
                * alpha
                * (p * (1.0 - p) * m + mean(&|s, y| p * s * (1.0 - y) - (1.0 - p) * s * y))
            - p * (1.0 - p) * alpha * alpha
    }

    #[test]
    fn aucm_matches_libauc_by_hand_and_masks_entries() {
        let dev = Device::Cpu;
        let logits = [0.3f32, -1.2, 2.0, 0.0, -0.4, 1.1];
        let y = [1f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        // Two outputs: column 0 = entries 0, 2, 4; column 1 = 1, 3, 5.
        let aucm = Aucm::new(1.0, vec![0.4, 0.25], &dev).unwrap();
        aucm.a
            .set(&Tensor::new(&[0.6f32, 0.1], &dev).unwrap())
            .unwrap();
        aucm.b
            .set(&Tensor::new(&[0.2f32, -0.3], &dev).unwrap())
            .unwrap();
        aucm.alpha
            .set(&Tensor::new(&[0.5f32, 1.5], &dev).unwrap())
            .unwrap();
        let l = Tensor::from_slice(&logits, (3, 2), &dev).unwrap();
        let t = Tensor::from_slice(&y, (3, 2), &dev).unwrap();
        let ones = t.ones_like().unwrap();
        let got = aucm
            .loss(&l, &t, &ones)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let col = |c: usize| -> (Vec<f64>, Vec<f64>) {
            (
                (0..3).map(|i| sigmoid(logits[i * 2 + c] as f64)).collect(),
                (0..3).map(|i| y[i * 2 + c] as f64).collect(),
            )
        };
        let (s0, y0) = col(0);
        let (s1, y1) = col(1);
        let want = (libauc(&s0, &y0, 0.4, 1.0, 0.6, 0.2, 0.5)
            + libauc(&s1, &y1, 0.25, 1.0, 0.1, -0.3, 1.5))
            / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");

        // Masking the last row equals dropping it.
        let mask = Tensor::from_slice(&[1f32, 1.0, 1.0, 1.0, 0.0, 0.0], (3, 2), &dev).unwrap();
        let masked = aucm
            .loss(&l, &t, &mask)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = (libauc(&s0[..2], &y0[..2], 0.4, 1.0, 0.6, 0.2, 0.5)
            + libauc(&s1[..2], &y1[..2], 0.25, 1.0, 0.1, -0.3, 1.5))
            / 2.0;
        assert!((masked - want).abs() < 1e-5, "{masked} vs {want}");
    }

    #[test]
    fn positive_rates_count_labelled_entries_only() {
        let values = [1f32, 0.0, 1.0, 1.0, 0.0, 0.0];
        let masks = [1f32, 1.0, 1.0, 0.0, 1.0, 1.0];
        assert_eq!(positive_rates(&values, &masks, 2), vec![2.0 / 3.0, 0.0]);
        assert!(Aucm::new(1.0, vec![0.5, 0.0], &Device::Cpu).is_err());
    }

    #[test]
    fn pesg_schedule_decays_at_epoch_starts() {
        assert_eq!(pesg_learning_rate(0.1, 0, 1, 10.0), 0.1);
        assert!((pesg_learning_rate(0.1, 2, 1, 10.0) - 0.001).abs() < 1e-12);
        assert_eq!(pesg_learning_rate(0.1, 5, 0, 10.0), 0.1);
        assert!(!pesg_moves_reference(0, 1));
        assert!(pesg_moves_reference(1, 1));
        assert!(!pesg_moves_reference(3, 2));
    }
}
