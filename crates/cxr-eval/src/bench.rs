//! Seeded synthetic data for the speed benchmark (`bench/eval.sh`, `cxr-eval bench-auc`).
//!
//! The benchmark times whole processes against scikit-learn on the *same* numbers, so the data
//! come from a formula that numpy reproduces bit for bit (`bench/eval_bench.py`): SplitMix64 of
//! a counter, mapped to [0, 1) with 53 bits, and scores rounded to f32 as a network's sigmoid
//! outputs are (which gives realistic ties). Both sides print the sum of the AUCs to show they
//! scored the same data.

use crate::auc::{roc_auc, Ranked};
use crate::bootstrap::{self, Bootstrap};
use cxr_core::hash::{splitmix64, unit_interval};
use rayon::prelude::*;
use std::time::Instant;

/// Column `col` of the synthetic data: labels with prevalence rising from 2% (first column) to
/// 50% (last), and f32 scores shifted up by 0.3 for positives.
pub fn synthetic_column(rows: usize, cols: usize, col: usize, seed: u64) -> (Vec<bool>, Vec<f64>) {
    let mix_label = splitmix64(seed.wrapping_mul(2));
    let mix_score = splitmix64(seed.wrapping_mul(2).wrapping_add(1));
    let prevalence = 0.02 + 0.48 * col as f64 / (cols.max(2) - 1) as f64;
    (0..rows)
        .map(|i| {
            let counter = ((col as u64) << 32) | i as u64;
            let label = unit_interval(splitmix64(counter ^ mix_label)) < prevalence;
            let shift = if label { 0.3 } else { 0.0 };
            let score = (unit_interval(splitmix64(counter ^ mix_score)) * 0.7 + shift) as f32;
            (label, f64::from(score))
        })
        .unzip()
}

/// The best of `repeat` timings of the AUCs of `cols` columns of `rows` rows (in parallel over
/// columns), in seconds, and the sum of the AUCs.
pub fn time_auc(rows: usize, cols: usize, seed: u64, repeat: usize) -> (f64, f64) {
    let data: Vec<_> = (0..cols)
        .into_par_iter()
        .map(|c| synthetic_column(rows, cols, c, seed))
        .collect();
    let (mut best, mut sum) = (f64::INFINITY, 0.0);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let aucs: Vec<Option<f64>> = data.par_iter().map(|(l, s)| roc_auc(l, s)).collect();
        best = best.min(start.elapsed().as_secs_f64());
        sum = aucs.into_iter().flatten().sum();
    }
    (best, sum)
}

/// Seconds for `replicates` patient-bootstrap replicates of `cols` tasks on `rows` units (about
/// 1.17 units per patient, as in CheXpert's validation set), intervals included.
pub fn time_bootstrap(rows: usize, cols: usize, replicates: usize, seed: u64) -> f64 {
    let data: Vec<_> = (0..cols)
        .map(|c| synthetic_column(rows, cols, c, seed))
        .collect();
    let unit_patient: Vec<u32> = (0..rows).map(|i| (i * 200 / 234) as u32).collect();
    let n_patients = unit_patient.last().map_or(0, |&p| p as usize + 1);
    let start = Instant::now();
    let ranked: Vec<Ranked> = data
        .iter()
        .map(|(l, s)| Ranked::new(&l.iter().map(|&l| Some(l)).collect::<Vec<_>>(), s))
        .collect();
    let cfg = Bootstrap {
        replicates,
        seed,
        level: 0.95,
    };
    let reps = bootstrap::replicate_aucs(&ranked, &unit_patient, n_patients, &cfg);
    let intervals: Vec<_> = (0..cols)
        .map(|t| bootstrap::interval(reps.iter().map(|r| r[t]), 0.95))
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(intervals);
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_pinned() {
        // numpy generates the same column in `bench/eval_bench.py`; these are its count and
        // scikit-learn's AUC (`python3 bench/eval_bench.py --pin`).
        let (labels, scores) = synthetic_column(1000, 14, 13, 0);
        assert_eq!(labels.iter().filter(|&&l| l).count(), PINNED_POSITIVES);
        assert!((roc_auc(&labels, &scores).unwrap() - PINNED_AUC).abs() < 1e-12);
    }
    const PINNED_POSITIVES: usize = 496;
    const PINNED_AUC: f64 = 0.8304451484895033;
}
