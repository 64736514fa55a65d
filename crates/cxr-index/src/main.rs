use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cxr_core::{paths, ManifestColumns, Projection, Split, CHEXPERT_14};
use cxr_index::filter::Filter;
use cxr_index::label_table::LabelTable;
use cxr_index::mimic::{self, patients::Patients, split_file::SplitFile};
use cxr_index::split::{self, Fractions, Splitter};
use cxr_index::summary::Summary;
use cxr_index::view::UnknownView;
use cxr_index::{chexpert, dicom, images, nih, Indexer, Sink};
use std::io::Write;
use std::path::{Path, PathBuf};

// Polars' and the manifest's column buffers are large allocations: mimalloc takes memory from the
// OS in large pages, so the kernel handles a few hundred page faults instead of tens of thousands
// (a fifth of the run's CPU time with glibc, measured when rows were still owned strings).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Index a chest X-ray dataset's own label files, or a folder of DICOM files, into a Parquet
/// manifest.
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
  cxr-index mimic --root /data/mimic-cxr-jpg/2.0.0 --metadata mimic-cxr-2.0.0-metadata.csv.gz \\
      --labels mimic-cxr-2.0.0-chexpert.csv.gz --split mimic-cxr-2.0.0-split.csv.gz \\
      --out mimic.parquet
  cxr-index dicom --root /data/export --labels labels.csv --out export.parquet

Paths in the manifest are relative to --root; label file paths are read relative to --root too
when they do not exist as given. Splits are per patient (a seeded hash of the patient id) into
train, valid (checkpoint selection) and test (a held-out slice of the training file). The
dataset's own evaluation set stays apart in split `official`, to be scored only: CheXpert's
valid.csv rows, MIMIC's test split, and the images of --official-list (NIH's test_list.txt).
`cxr-index help DATASET` says how each dataset's files are read.";

const CHEXPERT_HELP: &str = "Example:
  cxr-index chexpert --root /data --csv CheXpert-v1.0-small/train.csv \\
      --csv CheXpert-v1.0-small/valid.csv --out chexpert.parquet

