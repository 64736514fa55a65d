//! The `cxr-eval` command line: argument parsing and the glue between reading, scoring,
//! printing and drawing. Everything it computes lives in the library modules.

use crate::bootstrap::{Bootstrap, Interval};
use crate::labels::{self, Aggregate, EvalSet, SplitRule, Task};
use crate::plot::{self, RocPanel, RunCurves, XAxis};
use crate::{auc::RocCurve, bench};
use crate::{report, study};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cxr_core::paths::{self, Named};
use cxr_core::predictions::Predictions;
use cxr_core::{runlog, BlankRule, LabelPolicy, Manifest};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const EXAMPLES: &str = "\
Examples:
  # AUC per pathology of one run on the validation set, with 95% patient-bootstrap intervals
  cxr-eval score runs/imagenet/valid_predictions.parquet --manifest chexpert.parquet

  # CheXpert's convention: one score per study (max over its views); save JSON, CSV, ROC plots
  cxr-eval score preds.csv -m chexpert.parquet --aggregate study-max --out eval/imagenet

  # Did in-domain pretraining beat ImageNet on the same images? DeLong per task,
  # paired patient bootstrap for the mean AUC
  cxr-eval compare runs/in-domain/preds.parquet runs/imagenet/preds.parquet -m chexpert.parquet

  # Loss curves of several runs overlaid, from each run's metrics.jsonl
  cxr-eval curves runs/imagenet runs/in-domain --out figures

