use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cxr_core::{paths, ManifestColumns, Projection, Split};
use cxr_index::filter::Filter;
use cxr_index::split::{self, Fractions, Splitter};
use cxr_index::summary::Summary;
use cxr_index::{chexpert, images, nih, Indexer, Sink};
use std::io::Write;
use std::path::PathBuf;

// Polars' and the manifest's column buffers are large allocations: mimalloc takes memory from the
// OS in large pages, so the kernel handles a few hundred page faults instead of tens of thousands
// (a fifth of the run's CPU time with glibc, measured when rows were still owned strings).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Index a chest X-ray dataset's own label files into a Parquet manifest.
///
/// The manifest has one row per image: ids, patient, study, view, projection, sex, age, splits,
/// and the raw label state of every observation (positive, negative, uncertain, not mentioned).
/// No uncertainty policy is baked in: U-Ignore, U-Ones and U-Zeros are chosen at training time.
#[derive(Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    dataset: Dataset,
}

const EXAMPLES: &str = "Examples:
  cxr-index chexpert --root /data --csv CheXpert-v1.0-small/train.csv \\
      --csv CheXpert-v1.0-small/valid.csv --out chexpert.parquet
  cxr-index nih --root /data/nih --csv Data_Entry_2017_v2020.csv.gz \\
      --drop-missing --out nih.parquet
  cxr-index nih --csv Data_Entry_2017_v2020.csv.gz --projection PA,AP --fractions 0.7,0.1,0.2 \\
      --seed 1 --out nih.parquet

