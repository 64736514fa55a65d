//! The Markdown of one experiment's section, from what `load.rs` read: headline tables against
//! the trivial baseline, paired comparisons with their agreement over seeds, per-task AUCs,
//! figures linked relative to the report. All wording and number formats are here.

use super::experiment::Experiment;
use super::load::{Loaded, SetNumbers};
use super::numbers::{agreement, Agreement, Difference, Endpoint, Metric, RunNumbers};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// What the agreement of `n` seeds' differences means for the claim.
pub(super) fn describe(a: Agreement, n: usize) -> String {
    if n == 1 && !matches!(a, Agreement::Unknown | Agreement::Identical) {
        return "one seed only: run more seeds to tell".into();
    }
    match a {
        Agreement::Identical => format!("identical in all {n} seeds"),
        Agreement::Holds => format!("holds: same sign and p < 0.05 in all {n} seeds"),
        Agreement::SameSign { significant } => format!(
            "same sign in all {n} seeds, p < 0.05 in {significant} of {n}{}",
            if significant == 0 { ": not shown" } else { "" }
        ),
        Agreement::Flips => "sign changes between seeds: does not survive them".into(),
        Agreement::Unknown => "n/a".into(),
    }
}

fn fmt3(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn fmt_with_ci(v: Option<f64>, ci: Option<(f64, f64)>) -> String {
    match (v, ci) {
        (Some(v), Some((l, h))) => format!("{v:.3} [{l:.3}, {h:.3}]"),
        (v, _) => fmt3(v),
    }
}

fn fmt_diff(d: &Difference) -> String {
    match (d.difference, d.ci) {
        (Some(x), Some((l, h))) => format!("{x:+.3} [{l:+.3}, {h:+.3}]"),
        (Some(x), None) => format!("{x:+.3}"),
        _ => "n/a".into(),
    }
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1e-4 => "<1e-4".into(),
        Some(p) => format!("{p:.3}"),
        None => "n/a".into(),
    }
}

/// The mean of the defined values, `None` when there are none.
fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `to` relative to the directory `from` (both made absolute first).
pub(super) fn relative(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| -> Vec<String> {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        });
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let (f, t) = (abs(from), abs(to));
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for part in &t[common..] {
        out.push(part);
    }
    out
}

