//! Bootstrap intervals and paired tests that resample patients.
//!
//! The study's verdicts are AUC differences of a point or two, on validation sets of a few
//! hundred studies; whether such a difference means anything depends on its uncertainty. The
//! bootstrap gets that uncertainty by re-scoring resampled validation sets. It resamples
//! *patients*, not images: a patient's views and follow-ups are correlated, and resampling
//! them one by one would pretend to more independent evidence than there is and give intervals
//! that are too narrow. A replicate draws as many patients as there are, with replacement, and
//! counts each unit (image or study) of a patient drawn k times k times.
//!
//! Replicate `r` draws from its own SplitMix64 stream, seeded by `cxr_core::hash::seeded_hash(
//! seed, r)`, so the result depends only on the seed, never on the thread count or on which
//! thread ran which replicate. Intervals are percentile intervals (numpy's default linear
//! interpolation). A replicate in which a task lacks a class has no AUC for that task: it is
//! left out of that task's interval and of any mean that includes the task, and the number of
//! replicates used is reported.

use crate::auc::Ranked;
use cxr_core::hash::{seeded_hash, SplitMix64};
use rayon::prelude::*;

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bootstrap {
    pub replicates: usize,
    pub seed: u64,
    /// Coverage of the intervals, e.g. 0.95.
    pub level: f64,
}

impl Bootstrap {
    /// `cxr-eval score`'s defaults: 2000 replicates, seed 0, 95% intervals.
    pub const DEFAULT: Bootstrap = Bootstrap {
        replicates: 2000,
        seed: 0,
        level: 0.95,
    };
}

/// Each unit's patient as an index, in order of first appearance, and the patients' ids.
pub fn index_patients<'a>(
    unit_patient_ids: impl IntoIterator<Item = &'a str>,
) -> (Vec<u32>, Vec<&'a str>) {
    let mut index: std::collections::HashMap<&str, u32> = Default::default();
    let mut ids = Vec::new();
    let unit_patient = unit_patient_ids
        .into_iter()
        .map(|p| {
            *index.entry(p).or_insert_with(|| {
                ids.push(p);
                (ids.len() - 1) as u32
            })
        })
        .collect();
    (unit_patient, ids)
}

/// A percentile interval and the number of replicates it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub replicates_used: usize,
}

/// The generator of bootstrap replicate `replicate` (tests/reference/eval_check.py draws the same).
fn replicate_rng(seed: u64, replicate: usize) -> SplitMix64 {
    SplitMix64::new(seeded_hash(seed, &(replicate as u64).to_le_bytes()))
}

/// The weight of every unit in replicate `replicate`: how often its patient was drawn.
pub fn unit_weights(
    unit_patient: &[u32],
    n_patients: usize,
    seed: u64,
    replicate: usize,
) -> Vec<u32> {
    let mut counts = vec![0u32; n_patients];
    let mut weights = vec![0u32; unit_patient.len()];
    fill_weights(unit_patient, seed, replicate, &mut counts, &mut weights);
    weights
}

fn fill_weights(
    unit_patient: &[u32],
    seed: u64,
    replicate: usize,
    counts: &mut [u32],
    weights: &mut [u32],
) {
    counts.fill(0);
    let mut rng = replicate_rng(seed, replicate);
    for _ in 0..counts.len() {
        counts[rng.below(counts.len())] += 1;
    }
    for (w, &p) in weights.iter_mut().zip(unit_patient) {
        *w = counts[p as usize];
    }
}

/// AUCs of every ranked task in every replicate: `result[r][t]`, `None` where task `t` lacks a
/// class in replicate `r`. Tasks of two models on the same units, ranked side by side, share
/// each replicate's draw: that is the paired bootstrap.
pub fn replicate_aucs(
    ranked: &[Ranked],
    unit_patient: &[u32],
    n_patients: usize,
    cfg: &Bootstrap,
) -> Vec<Vec<Option<f64>>> {
    over_replicates(unit_patient, n_patients, cfg, |weights| {
        ranked.iter().map(|t| t.auc_weighted(weights)).collect()
    })
}

