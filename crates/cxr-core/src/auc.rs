//! ROC AUC, exact with ties.
//!
//! The area under the ROC curve equals the Mann-Whitney statistic: the probability that a random
//! positive scores above a random negative, a tie counting one half. Computed that way, from
//! sorted scores and integer pair counts, the result is the exact fraction rounded once, so it
//! agrees with scikit-learn's trapezoid over `roc_curve` (which also joins tied scores into one
//! step) to the last bit or two, and never depends on the order of tied rows.
//!
//! An AUC needs both classes. When a task has one class only (CheXpert's validation set has no
//! positive Fracture) the AUC is undefined: `None`, never 0, 0.5 or an error, so a mean over tasks
//! can leave it out by name instead of being dragged by a made-up number.
//!
//! [`roc_auc`] is what a training loop calls on validation outputs. [`Ranked`] sorts a task
//! once so that many weighted AUCs (bootstrap replicates) cost one linear pass each.

/// An order-preserving integer key: `a < b` as f64 iff `key(a) < key(b)`, with `-0.0 == 0.0`
/// (the total order of `f64::total_cmp`, except that the two zeros tie, as they do for
/// scikit-learn). Integer keys sort faster than floats and make ties exact.
fn key(score: f64) -> u64 {
    let bits = (score + 0.0).to_bits(); // `+ 0.0` turns -0.0 into 0.0
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// ROC AUC of `scores` against binary `labels` (`true` = positive).
///
/// `None` when all labels are equal (the AUC is undefined). Scores may be probabilities or
/// logits; only their order matters. NaN scores have no order: callers must refuse them
/// (predictions files already do).
///
/// # Panics
/// If `labels` and `scores` differ in length.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    assert_eq!(labels.len(), scores.len(), "one label per score");
    debug_assert!(scores.iter().all(|s| !s.is_nan()), "NaN score");
    let n_pos = labels.iter().filter(|&&l| l).count();
    let mut pos = Vec::with_capacity(n_pos);
    let mut neg = Vec::with_capacity(labels.len() - n_pos);
    for (&l, &s) in labels.iter().zip(scores) {
        if l {
            pos.push(key(s))
        } else {
            neg.push(key(s))
        }
    }
    auc_of_keys(&mut pos, &mut neg)
}

/// ROC AUC over the items whose label is known (`Some`); unknown items are left out.
pub fn roc_auc_known(labels: &[Option<bool>], scores: &[f64]) -> Option<f64> {
    assert_eq!(labels.len(), scores.len(), "one label per score");
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for (&l, &s) in labels.iter().zip(scores) {
        match l {
            Some(true) => pos.push(key(s)),
            Some(false) => neg.push(key(s)),
            None => {}
        }
    }
    auc_of_keys(&mut pos, &mut neg)
}

/// Sort both classes' keys and count, for every positive, the negatives below it (twice) and
/// tied with it (once): the doubled Mann-Whitney U. The count is exact in u64, and so is its
/// conversion to f64 below 2^53 (about 130 million items), so the result is rounded only once.
fn auc_of_keys(pos: &mut [u64], neg: &mut [u64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    pos.sort_unstable();
    neg.sort_unstable();
    let mut doubled: u64 = 0;
    let (mut below, mut i) = (0usize, 0usize);
    while i < pos.len() {
        let v = pos[i];
        let mut j = i + 1;
        while j < pos.len() && pos[j] == v {
            j += 1;
        }
        while below < neg.len() && neg[below] < v {
            below += 1;
        }
        let mut tied = below;
        while tied < neg.len() && neg[tied] == v {
            tied += 1;
        }
        doubled += (j - i) as u64 * (2 * below + (tied - below)) as u64;
        i = j;
    }
    Some(doubled as f64 / (2.0 * pos.len() as f64 * neg.len() as f64))
}

/// Midranks (1-based; tied values share the mean of their ranks), as DeLong's method needs.
pub fn midranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<(u64, usize)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (key(v), i))
        .collect();
    order.sort_unstable();
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && order[j].0 == order[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let mid = (i + 1 + j) as f64 / 2.0;
        for &(_, idx) in &order[i..j] {
            ranks[idx] = mid;
        }
        i = j;
    }
    ranks
}

/// One task's scored items sorted once by score, for repeated weighted AUCs.
///
/// A bootstrap replicate that draws patient `p` k times gives each of p's items weight k; the
/// weighted Mann-Whitney count over tie groups is then one pass over the sorted items.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// Item indices (into the caller's arrays) with known labels, in ascending score order.
    items: Vec<u32>,
    labels: Vec<bool>,
    /// End (exclusive) of each group of tied scores in `items`.
    group_ends: Vec<u32>,
}