Paths in the manifest are relative to --root; CSV paths are read relative to --root too when
they do not exist as given. Splits are per patient (a seeded hash of the patient id) into
train, valid (checkpoint selection) and test (a held-out slice of the training file). The
dataset's own evaluation set stays apart in split `official`, to be scored only: CheXpert's
valid.csv rows, and the images of --official-list (NIH's test_list.txt).";

#[derive(Subcommand)]
enum Dataset {
    /// CheXpert train.csv / valid.csv (plain or gzipped)
    Chexpert(Options),
    /// NIH ChestX-ray14 Data_Entry_2017*.csv (plain or gzipped)
    Nih(Options),
}

#[derive(Args)]
struct Options {
    /// Label file(s); repeat for several
    #[arg(long, required = true)]
    csv: Vec<PathBuf>,
    /// Folder the image paths are relative to (CheXpert: the folder holding CheXpert-v1.0-small;
    /// NIH: the folder holding the images, in any sub-folder layout)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Output manifest (Parquet)
    #[arg(long)]
    out: PathBuf,
    /// Patient fractions for train,valid,test
    #[arg(long, default_value = "0.8,0.1,0.1")]
    fractions: Fractions,
    /// Seed of the patient split
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep frontal images only
    #[arg(long)]
    frontal_only: bool,
    /// Keep these projections only (comma-separated: AP, PA, LL, RL, unknown)
    #[arg(long, value_delimiter = ',', value_parser = parse_projection)]
    projection: Vec<Projection>,
    /// Image ids (one per line, as NIH's test_list.txt) that form the official evaluation
    /// set, split `official`; CheXpert's valid.csv rows are there without a list. The list
    /// must hold whole patients (a patient in two splits is an error)
    #[arg(long, value_name = "FILE")]
    official_list: Option<PathBuf>,
    /// Keep rows of this dataset's own split only (train or valid)
    #[arg(long, value_parser = parse_split)]
    source_split: Option<Split>,
    /// Fail, naming the first row, if any image is missing under --root
    #[arg(long, requires = "root", conflicts_with = "drop_missing")]
    require_images: bool,
    /// Keep only rows whose image exists under --root
    #[arg(long, requires = "root")]
    drop_missing: bool,
    /// Skip rows with values that cannot be read (and count them) instead of stopping
    #[arg(long)]
    lenient: bool,
    /// Also write the summary as JSON here
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

fn parse_projection(s: &str) -> Result<Projection, String> {
    Projection::parse(s).ok_or_else(|| format!("`{s}` is not one of AP, PA, LL, RL, unknown"))
}

fn parse_split(s: &str) -> Result<Split, String> {
    Split::parse(s).ok_or_else(|| format!("`{s}` is not one of train, valid"))
}

fn main() {
    cxr_core::error::exit_on_error("cxr-index", run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    let (is_nih, opts) = match cli.dataset {
        Dataset::Chexpert(o) => (false, o),
        Dataset::Nih(o) => (true, o),
    };
    refuse_overwriting_inputs(&opts)?;
    let filter = Filter {
        frontal_only: opts.frontal_only,
        projections: opts.projection.clone(),
        source_split: opts.source_split,
    };
    let mut splitter = Splitter::new(opts.fractions, opts.seed);
    if let Some(list) = &opts.official_list {
        splitter
            .read_official_list(list)
            .map_err(anyhow::Error::msg)?;
    }
    let mut indexer = Indexer::new(filter, splitter, opts.lenient);
    for csv in &opts.csv {
        let csv = resolve(csv, opts.root.as_deref());
        indexer.begin_file(&csv);
        let sink: &mut Sink = &mut |line, row| indexer.add(line, row);
        if is_nih {
            nih::read(&csv, sink)?;
        } else {
            chexpert::read(&csv, sink)?;
        }
    }
    indexer.check_unique_ids()?;
    for skipped in indexer.skipped.iter().take(5) {
        eprintln!("cxr-index: skipped: {skipped}");
    }
    let mut rows = indexer.columns;
    split::check_patients(&rows).map_err(anyhow::Error::msg)?;
    if let Some(list) = &opts.official_list {
        let listed = rows.rows().filter(|r| r.split == Split::Official).count();
        if listed == 0 {
            bail!(
                "none of the images in the official list {} is in the label files: is it the \
                 list of this dataset (image ids such as 00000003_000.png, one per line)?",
                list.display()
            );
        }
    }
    let missing = check_images(&opts, is_nih, &mut rows)?;
    if rows.is_empty() {
        bail!(
            "no rows to write to {}: {} rows read ({} unreadable skipped), none kept (see \
             --projection, --frontal-only, --source-split, --drop-missing)",
            opts.out.display(),
            indexer.read,
            indexer.skipped.len()
        );
    }

    let mut summary = Summary::of(&rows);
    summary.missing_images = missing;
    summary.skipped_rows = indexer.skipped.len();
    rows.write(&opts.out)?;
    // A closed pipe (`| head`) is not an error worth a panic: the manifest is already written.
    let _ = write!(
        std::io::stdout().lock(),
        "{summary}\nwrote {}\n",
        opts.out.display()
    );
    if let Some(path) = &opts.summary_json {
        let json = serde_json::to_vec_pretty(&summary)?;
        cxr_core::atomic::write_bytes(path, &json)?;
    }
    Ok(())
}

/// Count, require or drop rows without an image, as the options say.
fn check_images(opts: &Options, is_nih: bool, rows: &mut ManifestColumns) -> Result<Option<usize>> {
    let Some(root) = &opts.root else {
        return Ok(None);
    };
    if is_nih {
        *rows = images::locate_nih(root, rows)
            .with_context(|| format!("searching {} for images", root.display()))?;
    }
    let missing = images::missing(root, rows);
    if let (true, Some(&first)) = (opts.require_images, missing.first()) {
        let row = rows.row(first);
        bail!(
            "{} of {} images are missing under {}; the first is `{}` ({}); \
             drop --require-images or pass --drop-missing to index only what is there",
            missing.len(),
            rows.len(),
            root.display(),
            row.path,
            row.image_id
        );
    }
    if opts.drop_missing {
        let gone: std::collections::HashSet<usize> = missing.iter().copied().collect();
        let kept = rows.rows().enumerate().filter(|(i, _)| !gone.contains(i));
        *rows = kept.map(|(_, row)| row).collect();
        return Ok(Some(0));
    }
    Ok(Some(missing.len()))
}

/// Refuse an output (--out, --summary-json) that is one of the inputs, before reading anything.
fn refuse_overwriting_inputs(opts: &Options) -> Result<()> {
    let csvs: Vec<PathBuf> = opts
        .csv
        .iter()
        .map(|csv| resolve(csv, opts.root.as_deref()))
        .collect();
    let mut inputs: Vec<(&str, &std::path::Path)> =
        csvs.iter().map(|c| ("--csv", c.as_path())).collect();
    inputs.extend(
        opts.official_list
            .iter()
            .map(|p| ("--official-list", p.as_path())),
    );
    inputs.extend(opts.root.iter().map(|p| ("--root", p.as_path())));
    paths::refuse_output_among_inputs(("--out", &opts.out), &inputs)?;
    if let Some(json) = &opts.summary_json {
        paths::refuse_output_among_inputs(("--summary-json", json), &inputs)?;
        if paths::same_file(json, &opts.out) {
            bail!(
                "--summary-json {} and --out {} are the same file: choose two output paths",
                json.display(),
                opts.out.display()
            );
        }
    }
    Ok(())
}

/// A label file path as given, or under the root if it is not found as given.
fn resolve(csv: &std::path::Path, root: Option<&std::path::Path>) -> PathBuf {
    match root {
        Some(root) if !csv.exists() && root.join(csv).exists() => root.join(csv),
        _ => csv.to_path_buf(),
    }
}
