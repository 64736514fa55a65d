//! DeLong's test: are two models' AUCs on the same images different?
//!
//! Two models scored on the same images make correlated errors, so their AUCs cannot be compared
//! as if independent: the images that are hard for one are hard for the other. DeLong, DeLong &
//! Clarke-Pearson (1988) estimate the covariance of the two AUCs from each image's "structural
//! component" (its placement among the other class), and the difference over its standard error
//! is asymptotically normal. We use the fast form of Sun & Xu (2014), which gets the placements
//! from midranks in O(n log n) instead of comparing every positive with every negative.
//!
//! The variance needs at least two images of each class (the components' sample covariances
//! divide by m - 1 and n - 1); with fewer the test is reported as undefined. When the difference
//! has zero estimated variance (identical scores, or two perfect models) the test says p = 1 for
//! equal AUCs and p = 0 otherwise.

use crate::auc::midranks;

/// DeLong's paired test of two AUCs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DeLong {
    pub auc_a: f64,
    pub auc_b: f64,
    /// DeLong variance of each AUC and their covariance.
    pub var_a: f64,
    pub var_b: f64,
    pub covariance: f64,
    /// `(auc_a - auc_b) / sqrt(var_a + var_b - 2 covariance)`; 0 when both vanish.
    pub z: f64,
    /// Two-sided p-value, `2 (1 - Phi(|z|))`.
    pub p_value: f64,
}

impl DeLong {
    /// Standard error of `auc_a - auc_b`.
    pub fn se_difference(&self) -> f64 {
        (self.var_a + self.var_b - 2.0 * self.covariance)
            .max(0.0)
            .sqrt()
    }
}

/// Placements of one model's scores: the AUC and the structural components of both classes.
struct Components {
    auc: f64,
    /// One per positive: the fraction of negatives it outranks (ties half).
    v_pos: Vec<f64>,
    /// One per negative: the fraction of positives that outrank it (ties half).
    v_neg: Vec<f64>,
}

fn components(pos: &[f64], neg: &[f64]) -> Components {
    let (m, n) = (pos.len(), neg.len());
    let tx = midranks(pos);
    let ty = midranks(neg);
    let all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    let tz = midranks(&all);
    let v_pos: Vec<f64> = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
    let v_neg: Vec<f64> = (0..n)
        .map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64)
        .collect();
    // Midranks are multiples of 1/2, so this sum is exact and the AUC is rounded once, exactly
    // as `auc::roc_auc` computes it.
    let rank_sum: f64 = tz[..m].iter().sum();
    let auc = (rank_sum - (m * (m + 1)) as f64 / 2.0) / (m as f64 * n as f64);
    Components { auc, v_pos, v_neg }
}

/// Sample covariance (divisor len - 1).
fn covariance(x: &[f64], y: &[f64]) -> f64 {
    let k = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / k, y.iter().sum::<f64>() / k);
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - mx) * (b - my))
        .sum::<f64>()
        / (k - 1.0)
}

/// DeLong's variance of the AUC of `scores` (one model alone); `None` with fewer than two
/// images of either class.
pub fn auc_variance(labels: &[bool], scores: &[f64]) -> Option<(f64, f64)> {
    let (pos, neg) = split(labels, scores);
    if pos.len() < 2 || neg.len() < 2 {
        return None;
    }
    let c = components(&pos, &neg);
    let var = covariance(&c.v_pos, &c.v_pos) / pos.len() as f64
        + covariance(&c.v_neg, &c.v_neg) / neg.len() as f64;
    Some((c.auc, var))
}

/// DeLong's test of `auc(a) == auc(b)` for two models' scores of the same images; `None` with
/// fewer than two images of either class.
///
/// # Panics
/// If the three slices differ in length.
pub fn paired_test(labels: &[bool], a: &[f64], b: &[f64]) -> Option<DeLong> {
    assert!(
        labels.len() == a.len() && a.len() == b.len(),
        "one label per score of each model"
    );
    let (pos_a, neg_a) = split(labels, a);
    let (pos_b, neg_b) = split(labels, b);
    let (m, n) = (pos_a.len() as f64, neg_a.len() as f64);
    if m < 2.0 || n < 2.0 {
        return None;
    }
    let ca = components(&pos_a, &neg_a);
    let cb = components(&pos_b, &neg_b);
    let s = |x: &Components, y: &Components| {
        covariance(&x.v_pos, &y.v_pos) / m + covariance(&x.v_neg, &y.v_neg) / n
    };
    let (var_a, var_b, cov) = (s(&ca, &ca), s(&cb, &cb), s(&ca, &cb));
    let diff = ca.auc - cb.auc;
    let var_diff = var_a + var_b - 2.0 * cov;
    let z = if var_diff > 0.0 {
        diff / var_diff.sqrt()
    } else if diff == 0.0 {
        0.0
    } else {
        diff.signum() * f64::INFINITY
    };
    Some(DeLong {
        auc_a: ca.auc,
        auc_b: cb.auc,
        var_a,
        var_b,
        covariance: cov,
        z,
        p_value: two_sided_p(z),
    })
}