impl Ranked {
    /// Sort the items with known labels by score.
    pub fn new(labels: &[Option<bool>], scores: &[f64]) -> Ranked {
        assert_eq!(labels.len(), scores.len(), "one label per score");
        let mut known: Vec<(u64, u32, bool)> = labels
            .iter()
            .zip(scores)
            .enumerate()
            .filter_map(|(i, (l, &s))| l.map(|l| (key(s), i as u32, l)))
            .collect();
        known.sort_unstable();
        let mut group_ends = Vec::new();
        for i in 1..=known.len() {
            if i == known.len() || known[i].0 != known[i - 1].0 {
                group_ends.push(i as u32);
            }
        }
        Ranked {
            items: known.iter().map(|k| k.1).collect(),
            labels: known.iter().map(|k| k.2).collect(),
            group_ends,
        }
    }

    /// The AUC with every item counted `weights[item]` times (0 leaves it out); `None` when
    /// the weighted sample lacks a class.
    pub fn auc_weighted(&self, weights: &[u32]) -> Option<f64> {
        let (mut doubled, mut neg_below, mut pos_total) = (0u64, 0u64, 0u64);
        let mut start = 0usize;
        for &end in &self.group_ends {
            let (mut pos, mut neg) = (0u64, 0u64);
            for k in start..end as usize {
                let w = u64::from(weights[self.items[k] as usize]);
                if self.labels[k] {
                    pos += w
                } else {
                    neg += w
                }
            }
            doubled += pos * (2 * neg_below + neg);
            neg_below += neg;
            pos_total += pos;
            start = end as usize;
        }
        if pos_total == 0 || neg_below == 0 {
            return None;
        }
        Some(doubled as f64 / (2.0 * pos_total as f64 * neg_below as f64))
    }
}

/// The empirical ROC curve: one point per distinct threshold, from (0, 0) to (1, 1).
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    /// False positive rate (1 - specificity), non-decreasing.
    pub fpr: Vec<f64>,
    /// True positive rate (sensitivity), non-decreasing.
    pub tpr: Vec<f64>,
}

