//! Raw label states and the uncertainty policies that turn them into training targets.
//!
//! A manifest stores what the radiology report said (positive, negative, uncertain, or nothing at
//! all) and never a policy: U-Ignore, U-Ones and U-Zeros (Irvin et al., 2019) are applied when a
//! run reads the manifest, so one manifest serves every policy. In Parquet a state is an `Int8`
//! holding CheXpert's own codes: `1`, `0`, `-1`, and null for "not mentioned" (CheXpert's blank).

use crate::manifest::{Projection, Sex};
use crate::observation::Observation;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;

/// What a report said about one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelState {
    Positive,
    Negative,
    Uncertain,
    NotMentioned,
}

impl LabelState {
    /// CheXpert's code: 1, 0, -1, or `None` for blank.
    pub fn code(self) -> Option<i8> {
        match self {
            LabelState::Positive => Some(1),
            LabelState::Negative => Some(0),
            LabelState::Uncertain => Some(-1),
            LabelState::NotMentioned => None,
        }
    }

    pub fn from_code(code: Option<i8>) -> Option<LabelState> {
        match code {
            Some(1) => Some(LabelState::Positive),
            Some(0) => Some(LabelState::Negative),
            Some(-1) => Some(LabelState::Uncertain),
            None => Some(LabelState::NotMentioned),
            Some(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LabelState::Positive => "positive",
            LabelState::Negative => "negative",
            LabelState::Uncertain => "uncertain",
            LabelState::NotMentioned => "not mentioned",
        }
    }
}

/// How an uncertain (-1) label is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncertainRule {
    /// U-Ignore: masked out of the loss and the metric.
    Ignore,
    /// U-Ones: counted as positive.
    Ones,
    /// U-Zeros: counted as negative.
    Zeros,
}

/// How a blank ("not mentioned") label is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlankRule {
    /// Counted as negative, as CheXpert's authors and most reproductions do for training.
    Negative,
    /// Masked out.
    Ignore,
}

/// A training or scoring target: `value` is 0 or 1 and only meaningful when `known`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub value: f32,
    pub known: bool,
}

impl Target {
    const MASKED: Target = Target {
        value: 0.0,
        known: false,
    };
    const fn of(value: f32) -> Target {
        Target { value, known: true }
    }
}

/// An uncertainty policy, optionally different per observation (as LibAUC uses U-Ones for
/// Atelectasis and Edema and U-Zeros for the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelPolicy {
    pub uncertain: UncertainRule,
    pub blank: BlankRule,
    pub overrides: BTreeMap<Observation, UncertainRule>,
}

impl Default for LabelPolicy {
    /// U-Ignore with blanks negative: the paper's baseline for training.
    fn default() -> Self {
        LabelPolicy {
            uncertain: UncertainRule::Ignore,
            blank: BlankRule::Negative,
            overrides: BTreeMap::new(),
        }
    }
}

impl LabelPolicy {
    /// The policy for scoring: only explicit positives and negatives count.
    pub fn evaluation() -> Self {
        LabelPolicy {
            uncertain: UncertainRule::Ignore,
            blank: BlankRule::Ignore,
            overrides: BTreeMap::new(),
        }
    }