/// One experiment's section of the report; figures are linked relative to `report_dir`.
pub(super) fn section(l: &Loaded, report_dir: &Path, out: &mut String) {
    intro(&l.exp, out);
    for path in &l.figures {
        figure(path, report_dir, out);
    }
    let several = l.sets.len() > 1;
    for set in &l.sets {
        if several {
            let _ = writeln!(out, "### {}\n", set.set.title);
        }
        set_tables(&l.exp, &l.pairs, set, out);
    }
    if !l.missing.is_empty() {
        let _ = writeln!(
            out,
            "Missing (not run yet, or failed): {}\n",
            l.missing
                .iter()
                .map(|m| format!("`{}`", m.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Title, question, notes, configurations and seeds.
fn intro(exp: &Experiment, out: &mut String) {
    let _ = writeln!(out, "## {}\n", exp.title);
    if !exp.question.is_empty() {
        let _ = writeln!(out, "{}\n", exp.question);
    }
    for note in &exp.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !exp.notes.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "Configurations: {}; seeds: {}.\n",
        exp.configs
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
        exp.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// A figure's image link, captioned by what its file name says it shows and, for one in a
/// subfolder of `figures/`, that folder's name.
fn figure(path: &Path, report_dir: &Path, out: &mut String) {
    let stem = path
        .file_stem()
        .map_or(String::new(), |s| s.to_string_lossy().into_owned());
    let what = match stem.as_str() {
        "loss" => "training (solid) and validation (dashed) loss",
        "valid_auc" => "validation AUC during training",
        other => other,
    };
    let group = path
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n != "figures"))
        .and_then(|p| p.file_name())
        .map_or(String::new(), |n| format!("{}: ", n.to_string_lossy()));
    let _ = writeln!(
        out,
        "![{group}{what}]({})\n",
        relative(report_dir, path).display()
    );
}

/// `{"test": 48}` as `` `test` (48 images) ``.
fn fmt_splits(splits: &BTreeMap<String, usize>) -> String {
    splits
        .iter()
        .map(|(split, n)| format!("`{split}` ({n} images)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tables of one test set: headline numbers, paired comparisons, per-task AUCs.
fn set_tables(exp: &Experiment, pairs: &[[String; 2]], l: &SetNumbers, out: &mut String) {
    match l.splits.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(out, "Scored images: manifest split {}.\n", fmt_splits(one));
        }
        several => {
            let _ = writeln!(
                out,
                "Scored images differ between runs: {}.\n",
                several
                    .iter()
                    .map(fmt_splits)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    for scope in &l.observations {
        if let Some([shared, unscored]) = scope.describe() {
            let _ = writeln!(out, "Observations: {shared}; {unscored}.\n");
        }
    }
    headline_tables(exp, l, out);
    if !pairs.is_empty() {
        pair_table(exp, pairs, l, out);
    }
    task_table(exp, l, out);
}

/// One table per headline endpoint (a mean AUC, a single task's AUC, age's MAE): every
/// configuration's value per seed and over seeds, beside the trivial baseline.
fn headline_tables(exp: &Experiment, l: &SetNumbers, out: &mut String) {
    for first in l.headlines() {
        let counts = first.counts.map_or(String::new(), |(p, n)| {
            format!("; {p} positives, {n} negatives")
        });
        let (heading, trivial_column) = match first.metric {
            Metric::Auc => (format!("AUC: {}", first.name), "trivial: chance"),
            Metric::AgeMae { images } => (
                format!("age MAE in years, {images} images (lower is better)"),
                "trivial: the training mean age",
            ),
        };
        let _ = writeln!(
            out,
            "**{heading}** (95% patient-bootstrap intervals{counts})\n"
        );
        let trivial = first.trivial;
        let last: Vec<&str> = ["mean over seeds"]
            .into_iter()
            .chain(trivial.map(|_| trivial_column))
            .collect();
        table_head(out, &["configuration"], &exp.seeds, &["seed {s}"], &last);
        for (config, runs) in exp.configs.iter().zip(&l.runs) {
            headline_row(out, config, runs, first, trivial);
        }
        out.push('\n');
    }
}

/// A configuration's row of the table of endpoint `key`; none when no seed of it has `key`
/// (it belongs to another table).
fn headline_row(
    out: &mut String,
    config: &str,
    runs: &[Option<RunNumbers>],
    key: &Endpoint,
    trivial: Option<f64>,
) {
    let find = |run| headline_of(run, key);
    if !runs.iter().any(|run| find(run).is_some()) {
        return;
    }
    let mut line = format!("| `{config}` |");
    let mut values = Vec::new();
    for run in runs {
        match find(run) {
            Some(e) => {
                values.extend(e.value);
                let _ = write!(line, " {} |", fmt_with_ci(e.value, e.ci));
            }
            None => line.push_str(" missing |"),
        }
    }
    let _ = write!(line, " {} |", fmt3(mean(&values)));
    if trivial.is_some() {
        let _ = write!(line, " {} |", fmt3(trivial));
    }
    let _ = writeln!(out, "{line}");
}

/// A run's headline endpoint `key`, if it has that one.
fn headline_of<'a>(run: &'a Option<RunNumbers>, key: &Endpoint) -> Option<&'a Endpoint> {
    let (headline, _) = run.as_ref()?;
    headline.iter().find(|e| e.same(key))
}

/// A Markdown table's header and rule: the `first` columns, `per_seed` for each seed (`{s}`
/// replaced by the seed) and the `last` ones.
fn table_head(out: &mut String, first: &[&str], seeds: &[u64], per_seed: &[&str], last: &[&str]) {
    let mut columns: Vec<String> = first.iter().map(|c| c.to_string()).collect();
    for s in seeds {
        columns.extend(per_seed.iter().map(|c| c.replace("{s}", &s.to_string())));
    }
    columns.extend(last.iter().map(|c| c.to_string()));
    let _ = writeln!(
        out,
        "| {} |\n|{}",
        columns.join(" | "),
        " --- |".repeat(columns.len())
    );
}

/// The paired comparisons: per pair and endpoint, each seed's difference and p, and whether
/// they agree over the seeds.
fn pair_table(exp: &Experiment, pairs: &[[String; 2]], l: &SetNumbers, out: &mut String) {
    let seeds = &exp.seeds;
    let _ = writeln!(
        out,
        "**Paired comparisons on the same images** (difference = first minus second \
         configuration, 95% paired patient-bootstrap interval; p: paired bootstrap for mean \
         AUCs, DeLong clustered by patient for single tasks)\n"
    );
    table_head(
        out,
        &["comparison", "endpoint"],
        seeds,
        &["seed {s}: ΔAUC", "p"],
        &["over the seeds"],
    );
    for ([a, b], diffs) in pairs.iter().zip(&l.diffs) {
        let label = format!("`{a}` vs `{b}`");
        let mut endpoint_names: Vec<&str> = Vec::new();
        for d in diffs.iter().flatten().flatten() {
            if !endpoint_names.contains(&d.name.as_str()) {
                endpoint_names.push(&d.name);
            }
        }
        if endpoint_names.is_empty() {
            let _ = writeln!(
                out,
                "| {label} | missing |{} |",
                " |".repeat(2 * seeds.len())
            );
            continue;
        }
        for name in endpoint_names {
            pair_row(out, &label, name, diffs);
        }
    }
    out.push('\n');
}

/// One pair's row for endpoint `name`: each seed's difference and p, and their agreement.
fn pair_row(out: &mut String, label: &str, name: &str, diffs: &[Option<Vec<Difference>>]) {
    let mut line = format!("| {label} | {name} |");
    let mut per_seed = Vec::new();
    for d in diffs {
        match d.as_ref().and_then(|v| v.iter().find(|d| d.name == name)) {
            Some(d) => {
                let _ = write!(line, " {} | {} |", fmt_diff(d), fmt_p(d.p));
                per_seed.push(d.clone());
            }
            None => {
                line.push_str(" missing | |");
                per_seed.push(Difference {
                    name: name.to_string(),
                    difference: None,
                    ci: None,
                    p: None,
                });
            }
        }
    }
    let _ = writeln!(
        line,
        " {} |",
        describe(agreement(&per_seed), per_seed.len())
    );
    out.push_str(&line);
}

/// Per-task AUCs, mean over seeds, when runs score several tasks behind a mean.
fn task_table(exp: &Experiment, l: &SetNumbers, out: &mut String) {
    let tasks = l.tasks_behind_means();
    if tasks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "**AUC per task, mean over seeds** (trivial: 0.5; n/a: one class only in this \
         set{})\n",
        l.min_positives.map_or(String::new(), |n| format!(
            "; †: fewer than {n} positives or negatives, too few to score reliably: shown, \
             left out of every mean above"
        ))
    );
    let _ = writeln!(
        out,
        "| task | positives |{}\n| --- | --- |{}",
        exp.configs
            .iter()
            .map(|c| format!(" `{c}` |"))
            .collect::<String>(),
        " --- |".repeat(exp.configs.len())
    );
    for task in tasks {
        let first = l.first_task(task);
        let positives = first
            .and_then(|e| e.counts)
            .map_or("?".to_string(), |(p, n)| format!("{p} of {}", p + n));
        let mark = if first.is_some_and(|e| e.too_few) {
            " †"
        } else {
            ""
        };
        let mut line = format!("| {task}{mark} | {positives} |");
        for runs in &l.runs {
            let values: Vec<f64> = runs
                .iter()
                .flatten()
                .filter_map(|(_, t)| t.iter().find(|e| e.name == task)?.value)
                .collect();
            let _ = write!(line, " {} |", fmt3(mean(&values)));
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}
