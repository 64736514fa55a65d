//! The ranges of `cxr-train`'s numeric options, as clap value parsers.
//!
//! A negative learning rate or weight decay trains without a word (the loss just goes the wrong
//! way), NaN or infinity fails steps later, a batch size of 0 is accepted: so every numeric
//! option is checked as the command line is parsed, before anything is read or written, and the
//! error names the option, the value and the range, e.g.
//!
//! ```text
//! error: invalid value '-0.001' for '--lr <LR>': must be a finite number > 0
//! ```
//!
//! Each rule is one parser here, used by every option it applies to (in every command), so the
//! same kind of option is held to the same range and worded the same way everywhere. Rules
//! between options (`--freeze-epochs` against `--epochs`) are checked as the command's
//! configuration is resolved, also before any work.

use std::fmt;
use std::ops::Bound::{self, Excluded, Included, Unbounded};

/// The allowed interval of a float option.
#[derive(Clone, Copy)]
struct Range(Bound<f64>, Bound<f64>);

impl Range {
    fn contains(self, x: f64) -> bool {
        let above = match self.0 {
            Included(lo) => x >= lo,
            Excluded(lo) => x > lo,
            Unbounded => true,
        };
        let below = match self.1 {
            Included(hi) => x <= hi,
            Excluded(hi) => x < hi,
            Unbounded => true,
        };
        above && below
    }
}

/// ` > 0`, ` in [0, 1)`, or nothing when unbounded: what follows "a finite number".
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Unbounded, Unbounded) => Ok(()),
            (Excluded(lo), Unbounded) => write!(f, " > {lo}"),
            (Included(lo), Unbounded) => write!(f, " >= {lo}"),
            (lo, hi) => {
                let (open, lo) = match lo {
                    Included(lo) => ('[', lo.to_string()),
                    Excluded(lo) => ('(', lo.to_string()),
                    Unbounded => ('(', "-inf".into()),
                };
                let (hi, close) = match hi {
                    Included(hi) => (hi.to_string(), ']'),
                    Excluded(hi) => (hi.to_string(), ')'),
                    Unbounded => ("inf".into(), ')'),
                };
                write!(f, " in {open}{lo}, {hi}{close}")
            }
        }
    }
}

/// A finite number in `range`.
fn float_in(text: &str, range: Range) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && range.contains(value) => Ok(value),
        _ => Err(format!("must be a finite number{range}")),
    }
}

/// A whole number >= `min`.
fn whole_at_least<T: std::str::FromStr + PartialOrd + fmt::Display>(
    text: &str,
    min: T,
) -> Result<T, String> {
    match text.trim().parse::<T>() {
        Ok(value) if value >= min => Ok(value),
        _ => Err(format!("must be a whole number >= {min}")),
    }
}

/// > 0: learning rates, Adam's eps, gradient clipping, the AUC margin.
pub fn positive_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Excluded(0.0), Unbounded))
}

/// >= 0: weight decay, the final learning rate, PESG's epoch decay, Barlow Twins' lambda.
pub fn non_negative_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Included(0.0), Unbounded))
}

/// In [0, 1): momentum and Adam's betas (1 or more never forgets, and diverges).
pub fn below_one_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Included(0.0), Excluded(1.0)))
}

/// In [0, 1]: brightness (on the 0..1 scale) and contrast (factors 1 +- it) jitter.
pub fn unit_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Included(0.0), Included(1.0)))
}

/// In (0, 1]: a factor the learning rate is multiplied by as it decays.
pub fn decay_factor_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Excluded(0.0), Included(1.0)))
}

/// >= 1: a divisor of the learning rate.
pub fn divisor_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Included(1.0), Unbounded))
}

/// In [0, 180]: a random rotation's largest angle in degrees.
pub fn degrees_f64(text: &str) -> Result<f64, String> {
    float_in(text, Range(Included(0.0), Included(180.0)))
}

/// Finite (and within f32's range): a normalisation mean.
pub fn finite_f32(text: &str) -> Result<f32, String> {
    to_f32(float_in(text, Range(Unbounded, Unbounded))?)
}

/// > 0 (and within f32's range): a normalisation standard deviation.
pub fn positive_f32(text: &str) -> Result<f32, String> {
    to_f32(positive_f64(text)?)
}

fn to_f32(value: f64) -> Result<f32, String> {
    let single = value as f32;
    if !single.is_finite() || (value != 0.0 && single == 0.0) {
        return Err(format!("{value} is outside f32's range"));
    }
    Ok(single)
}

/// >= 1: batch sizes, epochs, steps, image sizes, threads, projector widths.
pub fn at_least_one_usize(text: &str) -> Result<usize, String> {
    whole_at_least(text, 1usize)
}

/// >= 1: step counts and intervals (`--log-every`, `--step-every`, `--max-steps`).
pub fn at_least_one_u64(text: &str) -> Result<u64, String> {
    whole_at_least(text, 1u64)
}

/// 1 (grey) or 3 (grey repeated to RGB): input channels.
pub fn in_channels(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n @ (1 | 3)) => Ok(n),
        _ => Err("must be 1 (grey) or 3 (grey repeated to RGB)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_accept_their_values_and_name_themselves_otherwise() {
        assert_eq!(positive_f64("1e-4"), Ok(1e-4));
        for bad in ["0", "-0.001", "NaN", "inf", "-inf"] {
            assert_eq!(
                positive_f64(bad),
                Err("must be a finite number > 0".into()),
                "{bad}"
            );
        }
        assert_eq!(
            positive_f64("fast"),
            Err("must be a finite number > 0".into())
        );
        assert_eq!(non_negative_f64("0"), Ok(0.0));
        assert_eq!(
            non_negative_f64("-1"),
            Err("must be a finite number >= 0".into())
        );
        assert_eq!(below_one_f64("0.999"), Ok(0.999));
        assert_eq!(
            below_one_f64("1"),
            Err("must be a finite number in [0, 1)".into())
        );
        assert_eq!(unit_f64("1"), Ok(1.0));
        assert!(unit_f64("1.5").is_err());
        assert_eq!(
            decay_factor_f64("0"),
            Err("must be a finite number in (0, 1]".into())
        );
        assert_eq!(divisor_f64("10"), Ok(10.0));
        assert!(divisor_f64("0.5").is_err());
        assert_eq!(
            degrees_f64("181"),
            Err("must be a finite number in [0, 180]".into())
        );
        assert_eq!(finite_f32("-0.5"), Ok(-0.5));
        assert!(finite_f32("1e39").unwrap_err().contains("f32"));
        assert!(positive_f32("1e-50").unwrap_err().contains("f32"));
        assert_eq!(finite_f32("nan"), Err("must be a finite number".into()));
        assert_eq!(at_least_one_usize("16"), Ok(16));
        for bad in ["0", "-1", "1.5", "many"] {
            assert_eq!(
                at_least_one_usize(bad),
                Err("must be a whole number >= 1".into()),
                "{bad}"
            );
        }
        assert_eq!(
            at_least_one_u64("0"),
            Err("must be a whole number >= 1".into())
        );
        assert_eq!(in_channels("3"), Ok(3));
        assert!(in_channels("2").is_err());
    }
}
