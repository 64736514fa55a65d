//! The terminal tables of `cxr-eval score` and `compare`, from the computed reports: every
//! width, decimal and wording choice is here, so changing how a number looks never touches how
//! it is computed. Undefined AUCs show as `n/a` with the reason, never as a number.

use super::types::{
    CompareReport, MeanComparison, Observations, ScoreReport, Setup, TaskComparison, TaskResult,
};
use crate::bootstrap::Interval;
use crate::labels::Aggregate;
use std::fmt::Write as _;

fn fmt_auc(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |x| format!("{x:.4}"))
}

/// An interval with 4 decimals, and how many of the `total` replicates it used when not all.
fn fmt_ci(ci: Option<Interval>, total: Option<usize>) -> String {
    match ci {
        None => String::new(),
        Some(ci) => {
            let partial = match total {
                Some(b) if ci.replicates_used < b => {
                    format!("  ({} of {b} replicates)", ci.replicates_used)
                }
                _ => String::new(),
            };
            format!("[{:.4}, {:.4}]{partial}", ci.low, ci.high)
        }
    }
}

/// A p-value with 4 decimals, or in scientific notation below 1e-4.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// The lines saying what was scored: labels and policy, unit, splits, intervals.
fn header(out: &mut String, s: &Setup) {
    let unit = match s.aggregate {
        Aggregate::Image => "image".to_string(),
        agg => format!(
            "study ({}; {} images in {} studies)",
            agg.as_str(),
            s.n_images,
            s.n_units
        ),
    };
    let _ = writeln!(
        out,
        "labels     {} ({}), policy {}, unit: {unit}",
        s.manifest,
        s.observations.datasets.join(", "),
        s.policy
    );
    if let Some([shared, unscored]) = s.observations.describe() {
        let _ = writeln!(out, "shared     {shared}");
        let _ = writeln!(out, "unscored   {unscored}");
    }
    splits_line(out, s);
    let _ = match s.bootstrap {
        Some(b) => writeln!(
            out,
            "intervals  {:.0}% percentile, {} bootstrap replicates over {} patients (seed {})",
            b.level * 100.0,
            b.replicates,
            s.n_patients,
            b.seed
        ),
        None => writeln!(
            out,
            "intervals  none (--bootstrap 0); {} patients",
            s.n_patients
        ),
    };
}

impl Observations {
    /// What was scored and what not, as two sentences, when some predicted observation was
    /// left out because the images' datasets never label it (`None` when every one was scored):
    /// what a reader of a cross-dataset score must know before reading its means.
    pub fn describe(&self) -> Option<[String; 2]> {
        if self.unlabelled.is_empty() {
            return None;
        }
        let datasets = self.datasets.join(" and ");
        Some([
            format!(
                "scored over the {} observations the predictions and {datasets} share: {}",
                self.shared.len(),
                self.shared.join(", ")
            ),
            format!(
                "not scored: the {} predicted observations {datasets} never labels: {}",
                self.unlabelled.len(),
                self.unlabelled.join(", ")
            ),
        ])
    }
}

/// The manifest splits scored, when known; training images are called out.
fn splits_line(out: &mut String, s: &Setup) {
    if s.splits.is_empty() {
        return;
    }
    let listed: Vec<String> = s
        .splits
        .iter()
        .map(|(split, n)| format!("{split} ({n} images)"))
        .collect();
    let mut line = match listed.len() {
        1 => format!("split      {}", listed[0]),
        _ => format!("splits     {}, pooled", listed.join(", ")),
    };
    if s.splits.contains_key("train") {
        line.push_str("; training images (--allow-train-split)");
    }
    let _ = writeln!(out, "{line}");
}

/// The count and names of the tasks without an AUC.
fn undefined_line(out: &mut String, undefined: &[String]) {
    let _ = match undefined.len() {
        0 => writeln!(out, "undefined: none"),
        k => writeln!(
            out,
            "undefined: {k} task{} with one class only: {}",
            if k == 1 { "" } else { "s" },
            undefined.join(", ")
        ),
    };
}

/// The tasks left out of means for too few positives or negatives, and the rule.
fn too_few_line(out: &mut String, too_few: &[String], min: usize) {
    if !too_few.is_empty() {
        let _ = writeln!(
            out,
            "too few to average (fewer than {min} positives or negatives; --min-positives): {}",
            too_few.join(", ")
        );
    }
}

impl ScoreReport {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "predictions {} ({} images)",
            self.predictions, self.setup.n_images
        );
        header(&mut out, &self.setup);
        let total = self.setup.bootstrap.map(|b| b.replicates);
        let ci_head = self
            .setup
            .bootstrap
            .map_or(String::new(), |b| format!("{:.0}% CI", b.level * 100.0));
        let _ = writeln!(
            out,
            "\n{:<28} {:>7} {:>6} {:>7}  {ci_head}",
            "task", "n", "pos", "AUC"
        );
        for t in &self.tasks {
            score_row(&mut out, t, total);
        }
        out.push('\n');
        for m in &self.means {
            let _ = writeln!(
                out,
                "{:<43} {:>7}  {}",
                format!("mean, {}", m.name),
                fmt_auc(Some(m.auc)),
                fmt_ci(m.ci, total)
            );
            let _ = writeln!(out, "  over {}", m.tasks.join(", "));
        }
        undefined_line(&mut out, &self.undefined);
        too_few_line(&mut out, &self.too_few, self.setup.min_positives);
        if !self.skipped_columns.is_empty() {
            let _ = writeln!(
                out,
                "not scored (no AUC for a regression output): {}",
                self.skipped_columns.join(", ")
            );
        }
        out
    }
}