/// `2 (1 - Phi(|z|)) = erfc(|z| / sqrt 2)`, accurate far into the tail.
pub fn two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

fn split(labels: &[bool], scores: &[f64]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(labels.len(), scores.len(), "one label per score");
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for (&l, &s) in labels.iter().zip(scores) {
        if l {
            pos.push(s)
        } else {
            neg.push(s)
        }
    }
    (pos, neg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auc::roc_auc;

    /// A small case with ties in both models, computed independently with numpy/scipy
    /// (`bench/eval_check.py`, the O(mn) placement-matrix form of DeLong 1988, not Sun & Xu).
    const LABELS: [bool; 12] = [
        true, true, true, true, true, false, false, false, false, false, false, false,
    ];
    const A: [f64; 12] = [0.9, 0.8, 0.8, 0.55, 0.3, 0.7, 0.5, 0.4, 0.4, 0.2, 0.1, 0.8];
    const B: [f64; 12] = [0.6, 0.9, 0.5, 0.5, 0.2, 0.6, 0.3, 0.5, 0.1, 0.3, 0.4, 0.2];

    #[test]
    fn agrees_with_independent_placement_matrix_computation() {
        let t = paired_test(&LABELS, &A, &B).unwrap();
        assert_eq!(Some(t.auc_a), roc_auc(&LABELS, &A));
        assert_eq!(Some(t.auc_b), roc_auc(&LABELS, &B));
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y.abs().max(1e-3);
        assert!(close(t.var_a, DELONG_VAR_A), "{}", t.var_a);
        assert!(close(t.var_b, DELONG_VAR_B), "{}", t.var_b);
        assert!(close(t.covariance, DELONG_COV), "{}", t.covariance);
        assert!(close(t.z, DELONG_Z), "{}", t.z);
        assert!(close(t.p_value, DELONG_P), "{}", t.p_value);
        let (auc, var) = auc_variance(&LABELS, &A).unwrap();
        assert_eq!((auc, var), (t.auc_a, t.var_a));
    }

    const DELONG_VAR_A: f64 = 0.023571428571428577;
    const DELONG_VAR_B: f64 = 0.026734693877551022;
    const DELONG_COV: f64 = 0.018350340136054424;
    const DELONG_Z: f64 = 0.24494897427831788;
    const DELONG_P: f64 = 0.80649594050734;

    #[test]
    fn identical_predictions_give_p_one() {
        let t = paired_test(&LABELS, &A, &A).unwrap();
        assert_eq!((t.z, t.p_value), (0.0, 1.0));
        assert_eq!(t.var_a, t.covariance);
    }

    #[test]
    fn swapping_models_negates_z_and_keeps_variance_and_p() {
        let ab = paired_test(&LABELS, &A, &B).unwrap();
        let ba = paired_test(&LABELS, &B, &A).unwrap();
        assert_eq!(
            (ab.var_a, ab.var_b, ab.covariance),
            (ba.var_b, ba.var_a, ba.covariance)
        );
        assert_eq!(ab.se_difference(), ba.se_difference());
        assert_eq!(ab.z, -ba.z);
        assert_eq!(ab.p_value, ba.p_value);
    }

    #[test]
    fn too_few_of_a_class_is_undefined() {
        let labels = [true, false, false];
        assert!(paired_test(&labels, &[0.1, 0.2, 0.3], &[0.3, 0.2, 0.1]).is_none());
        assert!(auc_variance(&[true, true], &[0.1, 0.2]).is_none());
    }

    #[test]
    fn p_value_tail() {
        assert_eq!(two_sided_p(0.0), 1.0);
        assert!((two_sided_p(1.959963984540054) - 0.05).abs() < 1e-15);
        // scipy: 2 * norm.sf(10)
        assert!((two_sided_p(-10.0) / 1.523970604832094e-23 - 1.0).abs() < 1e-12);
    }
}
