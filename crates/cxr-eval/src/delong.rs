//! DeLong's test: are two models' AUCs on the same images different?
//!
//! Two models scored on the same images make correlated errors, so their AUCs cannot be compared
//! as if independent: the images that are hard for one are hard for the other. DeLong, DeLong &
//! Clarke-Pearson (1988) estimate the covariance of the two AUCs from each image's "structural
//! component" (its placement among the other class), and the difference over its standard error
//! is asymptotically normal. We use the fast form of Sun & Xu (2014), which gets the placements
//! from midranks in O(n log n) instead of comparing every positive with every negative.
//!
//! DeLong's variance treats the images as independent draws. A chest X-ray data set is not: a
//! CheXpert patient has several studies and a study several views, and one patient's images are
//! hard or easy together, so the images of one patient carry less information than as many
//! patients would, and the plain variance is too small (p-values too small). `cxr-eval compare`
//! therefore uses [`clustered_paired_test`], Obuchowski's (1997) clustered generalisation
//! ("Nonparametric analysis of clustered ROC curve data", Biometrics 53:567-578): the same
//! placements, summed within each patient, with the variance taken over patients. With one image
//! per patient it is DeLong's test again (see [`clustered_paired_test`] for the reduction).
//!
//! The variance needs at least two images of each class (the components' sample covariances
//! divide by m - 1 and n - 1), and in the clustered form two patients with a positive image and
//! two with a negative one; with fewer the test is reported as undefined. When the difference
//! has zero estimated variance (identical scores, or two perfect models) the test says p = 1 for
//! equal AUCs and p = 0 otherwise.

use crate::auc::midranks;

/// DeLong's paired test of two AUCs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeLong {
    pub auc_a: f64,
    pub auc_b: f64,
    /// Variance of each AUC and their covariance: DeLong's from [`paired_test`], Obuchowski's
    /// clustered ones from [`clustered_paired_test`].
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
    Some(finish(
        ca.auc,
        cb.auc,
        s(&ca, &ca),
        s(&cb, &cb),
        s(&ca, &cb),
    ))
}

/// The test statistic and p-value from the AUCs and their (co)variances.
fn finish(auc_a: f64, auc_b: f64, var_a: f64, var_b: f64, covariance: f64) -> DeLong {
    let diff = auc_a - auc_b;
    let var_diff = var_a + var_b - 2.0 * covariance;
    let z = if var_diff > 0.0 {
        diff / var_diff.sqrt()
    } else if diff == 0.0 {
        0.0
    } else {
        diff.signum() * f64::INFINITY
    };
    DeLong {
        auc_a,
        auc_b,
        var_a,
        var_b,
        covariance,
        z,
        p_value: two_sided_p(z),
    }
}