/// The mean of one value per unit in every replicate (units weighted by their patient's draws).
pub fn replicate_means(
    values: &[f64],
    unit_patient: &[u32],
    n_patients: usize,
    cfg: &Bootstrap,
) -> Vec<f64> {
    over_replicates(unit_patient, n_patients, cfg, |weights| {
        let (sum, n) = values
            .iter()
            .zip(weights)
            .fold((0.0, 0u64), |(sum, n), (&v, &w)| {
                (sum + v * f64::from(w), n + u64::from(w))
            });
        // Every patient has a unit, so a replicate (as many draws as patients) has one.
        sum / n as f64
    })
}

/// `statistic` of every replicate's unit weights, replicates in parallel.
fn over_replicates<T: Send>(
    unit_patient: &[u32],
    n_patients: usize,
    cfg: &Bootstrap,
    statistic: impl Fn(&[u32]) -> T + Sync,
) -> Vec<T> {
    (0..cfg.replicates)
        .into_par_iter()
        .map_init(
            || (vec![0u32; n_patients], vec![0u32; unit_patient.len()]),
            |(counts, weights), r| {
                fill_weights(unit_patient, cfg.seed, r, counts, weights);
                statistic(weights)
            },
        )
        .collect()
}

/// The `q` quantile of sorted `v` with linear interpolation (numpy's default, type 7).
fn quantile(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Percentile interval of the defined values; `None` when none is defined.
pub fn interval(values: impl IntoIterator<Item = Option<f64>>, level: f64) -> Option<Interval> {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some(Interval {
        low: quantile(&v, tail),
        high: quantile(&v, 1.0 - tail),
        replicates_used: v.len(),
    })
}

/// Mean of the AUCs of `tasks` in one replicate; `None` if any of them is undefined there.
pub fn mean_of(replicate: &[Option<f64>], tasks: &[usize]) -> Option<f64> {
    let sum: Option<f64> = tasks.iter().map(|&t| replicate[t]).sum();
    sum.map(|s| s / tasks.len() as f64)
}

/// Two-sided bootstrap p-value of "the statistic is 0" from its replicates: twice the smaller
/// tail beyond 0, with the +1 correction that keeps it above 0 (Davison & Hinkley, 1997):
/// `min(1, 2 min(1 + #{d <= 0}, 1 + #{d >= 0}) / (B + 1))`. `p < 0.05` about when the 95%
/// percentile interval excludes 0.
pub fn p_value(replicates: &[f64]) -> f64 {
    let b = replicates.len() as f64;
    let le = replicates.iter().filter(|&&d| d <= 0.0).count() as f64;
    let ge = replicates.iter().filter(|&&d| d >= 0.0).count() as f64;
    (2.0 * (1.0 + le.min(ge)) / (b + 1.0)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_weight_units_by_their_patients_draws() {
        let unit_patient = [0, 0, 1, 2, 2, 2];
        let values = [1.0, 3.0, 10.0, 0.0, 0.5, 1.0];
        let cfg = Bootstrap {
            replicates: 50,
            seed: 4,
            level: 0.9,
        };
        let means = replicate_means(&values, &unit_patient, 3, &cfg);
        for (r, mean) in means.iter().enumerate() {
            let w = unit_weights(&unit_patient, 3, cfg.seed, r);
            let total: u32 = w.iter().sum();
            let sum: f64 = values.iter().zip(&w).map(|(v, &w)| v * f64::from(w)).sum();
            assert!(
                (mean - sum / f64::from(total)).abs() < 1e-12,
                "replicate {r}"
            );
        }
        assert!(means.iter().any(|&m| m != means[0]), "the draws differ");
        // One patient: every replicate draws it alone.
        let one = replicate_means(&values, &[0; 6], 1, &cfg);
        assert!(one.iter().all(|&m| (m - 15.5 / 6.0).abs() < 1e-12));
    }

    #[test]
    fn patients_are_indexed_in_order_of_appearance() {
        let (units, ids) = index_patients(["p7", "p2", "p7", "p9", "p2"]);
        assert_eq!(units, [0, 1, 0, 2, 1]);
        assert_eq!(ids, ["p7", "p2", "p9"]);
    }

    #[test]
    fn weights_resample_patients_and_are_seeded() {
        // Six units: patient 0 has three, patient 1 two, patient 2 one.
        let unit_patient = [0, 0, 0, 1, 1, 2];
        for r in 0..200 {
            let w = unit_weights(&unit_patient, 3, 7, r);
            assert_eq!(
                (w[0], w[1]),
                (w[2], w[2]),
                "a patient's units share its weight"
            );
            assert_eq!(w[3], w[4]);
            assert_eq!(w[0] + w[3] + w[5], 3, "three patients drawn");
            assert_eq!(w, unit_weights(&unit_patient, 3, 7, r));
        }
        let draws: Vec<_> = (0..50)
            .map(|r| unit_weights(&unit_patient, 3, 7, r))
            .collect();
        let other: Vec<_> = (0..50)
            .map(|r| unit_weights(&unit_patient, 3, 8, r))
            .collect();
        assert_ne!(draws, other);
    }

    #[test]
    fn draws_are_pinned() {
        // The Python check (`tests/reference/eval_check.py`) reproduces these draws; a change here
        // changes every published interval.
        assert_eq!(unit_weights(&[0, 1, 2, 3, 4], 5, 0, 0), PINNED_SEED0_REP0);
        assert_eq!(
            unit_weights(&[0, 1, 2, 3, 4], 5, 42, 1999),
            PINNED_SEED42_REP1999
        );
    }
    const PINNED_SEED0_REP0: [u32; 5] = [1, 1, 0, 2, 1];
    const PINNED_SEED42_REP1999: [u32; 5] = [0, 2, 2, 1, 0];

    #[test]
    fn same_result_on_any_number_of_threads() {
        let labels: Vec<Option<bool>> = (0..200).map(|i| Some(i % 3 == 0)).collect();
        let scores: Vec<f64> = (0..200)
            .map(|i| ((i * 37) % 101) as f64 / 100.0 + if i % 3 == 0 { 0.2 } else { 0.0 })
            .collect();
        let ranked = [Ranked::new(&labels, &scores)];
        let unit_patient: Vec<u32> = (0..200).map(|i| i / 2).collect();
        let cfg = Bootstrap {
            replicates: 300,
            seed: 3,
            level: 0.95,
        };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| replicate_aucs(&ranked, &unit_patient, 100, &cfg))
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one.len(), 300);
        let ci = interval(one.iter().map(|r| r[0]), 0.95).unwrap();
        assert_eq!(ci.replicates_used, 300);
        assert!(ci.low < ci.high);
    }

    #[test]
    fn quantiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [2.5, 97.5]) == [1.1, 9.4]
        let ci = interval([4.0, 1.0, 10.0, 3.0, 2.0].map(Some), 0.95).unwrap();
        assert!(
            (ci.low - 1.1).abs() < 1e-12 && (ci.high - 9.4).abs() < 1e-12,
            "{ci:?}"
        );
        assert_eq!(
            interval([None, Some(0.5)], 0.95).unwrap().replicates_used,
            1
        );
        assert!(interval([None], 0.95).is_none());
    }

    #[test]
    fn means_skip_replicates_with_an_undefined_task_and_p_values_are_two_sided() {
        assert_eq!(mean_of(&[Some(0.5), None, Some(0.7)], &[0, 2]), Some(0.6));
        assert_eq!(mean_of(&[Some(0.5), None, Some(0.7)], &[0, 1]), None);
        assert_eq!(p_value(&[0.1; 99]), 0.02);
        assert_eq!(p_value(&[-0.1, 0.1]), 1.0);
    }
}