/// One task's row of the score table; `total` replicates were drawn.
fn score_row(out: &mut String, t: &TaskResult, total: Option<usize>) {
    let ci = match (t.auc, t.n) {
        (None, 0) => "no known labels".to_string(),
        (None, _) if t.n_pos == 0 => "one class only: no positives".to_string(),
        (None, _) => "one class only: no negatives".to_string(),
        _ if t.too_few => format!("{}  (too few: not in means)", fmt_ci(t.ci, total)),
        _ => fmt_ci(t.ci, total),
    };
    let _ = writeln!(
        out,
        "{:<28} {:>7} {:>6} {:>7}  {ci}",
        t.task,
        t.n,
        t.n_pos,
        fmt_auc(t.auc)
    );
}

impl CompareReport {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A          {}", self.a);
        let _ = writeln!(
            out,
            "B          {}  ({} images each)",
            self.b, self.setup.n_images
        );
        header(&mut out, &self.setup);
        let _ = writeln!(
            out,
            "\n{:<28} {:>6} {:>5} {:>7} {:>7} {:>8}  {:<20} {:>7} {:>8} {:>8}",
            "task",
            "n",
            "pos",
            "AUC A",
            "AUC B",
            "A - B",
            "bootstrap CI of A-B",
            "DeLong z",
            "p",
            "p (Holm)"
        );
        for t in &self.tasks {
            compare_row(&mut out, t);
        }
        out.push('\n');
        for m in &self.means {
            self.mean_line(&mut out, m);
        }
        self.footnotes(&mut out);
        out
    }

    /// A mean's line: both AUCs, their difference, its interval and p.
    fn mean_line(&self, out: &mut String, m: &MeanComparison) {
        let total = self.setup.bootstrap.map(|b| b.replicates);
        let _ = writeln!(
            out,
            "mean, {}: A {:.4}, B {:.4}, A - B {:+.4}{}{}",
            m.name,
            m.auc_a,
            m.auc_b,
            m.difference,
            m.difference_ci.map_or(String::new(), |c| {
                let partial = fmt_ci(Some(c), total)
                    .split_once("  ")
                    .map_or(String::new(), |(_, p)| format!("  {p}"));
                format!(
                    ", {:.0}% CI [{:+.4}, {:+.4}]{partial}",
                    self.setup.bootstrap.map_or(95.0, |b| b.level * 100.0),
                    c.low,
                    c.high
                )
            }),
            m.p_value.map_or(String::new(), |p| format!(
                ", paired bootstrap p = {}",
                fmt_p(p)
            ))
        );
        let _ = writeln!(out, "  over {}", m.tasks.join(", "));
    }

    /// Undefined and too-few tasks, undefined DeLong tests, tasks of one file only.
    fn footnotes(&self, out: &mut String) {
        let names = |keep: fn(&TaskComparison) -> bool| -> Vec<String> {
            self.tasks
                .iter()
                .filter(|t| keep(t))
                .map(|t| t.task.clone())
                .collect()
        };
        undefined_line(out, &names(|t| t.auc_a.is_none()));
        too_few_line(out, &names(|t| t.too_few), self.setup.min_positives);
        if self
            .tasks
            .iter()
            .any(|t| t.delong.is_none() && t.difference.is_some())
        {
            let _ = writeln!(
                out,
                "DeLong n/a: fewer than two patients with a positive or with a negative"
            );
        }
        for (who, only) in [("A", &self.only_in_a), ("B", &self.only_in_b)] {
            if !only.is_empty() {
                let _ = writeln!(out, "only in {who} (not compared): {}", only.join(", "));
            }
        }
    }
}

/// One task's row of the comparison table.
fn compare_row(out: &mut String, t: &TaskComparison) {
    let diff = t
        .difference
        .map_or("n/a".to_string(), |d| format!("{d:+.4}"));
    let ci = t.difference_ci.map_or(String::new(), |c| {
        format!("[{:+.4}, {:+.4}]", c.low, c.high)
    });
    let (z, p) = match (t.delong, t.difference) {
        (Some(d), _) => (format!("{:+.2}", d.z), fmt_p(d.p_value)),
        // DeLong's variance needs two units of each class.
        (None, Some(_)) => ("n/a".to_string(), "n/a".to_string()),
        (None, None) => (String::new(), String::new()),
    };
    let holm = t.p_holm.map_or(String::new(), fmt_p);
    let _ = writeln!(
        out,
        "{:<28} {:>6} {:>5} {:>7} {:>7} {:>8}  {:<20} {:>7} {:>8} {:>8}",
        t.task,
        t.n,
        t.n_pos,
        fmt_auc(t.auc_a),
        fmt_auc(t.auc_b),
        diff,
        ci,
        z,
        p,
        holm
    );
}