/// DeLong's test of `auc(a) == auc(b)` clustered by `clusters` (each unit's patient, any ids):
/// Obuchowski (1997), Biometrics 53:567-578, for two correlated AUCs.
///
/// With `I` clusters, cluster `i` holding `m_i` positive and `n_i` negative units (`M = sum m_i`,
/// `N = sum n_i`), `I10` clusters with a positive and `I01` with a negative, and the DeLong
/// placements `V10(x)` (the fraction of all negatives a positive outranks, ties half) and `V01(y)`
/// (the fraction of all positives that outrank a negative) summed within each cluster into
/// `V10_i` and `V01_i` (0 for a cluster without that class), for models `r, s` with AUCs `t^r, t^s`:
///
/// ```text
/// S10^rs = I10 / ((I10 - 1) M) * sum_i (V10_i^r - m_i t^r) (V10_i^s - m_i t^s)
/// S01^rs = I01 / ((I01 - 1) N) * sum_i (V01_i^r - n_i t^r) (V01_i^s - n_i t^s)
/// S11^rs = I / (I - 1)         * sum_i (V10_i^r - m_i t^r) (V01_i^s - n_i t^s)
/// cov(r, s) = S10^rs / M + S01^rs / N + (S11^rs + S11^sr) / (M N)
/// ```
///
/// and `var_a = cov(a, a)`, `var_b = cov(b, b)`, `covariance = cov(a, b)`; `z` and the p-value as
/// in [`paired_test`]. The AUCs are the ordinary ones (clustering changes only the variance).
/// `S11` is the covariance of a patient's positive and negative images, which DeLong's
/// independence assumption sets to zero. The placements come from the same midranks as
/// [`paired_test`], so this is O(n log n).
///
/// **Reduction.** When every cluster holds one unit, `I10 = M`, `I01 = N`, each `S11` term is a
/// sum of zeros (a cluster has no units of one class, so that residual is `0 - 0`), and since the
/// placements of either class average to the AUC, `S10^rs / M` is DeLong's sample covariance of
/// the positives' placements over `M`, likewise `S01`: the test *is* [`paired_test`]
/// mathematically. In floating point the two agree to rounding error (a few units in the last
/// place), not bit for bit, because DeLong centres the placements on their computed mean and divides in
/// another order, where this centres on the AUC as the paper does.
///
/// **Minimum data.** `None` unless at least two clusters contain a positive unit and two a
/// negative one (`I10, I01 >= 2`; then `M, N, I >= 2` too), as `S10` and `S01` divide by
/// `I10 - 1` and `I01 - 1`. Every estimated variance, of either AUC and of the difference, is
/// non-negative: `I / (I - 1)` is at most both other factors, so each is at least
/// `I / (I - 1) * sum_i (x_i / M + y_i / N)^2` for the residuals `x_i, y_i` of the quantity.
///
/// # Panics
/// If the four slices differ in length.
pub fn clustered_paired_test(
    labels: &[bool],
    a: &[f64],
    b: &[f64],
    clusters: &[usize],
) -> Option<DeLong> {
    assert!(
        labels.len() == a.len() && a.len() == b.len() && b.len() == clusters.len(),
        "one label and cluster per score of each model"
    );
    // Clusters renumbered 0.. in order of first appearance.
    let mut index = std::collections::HashMap::new();
    let dense: Vec<usize> = clusters
        .iter()
        .map(|c| {
            let next = index.len();
            *index.entry(*c).or_insert(next)
        })
        .collect();
    let k = index.len();
    // Per cluster: its positive and negative units.
    let (mut m_i, mut n_i) = (vec![0usize; k], vec![0usize; k]);
    for (&l, &c) in labels.iter().zip(&dense) {
        if l {
            m_i[c] += 1
        } else {
            n_i[c] += 1
        }
    }
    let i10 = m_i.iter().filter(|&&m| m > 0).count();
    let i01 = n_i.iter().filter(|&&n| n > 0).count();
    if i10 < 2 || i01 < 2 {
        return None;
    }
    let (pos_a, neg_a) = split(labels, a);
    let (pos_b, neg_b) = split(labels, b);
    let (m, n) = (pos_a.len() as f64, neg_a.len() as f64);
    let ca = components(&pos_a, &neg_a);
    let cb = components(&pos_b, &neg_b);
    // Each model's residuals V10_i - m_i t and V01_i - n_i t per cluster.
    let residuals = |c: &Components| {
        let (mut x, mut y) = (vec![0.0; k], vec![0.0; k]);
        let (mut pos, mut neg) = (c.v_pos.iter(), c.v_neg.iter());
        // `split` kept the units' order within each class, and the placements follow it.
        for (&l, &cl) in labels.iter().zip(&dense) {
            match l {
                true => x[cl] += pos.next().expect("a placement per positive"),
                false => y[cl] += neg.next().expect("a placement per negative"),
            }
        }
        for cl in 0..k {
            x[cl] -= m_i[cl] as f64 * c.auc;
            y[cl] -= n_i[cl] as f64 * c.auc;
        }
        (x, y)
    };
    let (ra, rb) = (residuals(&ca), residuals(&cb));
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(s, t)| s * t).sum::<f64>();
    let s10 = i10 as f64 / ((i10 - 1) as f64 * m);
    let s01 = i01 as f64 / ((i01 - 1) as f64 * n);
    let s11 = k as f64 / (k - 1) as f64;
    let cov = |(xr, yr): &(Vec<f64>, Vec<f64>), (xs, ys): &(Vec<f64>, Vec<f64>)| {
        s10 * dot(xr, xs) / m + s01 * dot(yr, ys) / n + s11 * (dot(xr, ys) + dot(xs, yr)) / (m * n)
    };
    Some(finish(
        ca.auc,
        cb.auc,
        cov(&ra, &ra),
        cov(&rb, &rb),
        cov(&ra, &rb),
    ))
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
    /// (`tests/reference/eval_check.py`, the O(mn) placement-matrix form of DeLong 1988, not Sun & Xu).
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
    fn clustered_with_one_unit_per_cluster_is_delong() {
        // Any distinct ids, in any order.
        let ids: Vec<usize> = (0..LABELS.len()).map(|i| 1000 - 37 * i).collect();
        let c = clustered_paired_test(&LABELS, &A, &B, &ids).unwrap();
        let d = paired_test(&LABELS, &A, &B).unwrap();
        assert_eq!((c.auc_a, c.auc_b), (d.auc_a, d.auc_b));
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-14 * y.abs().max(1e-3);
        for (got, want) in [
            (c.var_a, d.var_a),
            (c.var_b, d.var_b),
            (c.covariance, d.covariance),
            (c.z, d.z),
            (c.p_value, d.p_value),
        ] {
            assert!(close(got, want), "clustered {got}, DeLong {want}");
        }
    }

    #[test]
    fn clustered_counts_patients_not_images() {
        // Every image duplicated within its patient: DeLong sees twice the evidence and shrinks
        // the variance; clustered by patient it sees the same patients.
        let ids: Vec<usize> = (0..LABELS.len()).collect();
        let once = clustered_paired_test(&LABELS, &A, &B, &ids).unwrap();
        let twice = |x: &[f64]| -> Vec<f64> { x.iter().chain(x).copied().collect() };
        let labels: Vec<bool> = LABELS.iter().chain(&LABELS).copied().collect();
        let ids2: Vec<usize> = ids.iter().chain(&ids).copied().collect();
        let clustered = clustered_paired_test(&labels, &twice(&A), &twice(&B), &ids2).unwrap();
        let naive = paired_test(&labels, &twice(&A), &twice(&B)).unwrap();
        assert_eq!((clustered.auc_a, clustered.auc_b), (once.auc_a, once.auc_b));
        assert!(naive.se_difference() < 0.75 * once.se_difference());
        let rel = clustered.se_difference() / once.se_difference();
        // Same clusters and placements; cluster sums, M and N all double, and cancel.
        assert!((rel - 1.0).abs() < 1e-12, "{rel}");
    }

    #[test]
    fn clustered_swapping_models_negates_z() {
        let ids = [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 1];
        let ab = clustered_paired_test(&LABELS, &A, &B, &ids).unwrap();
        let ba = clustered_paired_test(&LABELS, &B, &A, &ids).unwrap();
        assert_eq!((ab.var_a, ab.var_b), (ba.var_b, ba.var_a));
        assert!((ab.covariance - ba.covariance).abs() < 1e-17);
        assert!((ab.z + ba.z).abs() < 1e-14 && (ab.p_value - ba.p_value).abs() < 1e-14);
        let same = clustered_paired_test(&LABELS, &A, &A, &ids).unwrap();
        assert_eq!((same.z, same.p_value), (0.0, 1.0));
    }

    #[test]
    fn clustered_needs_two_clusters_of_each_class() {
        // Five positives and seven negatives, but all positives in one patient.
        let ids = [0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7];
        assert!(clustered_paired_test(&LABELS, &A, &B, &ids).is_none());
        // All negatives in one patient (who also has a positive).
        let ids = [0, 1, 2, 3, 9, 9, 9, 9, 9, 9, 9, 9];
        assert!(clustered_paired_test(&LABELS, &A, &B, &ids).is_none());
        // Two patients, each with both classes: defined.
        let ids = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        let t = clustered_paired_test(&LABELS, &A, &B, &ids).unwrap();
        assert!(t.var_a >= 0.0 && t.var_b >= 0.0 && t.se_difference() >= 0.0);
    }

    #[test]
    fn p_value_tail() {
        assert_eq!(two_sided_p(0.0), 1.0);
        assert!((two_sided_p(1.959963984540054) - 0.05).abs() < 1e-15);
        // scipy: 2 * norm.sf(10)
        assert!((two_sided_p(-10.0) / 1.523970604832094e-23 - 1.0).abs() < 1e-12);
    }
}