    /// Parse `u-ignore`, `u-ones` or `u-zeros`, optionally followed by per-observation
    /// overrides: `u-zeros,Atelectasis=u-ones,Edema=u-ones`.
    pub fn parse(spec: &str, blank: BlankRule) -> Result<LabelPolicy> {
        let bad = |reason: String| Error::Policy {
            spec: spec.to_string(),
            reason,
        };
        let mut parts = spec.split(',');
        let first = parts.next().unwrap_or_default();
        let uncertain = parse_rule(first)
            .ok_or_else(|| bad(format!("`{first}` is not one of u-ignore, u-ones, u-zeros")))?;
        let mut overrides = BTreeMap::new();
        for part in parts {
            let (name, rule) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` should look like `Edema=u-ones`")))?;
            let observation = Observation::parse(name).map_err(|e| bad(e.to_string()))?;
            let rule = parse_rule(rule)
                .ok_or_else(|| bad(format!("`{rule}` is not one of u-ignore, u-ones, u-zeros")))?;
            overrides.insert(observation, rule);
        }
        Ok(LabelPolicy {
            uncertain,
            blank,
            overrides,
        })
    }

    /// The target for `state` of `observation` under this policy.
    pub fn target(&self, observation: Observation, state: LabelState) -> Target {
        match state {
            LabelState::Positive => Target::of(1.0),
            LabelState::Negative => Target::of(0.0),
            LabelState::NotMentioned => match self.blank {
                BlankRule::Negative => Target::of(0.0),
                BlankRule::Ignore => Target::MASKED,
            },
            LabelState::Uncertain => {
                match self.overrides.get(&observation).unwrap_or(&self.uncertain) {
                    UncertainRule::Ignore => Target::MASKED,
                    UncertainRule::Ones => Target::of(1.0),
                    UncertainRule::Zeros => Target::of(0.0),
                }
            }
        }
    }
}

fn parse_rule(s: &str) -> Option<UncertainRule> {
    match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "u-ignore" | "ignore" => Some(UncertainRule::Ignore),
        "u-ones" | "ones" => Some(UncertainRule::Ones),
        "u-zeros" | "zeros" => Some(UncertainRule::Zeros),
        _ => None,
    }
}

/// The sex task's target: male is the positive class (a prediction is P(male)), unknown is left
/// out. `cxr-train` trains on it and `cxr-eval` scores with it: one definition, so that a score
/// can never be read against the inverted label.
pub fn sex_target(sex: Sex) -> Option<bool> {
    match sex {
        Sex::Male => Some(true),
        Sex::Female => Some(false),
        Sex::Unknown => None,
    }
}

/// The view task's target: PA is the positive class (a prediction is P(PA)) against AP;
/// laterals and unknown projections are left out.
pub fn view_target(projection: Projection) -> Option<bool> {
    match projection {
        Projection::Pa => Some(true),
        Projection::Ap => Some(false),
        _ => None,
    }
}

impl fmt::Display for LabelPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = |r: &UncertainRule| match r {
            UncertainRule::Ignore => "u-ignore",
            UncertainRule::Ones => "u-ones",
            UncertainRule::Zeros => "u-zeros",
        };
        write!(f, "{}", rule(&self.uncertain))?;
        for (o, r) in &self.overrides {
            write!(f, ",{}={}", o.name(), rule(r))?;
        }
        let blank = match self.blank {
            BlankRule::Negative => "negative",
            BlankRule::Ignore => "ignore",
        };
        write!(f, " (blank: {blank})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_map_states() {
        let edema = Observation::parse("Edema").unwrap();
        let ignore = LabelPolicy::parse("u-ignore", BlankRule::Negative).unwrap();
        assert!(!ignore.target(edema, LabelState::Uncertain).known);
        assert_eq!(
            ignore.target(edema, LabelState::NotMentioned),
            Target::of(0.0)
        );
        let ones = LabelPolicy::parse("u-ones", BlankRule::Ignore).unwrap();
        assert_eq!(ones.target(edema, LabelState::Uncertain), Target::of(1.0));
        assert!(!ones.target(edema, LabelState::NotMentioned).known);
        let mixed = LabelPolicy::parse("u-zeros,Edema=u-ones", BlankRule::Negative).unwrap();
        assert_eq!(mixed.target(edema, LabelState::Uncertain), Target::of(1.0));
        let cardio = Observation::parse("Cardiomegaly").unwrap();
        assert_eq!(mixed.target(cardio, LabelState::Uncertain), Target::of(0.0));
    }

    #[test]
    fn bad_policies_say_why() {
        let err = LabelPolicy::parse("u-maybe", BlankRule::Negative).unwrap_err();
        assert!(err.to_string().contains("u-maybe"));
        assert!(LabelPolicy::parse("u-ones,Edema", BlankRule::Negative).is_err());
        assert!(LabelPolicy::parse("u-ones,Oedema=u-ones", BlankRule::Negative).is_err());
    }

    #[test]
    fn codes_round_trip() {
        for s in [
            LabelState::Positive,
            LabelState::Negative,
            LabelState::Uncertain,
            LabelState::NotMentioned,
        ] {
            assert_eq!(LabelState::from_code(s.code()), Some(s));
        }
        assert_eq!(LabelState::from_code(Some(2)), None);
    }
}