--root is the folder holding CheXpert-v1.0-small/ (the CSVs' paths start with it). Labels 1.0,
0.0, -1.0 and blank are kept raw: positive, negative, uncertain, not mentioned. The rows of
valid.csv (radiologist consensus, where published CheXpert numbers come from) form split
`official`; the patients of train.csv are split into train, valid and test by --fractions.";

const NIH_HELP: &str = "Example:
  cxr-index nih --root /data/nih --csv Data_Entry_2017_v2020.csv.gz \\
      --official-list /data/nih/test_list.txt --drop-missing --out nih.parquet

Images are found anywhere under --root (images/, images_001/images/, ...). Each of the 14
findings is positive when `Finding Labels` lists it and negative otherwise. --official-list puts
NIH's official test patients in split `official`; the others are split by --fractions.";

const MIMIC_HELP: &str =
    "Example (the files as PhysioNet's MIMIC-CXR-JPG ships them, beside files/):
  cxr-index mimic --root /data/mimic-cxr-jpg/2.0.0 \\
      --metadata mimic-cxr-2.0.0-metadata.csv.gz --labels mimic-cxr-2.0.0-chexpert.csv.gz \\
      --split mimic-cxr-2.0.0-split.csv.gz --patients /data/mimic-iv/hosp/patients.csv.gz \\
      --out mimic.parquet

One row per image of the metadata file, at files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg under --root,
joined with the label and split files by subject, study and image. Labels are per study (the
CheXpert labeller on its report: 1.0, 0.0, -1.0, blank, kept raw); a study without a label row is
unlabelled. The official split is kept as source_split (validate as `valid`): its test images form
split `official`, its validate images split `valid`, and its train patients are split into train,
valid and test by --fractions (1,0,0 keeps MIMIC's own split exactly). MIMIC-CXR-JPG's files hold
no sex or age: --patients (MIMIC-IV's patients table) adds them, the age from anchor_age and the
study's date. Images of neither a frontal nor a lateral view (a blank, oblique or decubitus
ViewPosition) are left out and counted unless --unknown-view frontal.";

const DICOM_HELP: &str = "Example:
  cxr-index dicom --root /data/export --labels /data/export-labels.csv --out export.parquet

Every file under --root (hidden ones aside) is read up to its pixel data, in path order. Each
image is a row: image id SOPInstanceUID, patient PatientID, study StudyInstanceUID, path relative
to --root, view from ViewPosition (else ViewCodeSequence), sex from PatientSex, age from
PatientAge (045Y, 018M, ...) or the birth and study dates. Files that are not DICOM, have no pixel
data (a structured report), lack PatientID or StudyInstanceUID, repeat an image already found or
show neither a frontal nor a lateral view (unless --unknown-view frontal) are not indexed: each is
listed with the reason in OUT.skipped.csv beside the manifest.

--labels is a CSV keyed by SOPInstanceUID (per image), StudyInstanceUID (per study) or path (as
in the manifest), the first of them its header has, with observation columns named as CheXpert's
(`Pleural Effusion`, ...; 1.0, 0.0, -1.0 or blank); label rows matching no image are reported.
Patients are split into train, valid and test by --fractions; --fractions 0,0,1 puts the whole
export in `test`, to score a model trained elsewhere on it.";

#[derive(Subcommand)]
enum Dataset {
    /// CheXpert train.csv / valid.csv (plain or gzipped)
    #[command(after_help = CHEXPERT_HELP)]
    Chexpert(CsvOptions),
    /// NIH ChestX-ray14 Data_Entry_2017*.csv (plain or gzipped)
    #[command(after_help = NIH_HELP)]
    Nih(CsvOptions),
    /// MIMIC-CXR-JPG's metadata, label and split files (plain or gzipped)
    #[command(after_help = MIMIC_HELP)]
    Mimic(MimicOptions),
    /// A folder of DICOM files (a hospital export), from each file's own tags
    #[command(after_help = DICOM_HELP)]
    Dicom(DicomOptions),
}

#[derive(Args)]
struct CsvOptions {
    /// Label file(s); repeat for several
    #[arg(long, required = true)]
    csv: Vec<PathBuf>,
    /// Image ids (one per line, as NIH's test_list.txt) that form the official evaluation
    /// set, split `official`; CheXpert's valid.csv rows are there without a list. The list
    /// must hold whole patients (a patient in two splits is an error)
    #[arg(long, value_name = "FILE")]
    official_list: Option<PathBuf>,
    #[command(flatten)]
    files: FileOptions,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct MimicOptions {
    /// mimic-cxr-2.0.0-metadata.csv(.gz): one row per image
    #[arg(long, value_name = "CSV")]
    metadata: PathBuf,
    /// mimic-cxr-2.0.0-chexpert.csv(.gz) (or -negbio): labels per study
    #[arg(long, value_name = "CSV")]
    labels: PathBuf,
    /// mimic-cxr-2.0.0-split.csv(.gz): the official train / validate / test split
    #[arg(long, value_name = "CSV")]
    split: PathBuf,
    /// MIMIC-IV's patients.csv(.gz) (subject_id, gender, anchor_age, anchor_year): adds sex and
    /// age; without it they are unknown
    #[arg(long, value_name = "CSV")]
    patients: Option<PathBuf>,
    /// Images of neither a frontal nor a lateral view
    #[arg(long, value_enum, default_value_t)]
    unknown_view: UnknownView,
    #[command(flatten)]
    files: FileOptions,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct DicomOptions {
    /// Folder of DICOM files, sub-folders included; paths in the manifest are relative to it
    #[arg(long)]
    root: PathBuf,
    /// Labels: a CSV keyed by SOPInstanceUID, StudyInstanceUID or path, with observation
    /// columns named as CheXpert's
    #[arg(long, value_name = "CSV")]
    labels: Option<PathBuf>,
    /// Images of neither a frontal nor a lateral view
    #[arg(long, value_enum, default_value_t)]
    unknown_view: UnknownView,
    #[command(flatten)]
    common: Common,
}

/// Options of the datasets indexed from label files, whose images may or may not be on disk.
#[derive(Args)]
struct FileOptions {
    /// Folder the image paths are relative to (CheXpert: the folder holding CheXpert-v1.0-small;
    /// NIH: the folder holding the images, in any sub-folder layout; MIMIC: the folder holding
    /// files/)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Keep rows of this dataset's own split only (train or valid; MIMIC: also test)
    #[arg(long, value_parser = parse_split)]
    source_split: Option<Split>,
    /// Fail, naming the first row, if any image is missing under --root
    #[arg(long, requires = "root", conflicts_with = "drop_missing")]
    require_images: bool,
    /// Keep only rows whose image exists under --root
    #[arg(long, requires = "root")]
    drop_missing: bool,
}

/// Options of every dataset.
#[derive(Args)]
struct Common {
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
    Split::parse(s)
        .filter(|&split| split != Split::Official)
        .ok_or_else(|| format!("`{s}` is not one of train, valid, test"))
}

fn main() {
    cxr_core::error::exit_on_error("cxr-index", run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.dataset {
        Dataset::Chexpert(opts) => index_label_files(opts, false),
        Dataset::Nih(opts) => index_label_files(opts, true),
        Dataset::Mimic(opts) => index_mimic(opts),
        Dataset::Dicom(opts) => index_dicom(opts),
    }
}

/// CheXpert's and NIH's label files.
fn index_label_files(opts: CsvOptions, is_nih: bool) -> Result<()> {
    let root = opts.files.root.as_deref();
    let csvs: Vec<PathBuf> = opts.csv.iter().map(|csv| resolve(csv, root)).collect();
    let mut inputs: Vec<(&str, &Path)> = csvs.iter().map(|c| ("--csv", c.as_path())).collect();
    inputs.extend(
        opts.official_list
            .iter()
            .map(|p| ("--official-list", p.as_path())),
    );
    inputs.extend(root.map(|p| ("--root", p)));
    refuse_overwriting_inputs(&opts.common, &[], &inputs)?;
    let mut splitter = Splitter::new(opts.common.fractions, opts.common.seed);
    if let Some(list) = &opts.official_list {
        splitter
            .read_official_list(list)
            .map_err(anyhow::Error::msg)?;
    }
    let mut indexer = new_indexer(&opts.common, Some(&opts.files), splitter);
    for csv in &csvs {
        indexer.begin_file(csv);
        let sink: &mut Sink = &mut |line, row| indexer.add(line, row);
        if is_nih {
            nih::read(csv, sink)?;
        } else {
            chexpert::read(csv, sink)?;
        }
    }
    let rows = checked_rows(&mut indexer)?;
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
    let (rows, summary) = checked_summary(rows, &indexer, &opts.common, Some(&opts.files), is_nih)?;
    write_manifest(&rows, &summary, &opts.common)
}

/// MIMIC-CXR-JPG: the metadata file's rows, joined with the label, split and patients tables.
fn index_mimic(opts: MimicOptions) -> Result<()> {
    let root = opts.files.root.as_deref();
    let metadata = resolve(&opts.metadata, root);
    let labels = resolve(&opts.labels, root);
    let split = resolve(&opts.split, root);
    let patients = opts.patients.as_deref().map(|p| resolve(p, root));
    let mut inputs = vec![
        ("--metadata", metadata.as_path()),
        ("--labels", labels.as_path()),
        ("--split", split.as_path()),
    ];
    inputs.extend(patients.iter().map(|p| ("--patients", p.as_path())));
    inputs.extend(root.map(|p| ("--root", p)));
    refuse_overwriting_inputs(&opts.common, &[], &inputs)?;

    let splitter = Splitter::new(opts.common.fractions, opts.common.seed);
    let mut indexer = new_indexer(&opts.common, Some(&opts.files), splitter);
    let label_table = LabelTable::read(&labels, &[mimic::LABEL_KEY], &CHEXPERT_14, &mut indexer)?;
    let splits = SplitFile::read(&split, &mut indexer)?;
    let patients = match &patients {
        Some(path) => Some(Patients::read(path, &mut indexer)?),
        None => None,
    };
    let mut tables = mimic::Tables::new(label_table, splits, patients, opts.unknown_view);
    indexer.begin_file(&metadata);
    mimic::read(&metadata, &mut tables, &mut |line, row| {
        indexer.add(line, row)
    })?;

    note_unknown_views(&indexer);
    if tables.unlabelled_images > 0 {
        note(&format!(
            "{} images are of studies without a row in {}: every observation is not mentioned",
            tables.unlabelled_images,
            labels.display()
        ));
    }
    note_unused_labels(&tables.labels, "study of the metadata file");
    if let (Some(patients), n @ 1..) = (&tables.patients, tables.images_without_patient) {
        note(&format!(
            "{n} images are of subjects not in {}: their sex is unknown and age empty",
            patients.path.display()
        ));
    }
    let rows = checked_rows(&mut indexer)?;
    let (rows, mut summary) =
        checked_summary(rows, &indexer, &opts.common, Some(&opts.files), false)?;
    summary.unknown_views = indexer.unknown_views.values().sum();
    write_manifest(&rows, &summary, &opts.common)
}

/// A folder of DICOM files: a row per image, from its header.
fn index_dicom(opts: DicomOptions) -> Result<()> {
    let root = opts.root.as_path();
    let labels = opts.labels.as_deref().map(|l| resolve(l, Some(root)));
    let report = dicom::report_path(&opts.common.out);
    let mut inputs = vec![("--root", root)];
    inputs.extend(labels.iter().map(|p| ("--labels", p.as_path())));
    let listing = [("the list of files not indexed", report.as_path())];
    refuse_overwriting_inputs(&opts.common, &listing, &inputs)?;

    let splitter = Splitter::new(opts.common.fractions, opts.common.seed);
    let mut indexer = new_indexer(&opts.common, None, splitter);
    let mut label_table = match &labels {
        Some(path) => Some(LabelTable::read(
            path,
            dicom::LABEL_KEYS,
            &[],
            &mut indexer,
        )?),
        None => None,
    };
    if let Some(table) = &label_table {
        if !table.ignored_columns.is_empty() {
            note(&format!(
                "{}: columns not read (no observation of that name): {}",
                table.path.display(),
                table.ignored_columns.join(", ")
            ));
        }
    }
    let scan = dicom::scan(root, opts.unknown_view)
        .with_context(|| format!("searching {} for DICOM files", root.display()))?;
    let found: Vec<PathBuf> = scan.images.iter().map(|(p, _)| root.join(p)).collect();
    let image = "an image under --root,";
    let found: Vec<(&str, &Path)> = found.iter().map(|p| (image, p.as_path())).collect();
    refuse_overwriting_inputs(&opts.common, &listing, &found)?;
    for file in scan.not_indexed.iter().take(5) {
        eprintln!("cxr-index: not indexed: {}: {}", file.path, file.reason);
    }
    if scan.images.is_empty() {
        bail!(
            "no DICOM image to index under {}: {} files, none of them indexed (the reasons are \
             above)",
            root.display(),
            scan.not_indexed.len()
        );
    }
    let unlabelled = dicom::index(root, &scan, label_table.as_mut(), &mut indexer)?;
    if let Some(table) = &label_table {
        if unlabelled > 0 {
            note(&format!(
                "{unlabelled} images have no row in {}: every observation is not mentioned",
                table.path.display()
            ));
        }
        note_unused_labels(table, "image found");
    }
    let rows = checked_rows(&mut indexer)?;
    let (rows, mut summary) = checked_summary(rows, &indexer, &opts.common, None, false)?;
    summary.files_not_indexed = scan.not_indexed.len();
    dicom::write_report(&report, &scan.not_indexed)?;
    write_manifest(&rows, &summary, &opts.common)?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "listed {} files not indexed in {}",
        scan.not_indexed.len(),
        report.display()
    );
    Ok(())
}

fn new_indexer(common: &Common, files: Option<&FileOptions>, splitter: Splitter) -> Indexer {
    let filter = Filter {
        frontal_only: common.frontal_only,
        projections: common.projection.clone(),
        source_split: files.and_then(|f| f.source_split),
    };
    Indexer::new(filter, splitter, common.lenient)
}

/// The rows indexed, once no image id is there twice and no patient in two splits; the first
/// rows `--lenient` skipped are shown.
fn checked_rows(indexer: &mut Indexer) -> Result<ManifestColumns> {
    indexer.check_unique_ids()?;
    for skipped in indexer.skipped.iter().take(5) {
        eprintln!("cxr-index: skipped: {skipped}");
    }
    let rows = std::mem::take(&mut indexer.columns);
    split::check_patients(&rows).map_err(anyhow::Error::msg)?;
    Ok(rows)
}

/// The rows to write, their images checked as the options say, and their summary; refuses to
/// write a manifest without rows.
fn checked_summary(
    mut rows: ManifestColumns,
    indexer: &Indexer,
    common: &Common,
    files: Option<&FileOptions>,
    is_nih: bool,
) -> Result<(ManifestColumns, Summary)> {
    let missing = match files {
        Some(files) => check_images(files, is_nih, &mut rows)?,
        None => None,
    };
    if rows.is_empty() {
        bail!(
            "no rows to write to {}: {} rows read ({} unreadable skipped), none kept (see \
             --projection, --frontal-only, --source-split, --drop-missing)",
            common.out.display(),
            indexer.read,
            indexer.skipped.len()
        );
    }
    let mut summary = Summary::of(&rows);
    summary.missing_images = missing;
    summary.skipped_rows = indexer.skipped.len();
    Ok((rows, summary))
}

/// Write the manifest (and the summary as JSON if asked), then print the summary.
fn write_manifest(rows: &ManifestColumns, summary: &Summary, common: &Common) -> Result<()> {
    rows.write(&common.out)?;
    // A closed pipe (`| head`) is not an error worth a panic: the manifest is already written.
    let _ = write!(
        std::io::stdout().lock(),
        "{summary}\nwrote {}\n",
        common.out.display()
    );
    if let Some(path) = &common.summary_json {
        let json = serde_json::to_vec_pretty(summary)?;
        cxr_core::atomic::write_bytes(path, &json)?;
    }
    Ok(())
}

/// Count, require or drop rows without an image, as the options say.
fn check_images(
    opts: &FileOptions,
    is_nih: bool,
    rows: &mut ManifestColumns,
) -> Result<Option<usize>> {
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

/// Refuse an output (--out, --summary-json, and `extra` outputs) that is one of the inputs, or
/// two outputs that are one file, before reading anything.
fn refuse_overwriting_inputs(
    common: &Common,
    extra: &[(&str, &Path)],
    inputs: &[(&str, &Path)],
) -> Result<()> {
    let mut outputs = vec![("--out", common.out.as_path())];
    outputs.extend(
        common
            .summary_json
            .iter()
            .map(|p| ("--summary-json", p.as_path())),
    );
    outputs.extend_from_slice(extra);
    for (i, &(flag, output)) in outputs.iter().enumerate() {
        paths::refuse_output_among_inputs((flag, output), inputs)?;
        if let Some(&(other_flag, other)) = outputs[..i]
            .iter()
            .find(|&&(_, other)| paths::same_file(output, other))
        {
            bail!(
                "{flag} {} and {other_flag} {} are the same file: choose two output paths",
                output.display(),
                other.display()
            );
        }
    }
    Ok(())
}

/// A label file path as given, or under the root if it is not found as given.
fn resolve(csv: &Path, root: Option<&Path>) -> PathBuf {
    match root {
        Some(root) if !csv.exists() && root.join(csv).exists() => root.join(csv),
        _ => csv.to_path_buf(),
    }
}

/// Tell the user something worth knowing that does not stop the run.
fn note(text: &str) {
    eprintln!("cxr-index: note: {text}");
}

/// How many images were left out for their view, by the value that said so.
fn note_unknown_views(indexer: &Indexer) {
    if indexer.unknown_views.is_empty() {
        return;
    }
    let total: usize = indexer.unknown_views.values().sum();
    let by_value: Vec<String> = indexer
        .unknown_views
        .iter()
        .map(|(value, n)| match value.as_str() {
            "" => format!("blank {n}"),
            value => format!("`{value}` {n}"),
        })
        .collect();
    note(&format!(
        "left out {total} images of neither a frontal nor a lateral view (ViewPosition {}); \
         --unknown-view frontal keeps them as frontal, projection unknown",
        by_value.join(", ")
    ));
}

/// Label rows that no image asked for: a label file of another release or dataset joins to
/// nothing without an error.
fn note_unused_labels(table: &LabelTable, what: &str) {
    let unused = table.unused();
    if let Some((key, line)) = unused.first() {
        note(&format!(
            "{} of {} rows of {} match no {what}; the first: `{key}` (line {line})",
            unused.len(),
            table.len(),
            table.path.display()
        ));
    }
}
