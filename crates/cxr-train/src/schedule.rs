//! Learning-rate schedules as pure functions of the optimiser step.
//!
//! A schedule that depends only on the step (not on mutable scheduler state) is what lets a
//! resumed run pick up the exact learning rate an uninterrupted one would have used.

use crate::config::ScheduleConfig;

/// The learning rate for optimiser step `step` (0-based) of `total` steps, peak `base`.
///
/// - constant: `base`;
/// - step: `base * gamma^(step / every)`;
/// - cosine: linear warm-up `base * (step + 1) / warmup` for the first `warmup` steps, then
///   `min + (base - min) * (1 + cos(pi * t)) / 2` with `t` going from 0 to 1 over the rest.
pub fn learning_rate(schedule: &ScheduleConfig, base: f64, step: u64, total: u64) -> f64 {
    match *schedule {
        ScheduleConfig::Constant => base,
        ScheduleConfig::Step { every, gamma } => base * gamma.powi((step / every.max(1)) as i32),
        ScheduleConfig::Cosine { warmup, min_lr } => {
            if step < warmup {
                return base * (step + 1) as f64 / warmup as f64;
            }
            let span = total.saturating_sub(warmup).max(1);
            let t = ((step - warmup) as f64 / span as f64).min(1.0);
            min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}