Predictions: Parquet or CSV with an `image_id` column (the manifest's ids) and one score column
per task, named by the observation (`Edema`, `prob_Pleural_Effusion`, NIH's `Effusion`) or
`sex` (male = 1), `view`/`projection` (PA = 1, AP = 0); probabilities or logits.";

const SCORE_HELP: &str = "\
Labels come from the manifest under --policy/--blank; by default explicit positives and
negatives count, blank (not mentioned) counts as negative, as in cxr-train and the CheXpert
papers, and uncertain labels are left out of that task (U-Ignore), so runs trained under any
policy are scored on the same labels. A task whose scored images have one class only has no
AUC: it is shown as n/a and counted, never as 0 or 0.5.
Means name the tasks they average: the CheXpert competition 5 (Atelectasis, Cardiomegaly,
Consolidation, Edema, Pleural Effusion) and all defined observations (sex and view apart).

Across datasets: an observation is scored only on images whose dataset labels it (CheXpert and
MIMIC-CXR: CheXpert's 14; NIH: its 14 findings and No Finding). A CheXpert model on an NIH
manifest is scored over the 8 observations both label; the table names them (shared) and the
ones left out (unscored), as do metrics.json (\"observations\") and the means' task lists.

Intervals resample patients, not images (a patient's views are correlated), with a fixed seed;
results do not depend on the thread count (RAYON_NUM_THREADS).

Splits: the table and metrics.json (\"splits\": {\"test\": 48}) say which manifest split(s) the
scored images come from. Images of the train split are refused (a model's AUC on the images it
was fitted to says nothing about new patients) unless --allow-train-split says the model never
trained on them (e.g. it was trained on another dataset). Images of several splits at once
(test with official, or with valid, which chose the checkpoint) are refused too, since one AUC
over them describes none of the sets, unless --allow-mixed-splits pools them on purpose. Score
each split (cxr-train predict --split) on its own.

Examples:
  cxr-eval score preds.parquet -m chexpert.parquet
  cxr-eval score preds.csv -m nih.parquet --bootstrap 10000 --seed 7 --out eval/nih
  cxr-eval score preds.parquet -m chexpert.parquet --policy u-ones --blank ignore
  # a CheXpert model on NIH's images (none of which it trained on)
  cxr-eval score chexpert-model-on-nih.parquet -m nih.parquet --allow-train-split";

const COMPARE_HELP: &str = "\
A and B must score the same images (in any row order). Per task: both AUCs, their difference
with a paired patient-bootstrap interval, and DeLong's test (fast form of Sun & Xu, 2014) with
p-values also adjusted over tasks (Holm). For the mean AUCs: the difference, its paired-bootstrap
interval and p-value. Tasks in only one file are listed, not compared.

Splits as for score: the images' manifest split(s) are shown and kept in comparison.json;
training images and several splits at once are refused unless --allow-train-split or
--allow-mixed-splits says so.

Examples:
  cxr-eval compare in-domain.parquet imagenet.parquet -m chexpert.parquet
  cxr-eval compare a.csv b.csv -m chexpert.parquet --aggregate study-max --out eval/a-vs-b";

const CURVES_HELP: &str = "\
Each RUN is a run directory holding metrics.jsonl (or the file itself). Writes loss.png and
loss.svg (training loss, smoothed with the raw values faint behind, and validation loss dashed
with points), and valid_auc.png/.svg when validation AUCs were logged.

Examples:
  cxr-eval curves runs/imagenet runs/in-domain --out figures
  cxr-eval curves runs/*/ --out figures --x step --smooth 0";

const REPORT_HELP: &str = "\
Each EXPERIMENT directory is one pipeline's output (pipelines/*.mk): experiment.json (title,
configurations, seeds, the pairs compared, the test sets, notes) and, per test set T (official:
the dataset's own evaluation set; test: held-out patients), the runs' eval/T/C__sS/metrics.json,
compare/T/A_vs_B__sS/comparison.json, and figures/*.png. The report has, per experiment: the
figures, then per test set the AUCs (age: MAE) with 95% intervals per seed and their mean over
seeds, the paired tests of each pair per seed, and whether each difference keeps its sign and
significance over all seeds.

Examples:
  cxr-eval report out/pretraining --out out/pretraining/report.md
  cxr-eval report demo-out/easy demo-out/pretraining --intro pipelines/demo-intro.md \\
      --title 'cxr demo study' --out demo-out/report.md";

/// Scores chest X-ray models: AUCs with patient-bootstrap intervals, paired tests, plots.
#[derive(Debug, Parser)]
#[command(name = "cxr-eval", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score one predictions file: AUC per task with 95% intervals, and mean AUCs
    #[command(after_help = SCORE_HELP)]
    Score(ScoreArgs),
    /// Compare two predictions files on the same images: DeLong and paired bootstrap
    #[command(after_help = COMPARE_HELP)]
    Compare(CompareArgs),
    /// Draw training and validation loss curves of one or more runs
    #[command(after_help = CURVES_HELP)]
    Curves(CurvesArgs),
    /// Assemble the study's Markdown report from experiment directories
    #[command(after_help = REPORT_HELP)]
    Report(ReportArgs),
    /// Time AUCs of synthetic data (for bench/eval.sh)
    #[command(hide = true)]
    BenchAuc(BenchArgs),
    /// Time patient-bootstrap replicates of synthetic data (for bench/eval.sh)
    #[command(hide = true)]
    BenchBootstrap(BenchArgs),
}

/// What blank (not mentioned) labels count as.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Blank {
    /// Left out of the task
    Ignore,
    /// Counted as negative
    Negative,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Manifest (Parquet, from cxr-index) with the labels, patients and studies
    #[arg(short, long, env = "CXR_MANIFEST")]
    pub manifest: PathBuf,
    /// How uncertain labels count: u-ignore, u-ones or u-zeros, with per-observation
    /// overrides such as `u-zeros,Edema=u-ones`
    #[arg(long, default_value = "u-ignore")]
    pub policy: String,
    /// How blank (not mentioned) labels count: negative (cxr-train's default too) or ignore
    #[arg(long, value_enum, default_value = "negative")]
    pub blank: Blank,
    /// Score images, or studies by the max or mean of their images' scores
    #[arg(long, value_enum, default_value = "image")]
    pub aggregate: Aggregate,
    /// Tasks with fewer positives (or negatives) than this are scored and shown, flagged, but
    /// left out of mean AUCs: their AUCs are too unstable to average
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub min_positives: usize,
    /// Patient-bootstrap replicates, 1000 to 10000; 0 for no intervals
    #[arg(long, default_value_t = Bootstrap::DEFAULT.replicates, value_name = "N")]
    pub bootstrap: usize,
    /// Seed of the bootstrap
    #[arg(long, default_value_t = Bootstrap::DEFAULT.seed)]
    pub seed: u64,
    /// Directory for JSON, CSV and ROC plots (PNG and SVG)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write only JSON and CSV under --out, no ROC plots (without --out nothing is written)
    #[arg(long)]
    pub no_plots: bool,
    /// Score images of the manifest's train split too: only for a model that never trained on
    /// them (e.g. one trained on another dataset)
    #[arg(long)]
    pub allow_train_split: bool,
    /// Pool images of several manifest splits (e.g. test and official) into one score
    #[arg(long)]
    pub allow_mixed_splits: bool,
}

impl LabelArgs {
    fn split_rule(&self) -> SplitRule {
        SplitRule {
            allow_train: self.allow_train_split,
            allow_mixed: self.allow_mixed_splits,
        }
    }
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Predictions file (Parquet or CSV)
    pub predictions: PathBuf,
    #[command(flatten)]
    pub labels: LabelArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Predictions of model A
    pub a: PathBuf,
    /// Predictions of model B, on the same images
    pub b: PathBuf,
    #[command(flatten)]
    pub labels: LabelArgs,
}

#[derive(Debug, Args)]
pub struct CurvesArgs {
    /// Run directories (holding metrics.jsonl) or metrics.jsonl files
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// Directory for the figures
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// What the x axis counts
    #[arg(long, value_enum, default_value = "epoch")]
    pub x: XAxis,
    /// Moving-average weight for training losses, 0 (raw) to below 1
    #[arg(long, default_value_t = 0.6)]
    pub smooth: f64,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Experiment directories (each with experiment.json), in report order
    #[arg(required = true, value_name = "EXPERIMENT")]
    pub experiments: Vec<PathBuf>,
    /// The report (Markdown); figures are linked relative to it
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Title of the report
    #[arg(long, default_value = "cxr study report")]
    pub title: String,
    /// Markdown file inserted after the title
    #[arg(long, value_name = "FILE")]
    pub intro: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 14)]
    pub cols: usize,
    #[arg(long, default_value_t = 2000)]
    pub replicates: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Report the best of this many timings
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

/// Parse the command line and run it.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score(&args),
        Command::Compare(args) => compare(&args),
        Command::Curves(args) => curves(&args),
        Command::Report(args) => {
            refuse_report_over_inputs(&args)?;
            let intro = match &args.intro {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read --intro {}", p.display()))?,
                ),
                None => None,
            };
            study::write_report(&args.experiments, &args.title, intro.as_deref(), &args.out)?;
            eprintln!("wrote {}", args.out.display());
            Ok(())
        }
        Command::BenchAuc(a) => {
            let (seconds, sum) = bench::time_auc(a.rows, a.cols, a.seed, a.repeat);
            println!(
                "{{\"rows\":{},\"cols\":{},\"seconds\":{seconds},\"auc_sum\":{sum:.12}}}",
                a.rows, a.cols
            );
            Ok(())
        }
        Command::BenchBootstrap(a) => {
            let seconds = bench::time_bootstrap(a.rows, a.cols, a.replicates, a.seed);
            println!(
                "{{\"rows\":{},\"cols\":{},\"replicates\":{},\"seconds\":{seconds}}}",
                a.rows, a.cols, a.replicates
            );
            Ok(())
        }
    }
}

struct Inputs {
    policy: LabelPolicy,
    bootstrap: Option<Bootstrap>,
    manifest: Manifest,
}

fn inputs(args: &LabelArgs) -> Result<Inputs> {
    let blank = match args.blank {
        Blank::Ignore => BlankRule::Ignore,
        Blank::Negative => BlankRule::Negative,
    };
    let policy = LabelPolicy::parse(&args.policy, blank)?;
    let bootstrap = match args.bootstrap {
        0 => None,
        n if (1000..=10_000).contains(&n) => Some(Bootstrap {
            replicates: n,
            seed: args.seed,
            level: Bootstrap::DEFAULT.level,
        }),
        n => bail!(
            "--bootstrap {n}: use 1000 to 10000 replicates (default {}), or 0 for no intervals",
            Bootstrap::DEFAULT.replicates
        ),
    };
    let manifest = Manifest::read(&args.manifest)?;
    Ok(Inputs {
        policy,
        bootstrap,
        manifest,
    })
}

fn read_predictions(path: &Path) -> Result<(Predictions, Vec<Task>, Vec<String>)> {
    let predictions = Predictions::read(path)?;
    let (tasks, skipped) = labels::resolve_tasks(&predictions, path)?;
    if tasks.is_empty() {
        bail!(
            "{}: no task columns to score (found: {})",
            path.display(),
            predictions.tasks.join(", ")
        );
    }
    Ok((predictions, tasks, skipped))
}

fn legend(auc: Option<f64>, ci: Option<Interval>) -> String {
    match (auc, ci) {
        (Some(a), Some(ci)) => format!("AUC {a:.3}, 95% CI {:.3}–{:.3}", ci.low, ci.high),
        (Some(a), None) => format!("AUC {a:.3}"),
        _ => "AUC n/a".to_string(),
    }
}

fn counts(n_pos: usize, n_neg: usize) -> String {
    format!("{n_pos} positive, {n_neg} negative")
}

fn announce(written: &[PathBuf]) {
    for path in written {
        eprintln!("wrote {}", path.display());
    }
}

fn score(args: &ScoreArgs) -> Result<()> {
    let la = &args.labels;
    let read = [("predictions", args.predictions.as_path())];
    refuse_out_over_inputs(la, &SCORE_FILES, &read)?;
    let (predictions, tasks, skipped) = read_predictions(&args.predictions)?;
    let inputs = inputs(la)?;
    let set = labels::join(
        &predictions,
        &args.predictions,
        &tasks,
        &inputs.manifest,
        &la.manifest,
        &inputs.policy,
        la.aggregate,
    )?;
    la.split_rule().check(&set.splits, &args.predictions)?;
    let setup = report::setup(
        &set,
        &la.manifest,
        &inputs.policy,
        inputs.bootstrap,
        la.min_positives,
    );
    let report = report::score(&set, &args.predictions, setup, skipped);
    print!("{}", report.table());
    if let Some(dir) = &la.out {
        let mut written = report.write(dir)?;
        let panels: Vec<RocPanel> = set
            .tasks
            .iter()
            .zip(&report.tasks)
            .map(|(t, r)| RocPanel {
                title: r.task.clone(),
                curves: RocCurve::new(&t.labels, &t.scores)
                    .map(|c| (legend(r.auc, r.ci), c))
                    .into_iter()
                    .collect(),
                notes: vec![counts(r.n_pos, r.n_neg)],
            })
            .collect();
        if !la.no_plots {
            written.extend(plot::roc_figure(&panels, dir, "roc")?);
        }
        announce(&written);
    }
    Ok(())
}

fn compare(args: &CompareArgs) -> Result<()> {
    let la = &args.labels;
    let read = [
        ("predictions A", args.a.as_path()),
        ("predictions B", args.b.as_path()),
    ];
    refuse_out_over_inputs(la, &COMPARE_FILES, &read)?;
    let (pa, tasks_a, _) = read_predictions(&args.a)?;
    let (pb, tasks_b, _) = read_predictions(&args.b)?;
    same_images(&pa, &args.a, &pb, &args.b)?;
    let (mut common_a, mut common_b, mut only_a) = (Vec::new(), Vec::new(), Vec::new());
    for t in &tasks_a {
        match tasks_b.iter().find(|u| u.kind == t.kind) {
            Some(u) => {
                common_a.push(t.clone());
                common_b.push(u.clone());
            }
            None => only_a.push(t.kind.name().to_string()),
        }
    }
    let only_b: Vec<String> = tasks_b
        .iter()
        .filter(|u| !tasks_a.iter().any(|t| t.kind == u.kind))
        .map(|u| u.kind.name().to_string())
        .collect();
    if common_a.is_empty() {
        bail!(
            "{} and {} have no task in common",
            args.a.display(),
            args.b.display()
        );
    }
    let inputs = inputs(la)?;
    let join = |p: &Predictions, path: &Path, tasks: &[Task]| -> Result<EvalSet> {
        labels::join(
            p,
            path,
            tasks,
            &inputs.manifest,
            &la.manifest,
            &inputs.policy,
            la.aggregate,
        )
    };
    let set_a = join(&pa, &args.a, &common_a)?;
    la.split_rule().check(&set_a.splits, &args.a)?;
    let set_b = join(&pb, &args.b, &common_b)?;
    let setup = report::setup(
        &set_a,
        &la.manifest,
        &inputs.policy,
        inputs.bootstrap,
        la.min_positives,
    );
    let report = report::compare(&set_a, &set_b, (&args.a, &args.b), setup, (only_a, only_b));
    print!("{}", report.table());
    if let Some(dir) = &la.out {
        let mut written = report.write(dir)?;
        let panels: Vec<RocPanel> = set_a
            .tasks
            .iter()
            .zip(&set_b.tasks)
            .zip(&report.tasks)
            .map(|((ta, tb), r)| {
                let curves = [("A", r.auc_a, ta), ("B", r.auc_b, tb)]
                    .into_iter()
                    .filter_map(|(who, auc, t)| {
                        Some((
                            format!("{who}: {}", legend(auc, None)),
                            RocCurve::new(&t.labels, &t.scores)?,
                        ))
                    })
                    .collect();
                let mut notes = vec![counts(r.n_pos, r.n_neg)];
                notes.extend(
                    r.delong
                        .map(|d| format!("DeLong p = {}", report::fmt_p(d.p_value))),
                );
                RocPanel {
                    title: r.task.clone(),
                    curves,
                    notes,
                }
            })
            .collect();
        if !la.no_plots {
            written.extend(plot::roc_figure(&panels, dir, "roc_compare")?);
        }
        announce(&written);
    }
    Ok(())
}

/// What score, compare and curves write in --out (see `report` and `plot`).
const SCORE_FILES: [&str; 4] = ["metrics.json", "metrics.csv", "roc.png", "roc.svg"];
const COMPARE_FILES: [&str; 4] = [
    "comparison.json",
    "comparison.csv",
    "roc_compare.png",
    "roc_compare.svg",
];
const CURVES_FILES: [&str; 4] = ["loss.png", "loss.svg", "valid_auc.png", "valid_auc.svg"];

/// Refuse, before any work, a score or compare --out that is, or would write over, one of the
/// predictions files or the manifest.
fn refuse_out_over_inputs(la: &LabelArgs, written: &[&str], predictions: &[Named]) -> Result<()> {
    if let Some(dir) = &la.out {
        let mut inputs = predictions.to_vec();
        inputs.push(("--manifest", &la.manifest));
        paths::refuse_output_dir_among_inputs(("--out", dir), written, &inputs)?;
    }
    Ok(())
}

/// Refuse a report --out that is its --intro or an experiment (directory or experiment.json).
fn refuse_report_over_inputs(args: &ReportArgs) -> Result<()> {
    let described: Vec<PathBuf> = args
        .experiments
        .iter()
        .map(|e| e.join("experiment.json"))
        .collect();
    let mut inputs: Vec<Named> = args
        .intro
        .iter()
        .map(|p| ("--intro", p.as_path()))
        .collect();
    for (dir, json) in args.experiments.iter().zip(&described) {
        inputs.push(("EXPERIMENT", dir));
        inputs.push(("EXPERIMENT", json));
    }
    paths::refuse_output_among_inputs(("--out", &args.out), &inputs)?;
    Ok(())
}

/// A and B must score the same images; name the first one that differs.
fn same_images(a: &Predictions, a_path: &Path, b: &Predictions, b_path: &Path) -> Result<()> {
    let in_a: HashSet<&str> = a.image_ids.iter().map(String::as_str).collect();
    let in_b: HashSet<&str> = b.image_ids.iter().map(String::as_str).collect();
    for (x, x_path, other, other_path) in [(a, a_path, &in_b, b_path), (b, b_path, &in_a, a_path)] {
        if let Some((i, id)) = x
            .image_ids
            .iter()
            .enumerate()
            .find(|(_, id)| !other.contains(id.as_str()))
        {
            bail!(
                "{}: image `{id}` (row {i}) has no prediction in {}; compare needs both models' \
                 predictions of the same images",
                x_path.display(),
                other_path.display()
            );
        }
    }
    Ok(())
}

fn curves(args: &CurvesArgs) -> Result<()> {
    if !(0.0..1.0).contains(&args.smooth) {
        bail!(
            "--smooth {}: use a weight from 0 (raw) to below 1",
            args.smooth
        );
    }
    let files: Vec<PathBuf> = args
        .runs
        .iter()
        .map(|r| {
            if r.is_dir() {
                r.join(runlog::FILE_NAME)
            } else {
                r.clone()
            }
        })
        .collect();
    let inputs: Vec<Named> = files.iter().map(|f| ("RUN", f.as_path())).collect();
    paths::refuse_output_dir_among_inputs(("--out", &args.out), &CURVES_FILES, &inputs)?;
    let short: Vec<String> = args
        .runs
        .iter()
        .map(|r| {
            let r = if r.is_dir() {
                r.as_path()
            } else {
                r.parent().unwrap_or(r)
            };
            r.file_name().map_or_else(
                || r.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let unique = short.iter().collect::<HashSet<_>>().len() == short.len();
    let mut runs = Vec::new();
    for (i, file) in files.iter().enumerate() {
        // The error names the file (the run directory's metrics.jsonl), and the line if any.
        let records = runlog::read(file)?;
        let name = if unique {
            short[i].clone()
        } else {
            args.runs[i].display().to_string()
        };
        let run = RunCurves::new(&name, &records, args.x);
        if run.non_finite > 0 {
            eprintln!(
                "{}: {} records with a NaN or infinite loss are not drawn",
                file.display(),
                run.non_finite
            );
        }
        if run.train.is_empty() && run.valid.is_empty() {
            bail!("{}: no finite losses to draw", file.display());
        }
        runs.push(run);
    }
    announce(&plot::loss_figures(&runs, args.x, args.smooth, &args.out)?);
    Ok(())
}
