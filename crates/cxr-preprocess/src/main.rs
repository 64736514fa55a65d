//! Command line of `cxr-preprocess`; the work is in the library.

use anyhow::Result;
use clap::Parser;
use cxr_core::shard::{Resize, INDEX_FILE};
use cxr_preprocess::output::{self, Finish, ERRORS_FILE};
use cxr_preprocess::{run, ArrayTask, Decoding, DicomIntensity, JpegScaling, Options, Target};
use std::path::PathBuf;
use std::process::ExitCode;

/// `--resize`: how a film becomes a square.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ResizeArg {
    Pad,
    CentreCrop,
}

/// `--dicom-intensity`: which DICOM values span black to white.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DicomIntensityArg {
    Window,
    FullRange,
}

const EXAMPLES: &str = "\
Examples:
  # CheXpert at 320x320, whole films (longer side to 320, centred on black), on 8 threads:
  cxr-preprocess --manifest chexpert.parquet --root /data --size 320 --jobs 8 --out shards/cx-320

  # NIH at 224x224, centre crop (shorter side to 224, then the middle square):
  cxr-preprocess --manifest nih.parquet --root /data/nih --size 224 --resize centre-crop \\
      --out shards/nih-224

  # A Slurm job array: each task makes every 16th shard; the last one to finish writes
  # index.json. Task numbers come from SLURM_ARRAY_TASK_ID/_MIN/_COUNT:
  sbatch --array=0-15 --wrap \\
      'cxr-preprocess --manifest m.parquet --root /data --size 224 --out shards/224'

  # Rebuild index.json and errors.csv of a finished directory:
  cxr-preprocess --out shards/224 --index-only

Output (in --out): shard-NNNNN.safetensors (u8 [N,1,S,S] images and their manifest rows),
shard-NNNNN.json (sidecar: checksum, rows, failed images), index.json and errors.csv
(row,path,reason) once every shard exists, preprocess.json (the settings, so that a re-run with
other settings is refused instead of mixing shards).

Interrupting is safe: every file is written under a temporary name and renamed, so re-running the
same command skips finished shards and redoes only those in flight, and any shard whose file no
longer matches the checksum in its sidecar (readers refuse such a shard).

Grey levels: colour is converted with Pillow's ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B;
colour JPEGs give their Y channel, the same luma), alpha is dropped, 16-bit samples are scaled
to 8 bits with rounding. Large JPEGs are decoded at
1/2, 1/4 or 1/8 scale when at least twice the output size remains (--full-decode turns that off).

DICOM (recognised by its DICM header, whatever the file name): the first frame, through Rescale
Slope/Intercept (or the Modality LUT), then as a viewer shows it: the file's VOI LUT, else its
first Window Center/Width, else its lowest to highest value (--dicom-intensity full-range always
takes that range, so nothing is clipped); MONOCHROME1 is inverted so that bone is bright. Transfer
syntaxes: uncompressed (little/big endian, explicit/implicit VR), deflate, RLE, JPEG baseline,
8-bit extended and lossless, JPEG 2000. JPEG-LS, JPEG XL, 12-bit lossy JPEG and 32-bit RLE are
refused, naming the syntax, in errors.csv.

Exit status: 0 success; 1 the job failed (message says why); 2 bad arguments; 3 the shards were
written but some images could not be used (listed in errors.csv; --allow-errors makes that 0).";

/// Decode chest X-rays (PNG, JPEG, DICOM) to grey S x S squares in safetensors shards, resumably and in
/// parallel.
#[derive(Parser, Debug)]
#[command(name = "cxr-preprocess", version, after_help = EXAMPLES)]
struct Args {
    /// Manifest (Parquet) from cxr-index; its `path` column is relative to --root.
    #[arg(long, value_name = "FILE", required_unless_present = "index_only")]
    manifest: Option<PathBuf>,

    /// Dataset root that the manifest's paths start from.
    #[arg(long, value_name = "DIR", required_unless_present = "index_only")]
    root: Option<PathBuf>,

    /// Side of the output squares, in pixels, 16 to 4096 (224 for ImageNet-style models).
    #[arg(long, value_name = "S", required_unless_present = "index_only", value_parser = parse_size)]
    size: Option<usize>,

    /// Output directory (created if missing; an existing one is resumed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Manifest rows per shard. The last shard may hold fewer.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    shard_rows: usize,

    /// pad: keep the whole film, longer side to S, centred on black. centre-crop: shorter side
    /// to S, then the middle S x S, which cuts the apices and costophrenic angles off portrait
    /// films (most of CheXpert), so it is not the default
    #[arg(long, value_enum, default_value = "pad")]
    resize: ResizeArg,

    /// Decode every JPEG pixel instead of a scaled decode that keeps at least 2x the output size
    /// (several times slower on large JPEGs; output differs by a few grey levels at most).
    #[arg(long)]
    full_decode: bool,

