//! `cxr-train predict --image FILE...`: image files scored directly, without a manifest or
//! shards, and with `--cam` explained by Grad-CAM heatmaps ([`crate::heatmap`]).
//!
//! Each file is prepared as cxr-preprocess prepares a shard's images (the training shards'
//! square and decoding, [`crate::input`], through [`cxr_image::prepare`]) and normalised as the
//! data loader normalises a shard's ([`Batch::from_pixels`]), then scored in batches of
//! `--batch-size` in the order given. The same files in the same order and batches give the
//! probabilities `cxr-train predict --shards` gives for them, bit for bit
//! (`crates/cxr-e2e/tests/single_image.rs`). The predictions file is `predict`'s, with each
//! file's path, as given, for its image id.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use cxr_core::paths;
use cxr_core::predictions::Predictions;
use cxr_models::Precision;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::data::Batch;
use crate::heatmap::{self, CamTarget, ImageCam};
use crate::input::{InputFlags, ResolvedInput};
use crate::labels::HeadTask;
use crate::predict::{append_logits, heads_of, load_checkpoint, predictions};

/// What `cxr-train predict --image` needs.
#[derive(Debug)]
pub struct ImagePredictOptions {
    pub checkpoint: PathBuf,
    pub images: Vec<PathBuf>,
    /// The predictions file (Parquet).
    pub out: PathBuf,
    pub batch_size: usize,
    pub device: Device,
    pub precision: Precision,
    /// How files become input squares, where not as the training shards were made.
    pub input: InputFlags,
    /// Grad-CAM of one output (`--cam`), and the folder its files go to.
    pub cam: Option<(String, PathBuf)>,
}

/// What a run did.
pub struct ImagePredictSummary {
    pub predictions: Predictions,
    /// How the files were prepared.
    pub input: ResolvedInput,
    /// The heatmaps written: `(overlay PNG, safetensors)` per image.
    pub heatmaps: Vec<(PathBuf, PathBuf)>,
}

/// Scores the files, writes the predictions file and, with `--cam`, the heatmaps.
pub fn run(options: &ImagePredictOptions) -> Result<ImagePredictSummary> {
    let mut seen = HashSet::new();
    if let Some(twice) = options.images.iter().find(|p| !seen.insert(*p)) {
        bail!("--image {} is given twice", twice.display());
    }
    let (model, meta, norm) =
        load_checkpoint(&options.checkpoint, &options.device, options.precision)?;
    let input = options.input.resolve(&meta.training_config)?;
    let heads = heads_of(&model)?;
    let cam = match &options.cam {
        Some((name, dir)) => Some(cam_outputs(options, &heads, name, dir)?),
        None => None,
    };
    let size = input.input.target.size;
    let pixels = prepare_files(&options.images, &input)?;

    let mut logits: Vec<Vec<f32>> = vec![Vec::new(); heads.len()];
    let inference = model.inference();
    let batch_size = options.batch_size.max(1);
    for (b, files) in pixels.chunks(batch_size).enumerate() {
        let grey: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let batch = Batch::from_pixels(&grey, size, &norm).to_device(model.device())?;
        append_logits(&inference.infer(&batch.images)?, &heads, &mut logits)?;
        let Some((target, paths)) = &cam else {
            continue;
        };
        let maps = model.grad_cam(&batch.images, &target.head_name, target.output)?;
        let head = &heads[target.head];
        for (i, grey) in grey.iter().enumerate() {
            let n = b * batch_size + i;
            let image = ImageCam {
                image: &options.images[n],
                checkpoint: &options.checkpoint,
                target,
                pixels: grey,
                size,
                score: head.score(logits[target.head][n * head.outputs() + target.output]),
            };
            image.write(&maps, i, &paths[n])?;
        }
    }
    let ids: Vec<String> = options
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let predictions = predictions(&ids, &heads, &logits)?;
    predictions.write(&options.out)?;
    Ok(ImagePredictSummary {
        predictions,
        input,
        heatmaps: cam.map(|(_, paths)| paths).unwrap_or_default(),
    })
}

/// The output `--cam` names and the files its heatmaps go to, refused before any work when a
/// name is unknown or a file would overwrite an input.
fn cam_outputs(
    options: &ImagePredictOptions,
    heads: &[HeadTask],
    name: &str,
    dir: &Path,
) -> Result<(CamTarget, Vec<(PathBuf, PathBuf)>)> {
    let target = CamTarget::find(heads, name)?;
    let files = heatmap::paths(dir, &options.images, &target)?;
    let mut inputs = vec![("--checkpoint", options.checkpoint.as_path())];
    inputs.extend(options.images.iter().map(|p| ("--image", p.as_path())));
    for path in files.iter().flat_map(|(png, numbers)| [png, numbers]) {
        paths::refuse_output_among_inputs(("--cam", path), &inputs)?;
    }
    Ok((target, files))
}

/// Every file read and prepared, in order; the first that fails stops the run, named.
fn prepare_files(images: &[PathBuf], input: &ResolvedInput) -> Result<Vec<Vec<u8>>> {
    let ResolvedInput { input, .. } = input;
    let side = input.target.size;
    images
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut pixels = vec![0u8; side * side];
            cxr_image::prepare(&bytes, &input.target, input.decoding, &mut pixels)
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
            Ok(pixels)
        })
        .collect()
}

/// The predictions as a table to read: one row per image, one column per output
/// (probabilities to 3 decimals, age in years to 1).
pub fn table(predictions: &Predictions) -> String {
    let id_width = predictions
        .image_ids
        .iter()
        .map(|id| id.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let widths: Vec<usize> = predictions
        .tasks
        .iter()
        .map(|t| t.chars().count().max(6))
        .collect();
    let mut text = format!("{:<id_width$}", "image");
    for (task, w) in predictions.tasks.iter().zip(&widths) {
        let _ = write!(text, "  {task:>w$}");
    }
    text.push('\n');
    for (i, id) in predictions.image_ids.iter().enumerate() {
        let _ = write!(text, "{id:<id_width$}");
        for ((task, scores), w) in predictions
            .tasks
            .iter()
            .zip(&predictions.scores)
            .zip(&widths)
        {
            let decimals = if task == crate::config::Task::Age.name() {
                1
            } else {
                3
            };
            let _ = write!(text, "  {:>w$.decimals$}", scores[i]);
        }
        text.push('\n');
    }
    text
}

/// The folder heatmaps go to by default: the predictions file's.
pub fn default_cam_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_image_and_age_in_years() {
        let p = Predictions::new(
            vec!["a/00000075_000.png".into(), "b.dcm".into()],
            vec!["Pleural Effusion".into(), "age".into()],
            vec![vec![0.12345, 0.9], vec![61.04, 7.0]],
        )
        .unwrap();
        let want = "\
image               Pleural Effusion     age
a/00000075_000.png             0.123    61.0
b.dcm                          0.900     7.0
";
        assert_eq!(table(&p), want);
    }

    #[test]
    fn heatmaps_go_beside_the_predictions_by_default() {
        assert_eq!(
            default_cam_dir(Path::new("out/p.parquet")),
            Path::new("out")
        );
        assert_eq!(default_cam_dir(Path::new("p.parquet")), Path::new("."));
    }
}