impl RocCurve {
    /// The curve of the items with known labels; `None` when a class is missing.
    pub fn new(labels: &[Option<bool>], scores: &[f64]) -> Option<RocCurve> {
        let mut known: Vec<(u64, bool)> = labels
            .iter()
            .zip(scores)
            .filter_map(|(l, &s)| l.map(|l| (key(s), l)))
            .collect();
        let n_pos = known.iter().filter(|k| k.1).count();
        let n_neg = known.len() - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return None;
        }
        known.sort_unstable_by_key(|k| std::cmp::Reverse(k.0)); // highest score first
        let (mut fpr, mut tpr) = (vec![0.0], vec![0.0]);
        let (mut tp, mut fp) = (0usize, 0usize);
        for (i, &(k, l)) in known.iter().enumerate() {
            if l {
                tp += 1
            } else {
                fp += 1
            }
            if i + 1 == known.len() || known[i + 1].0 != k {
                fpr.push(fp as f64 / n_neg as f64);
                tpr.push(tp as f64 / n_pos as f64);
            }
        }
        Some(RocCurve { fpr, tpr })
    }

    /// At most about `max_points` points, keeping both ends: enough to draw a million-image
    /// curve without a million-vertex SVG path (a ROC curve is monotone, so the error is below
    /// one step of the kept points).
    pub fn thinned(&self, max_points: usize) -> RocCurve {
        let n = self.fpr.len();
        if n <= max_points.max(2) {
            return self.clone();
        }
        let step = n.div_ceil(max_points.max(2) - 1);
        let mut keep: Vec<usize> = (0..n).step_by(step).collect();
        if keep.last() != Some(&(n - 1)) {
            keep.push(n - 1);
        }
        RocCurve {
            fpr: keep.iter().map(|&i| self.fpr[i]).collect(),
            tpr: keep.iter().map(|&i| self.tpr[i]).collect(),
        }
    }

    /// Trapezoidal area under the curve; equals [`roc_auc`] (a check, and for plots' labels).
    pub fn area(&self) -> f64 {
        self.fpr
            .windows(2)
            .zip(self.tpr.windows(2))
            .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs counted one by one: the definition, for small inputs.
    fn brute(labels: &[bool], scores: &[f64]) -> Option<f64> {
        let (mut num, mut pairs) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li && !lj {
                    pairs += 1.0;
                    num += if scores[i] > scores[j] {
                        1.0
                    } else if scores[i] == scores[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        (pairs > 0.0).then(|| num / pairs)
    }

    fn pseudo(n: usize, seed: u64, levels: u64) -> (Vec<bool>, Vec<f64>) {
        let h = |i: usize, s: u64| {
            crate::hash::splitmix64(seed.wrapping_mul(1000).wrapping_add(s) ^ i as u64)
        };
        let labels = (0..n).map(|i| h(i, 1) % 3 == 0).collect::<Vec<_>>();
        let scores = (0..n)
            .map(|i| (h(i, 2) % levels) as f64 - 3.0 + if labels[i] { 1.5 } else { 0.0 })
            .collect();
        (labels, scores)
    }

    #[test]
    fn matches_pair_counting_with_ties_and_negative_scores() {
        for seed in 0..50 {
            let (labels, scores) = pseudo(40 + seed as usize, seed, 1 + seed % 7);
            assert_eq!(
                roc_auc(&labels, &scores),
                brute(&labels, &scores),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn keys_order_like_total_cmp_with_zeros_tied() {
        let mut scores: Vec<f64> = (0..5000u64)
            .map(|i| {
                let h = crate::hash::splitmix64(i);
                match i % 4 {
                    0 => f64::from_bits(h) % 1e6, // any sign and magnitude
                    1 => (h % 7) as f64 - 3.0,    // heavy ties around zero
                    2 => f64::NEG_INFINITY,
                    _ => -1e-300 * (h % 3) as f64,
                }
            })
            .filter(|s| !s.is_nan())
            .collect();
        let mut keys: Vec<u64> = scores.iter().map(|&s| key(s)).collect();
        keys.sort_unstable();
        scores.sort_unstable_by(f64::total_cmp);
        assert_eq!(keys, scores.iter().map(|&s| key(s)).collect::<Vec<_>>());
        assert_eq!(key(-0.0), key(0.0));
        assert!(key(-1e-300) < key(0.0) && key(0.0) < key(f64::MIN_POSITIVE));
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        assert_eq!(roc_auc(&[true, false], &[0.0, -0.0]), Some(0.5));
        assert_eq!(midranks(&[0.0, -0.0, 1.0]), [1.5, 1.5, 3.0]);
    }

    #[test]
    fn one_class_is_undefined() {
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(roc_auc_known(&[Some(true), None], &[0.1, 0.2]), None);
        assert!(RocCurve::new(&[Some(false), Some(false)], &[0.1, 0.2]).is_none());
    }

    #[test]
    fn weighted_auc_equals_auc_of_repeated_items() {
        let (labels, scores) = pseudo(60, 3, 5);
        let known: Vec<Option<bool>> = labels.iter().map(|&l| Some(l)).collect();
        let ranked = Ranked::new(&known, &scores);
        assert_eq!(ranked.auc_weighted(&[1; 60]), roc_auc(&labels, &scores));
        let weights: Vec<u32> = (0..60).map(|i| (i * 7 % 4) as u32).collect();
        let (mut l2, mut s2) = (Vec::new(), Vec::new());
        for i in 0..60 {
            for _ in 0..weights[i] {
                l2.push(labels[i]);
                s2.push(scores[i]);
            }
        }
        assert_eq!(ranked.auc_weighted(&weights), roc_auc(&l2, &s2));
        // Unknown labels are left out, whatever their weight.
        let mut partly = known.clone();
        partly[0] = None;
        let expected = roc_auc_known(&partly, &scores);
        assert_eq!(
            Ranked::new(&partly, &scores).auc_weighted(&[3; 60]),
            expected
        );
    }

    #[test]
    fn curve_area_is_the_auc_and_thinning_keeps_ends() {
        let (labels, scores) = pseudo(500, 9, 1000);
        let known: Vec<Option<bool>> = labels.iter().map(|&l| Some(l)).collect();
        let curve = RocCurve::new(&known, &scores).unwrap();
        assert!((curve.area() - roc_auc(&labels, &scores).unwrap()).abs() < 1e-12);
        let thin = curve.thinned(50);
        assert!(thin.fpr.len() <= 51);
        assert_eq!((thin.fpr[0], thin.tpr[0]), (0.0, 0.0));
        assert_eq!(
            (*thin.fpr.last().unwrap(), *thin.tpr.last().unwrap()),
            (1.0, 1.0)
        );
    }
}