    /// DICOM grey levels. window: as a viewer shows the image (the file's VOI LUT or first
    /// window, else its full range). full-range: the image's lowest to highest value, ignoring
    /// any window (nothing clipped to black or white). Recorded with the shards
    #[arg(long, value_enum, value_name = "RULE", default_value = "window")]
    dicom_intensity: DicomIntensityArg,

    /// Worker threads [default: all cores].
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,

    /// Exit with status 0 even if some images could not be used (they are still reported).
    #[arg(long)]
    allow_errors: bool,

    /// This task's number among --num-shards array tasks (0-based): it makes the shards k with
    /// k % N == I. Default: from a Slurm job array's environment, else the whole job.
    #[arg(long, value_name = "I", requires = "num_shards")]
    shard_index: Option<usize>,

    /// Number of array tasks the shards are divided among.
    #[arg(long, value_name = "N", requires = "shard_index")]
    num_shards: Option<usize>,

    /// Only (re)write index.json and errors.csv from the finished shards in --out.
    #[arg(long, conflicts_with_all = ["manifest", "root", "size", "resize", "full_decode", "dicom_intensity", "shard_index"])]
    index_only: bool,
}

/// `--size`, refused by clap (exit status 2) outside [`Target::SIZES`].
fn parse_size(text: &str) -> Result<usize, String> {
    let size = text
        .parse()
        .map_err(|e| format!("`{text}` is not a number of pixels: {e}"))?;
    Target::check_size(size)?;
    Ok(size)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Errors exit with status 1; 0 and 3 (some images unusable) come from `execute`.
    cxr_core::error::exit_on_error("cxr-preprocess", execute(&args))
}

fn execute(args: &Args) -> Result<ExitCode> {
    let out = &args.out;
    if args.index_only {
        return match output::finish(out)? {
            Finish::Missing(missing) => anyhow::bail!(
                "{} is not finished: {} shards missing (first: {:?}); run the remaining array tasks, \
                 or the same command again without --index-only",
                out.display(),
                missing.len(),
                &missing[..missing.len().min(10)]
            ),
            finished => {
                report_finish(args, &finished);
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    let (Some(manifest), Some(root), Some(size)) = (&args.manifest, &args.root, args.size) else {
        unreachable!("clap requires --manifest, --root and --size without --index-only")
    };
    // Before any work: --out must not be (nor write its fixed files over) the manifest or root.
    cxr_core::paths::refuse_output_dir_among_inputs(
        ("--out", out),
        &[INDEX_FILE, cxr_core::shard::SETTINGS_FILE, ERRORS_FILE],
        &[("--manifest", manifest), ("--root", root)],
    )?;
    let options = Options {
        manifest: manifest.clone(),
        root: root.clone(),
        out: out.clone(),
        target: Target::new(
            size,
            match args.resize {
                ResizeArg::Pad => Resize::Pad,
                ResizeArg::CentreCrop => Resize::CentreCrop,
            },
        ),
        shard_rows: args.shard_rows,
        decoding: Decoding {
            jpeg: if args.full_decode {
                JpegScaling::Full
            } else {
                JpegScaling::Dct
            },
            dicom: match args.dicom_intensity {
                DicomIntensityArg::Window => DicomIntensity::Window,
                DicomIntensityArg::FullRange => DicomIntensity::FullRange,
            },
        },
        jobs: args.jobs,
        task: ArrayTask::resolve(args.shard_index, args.num_shards, |name| {
            std::env::var(name).ok()
        })?,
    };
    let summary = run(&options)?;
    const SHOWN: usize = 10;
    for e in summary.new_errors.iter().take(SHOWN) {
        eprintln!("  row {} {}: {}", e.row, e.path, e.reason);
    }
    if summary.new_errors.len() > SHOWN {
        eprintln!("  ... and {} more", summary.new_errors.len() - SHOWN);
    }
    eprintln!("cxr-preprocess: {summary}");
    report_finish(args, &summary.finish);
    if summary.errors() > 0 && !args.allow_errors {
        eprintln!(
            "cxr-preprocess: {} images could not be used and are left out of the shards (listed in \
             {} once every shard exists, and in the shards' .json sidecars). Fix or remove them and \
             delete those shards to retry them, or pass --allow-errors to accept the shards as they are.",
            summary.errors(),
            out.join(ERRORS_FILE).display()
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn report_finish(args: &Args, finish: &Finish) {
    let out = args.out.display();
    match finish {
        Finish::Indexed {
            shards,
            images,
            errors,
        } => eprintln!(
            "cxr-preprocess: wrote {out}/index.json ({shards} shards, {images} images) and \
             {out}/{ERRORS_FILE} ({errors} errors)"
        ),
        Finish::Missing(missing) => eprintln!(
            "cxr-preprocess: {} shards still to make (other array tasks, or re-run this command); \
             index.json is written by the run that finds them all done",
            missing.len()
        ),
    }
}
