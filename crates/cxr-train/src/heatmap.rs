//! `cxr-train predict --image ... --cam NAME`: Grad-CAM heatmaps of one output, as pictures and
//! as numbers.
//!
//! `NAME` is a column of the predictions file: an observation of the pathology head (`Edema`,
//! `Pleural Effusion`; case and `_` for spaces do not matter) or a one-output head (`sex`,
//! `age`, `view`). For each image two files are written (atomically), `STEM.NAME.png` and
//! `STEM.NAME.safetensors`, STEM the file's stem (with its last folders where stems repeat, see
//! [`paths`]) and NAME the output with `_` for spaces:
//!
//! - the overlay: the model's input square, grey as it was prepared, under the heatmap in the
//!   jet colour map, blended half and half and rescaled so that the brightest value is 255, as
//!   `pytorch-grad-cam`'s `show_cam_on_image` draws it (OpenCV's `COLORMAP_JET`, which is
//!   MATLAB's jet). Squares under [`OVERLAY_MIN_SIDE`] pixels (the demo's 64 and 128) are drawn
//!   enlarged by a whole factor to at least that, the grey square and the heatmap both resized
//!   from their sources as the heatmap is;
//! - the numbers: `cam` (f32 `[h, w]`, the raw map at the feature resolution in the logit's
//!   units), `heatmap` (f32 `[size, size]`, 0 to 1: the map as `pytorch-grad-cam` returns it),
//!   `weights` (f32 `[C]`, the channel weights) and `input` (u8 `[size, size]`, the prepared
//!   image), with the image, the output, its logit and score and the checkpoint in the metadata.
//!
//! The maps are [`cxr_models::grad_cam`]'s, held to the library by a golden test.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use cxr_core::atomic;
use cxr_models::grad_cam::{heatmap, resize_bilinear};
use cxr_models::GradCam;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::labels::HeadTask;

/// The smallest side an overlay is drawn at, for a person to see it.
pub const OVERLAY_MIN_SIDE: usize = 256;

/// The output a heatmap explains.
#[derive(Debug, Clone, PartialEq)]
pub struct CamTarget {
    /// Index of the head among the model's heads.
    pub head: usize,
    /// The head's name in the model.
    pub head_name: String,
    /// The output within the head.
    pub output: usize,
    /// The predictions column it writes (`Edema`, `view`).
    pub column: String,
}

impl CamTarget {
    /// The output of `heads` whose predictions column is `name`; an unknown name is refused
    /// with the names there are.
    pub fn find(heads: &[HeadTask], name: &str) -> Result<CamTarget> {
        let wanted = name.trim().replace('_', " ");
        for (h, head) in heads.iter().enumerate() {
            for (output, column) in head.columns.iter().enumerate() {
                if column.eq_ignore_ascii_case(&wanted) {
                    return Ok(CamTarget {
                        head: h,
                        head_name: head.task.name().to_string(),
                        output,
                        column: column.clone(),
                    });
                }
            }
        }
        let names: Vec<&str> = heads
            .iter()
            .flat_map(|h| h.columns.iter().map(String::as_str))
            .collect();
        bail!(
            "--cam `{name}`: the checkpoint has no such output; its outputs are {}",
            names.join(", ")
        )
    }

    /// What file names carry for this output: the column with `_` for spaces.
    fn file_tag(&self) -> String {
        self.column.replace(' ', "_")
    }
}

/// Where the heatmaps of `images` go in `dir`: `(png, safetensors)` per image, named by the
/// file's stem, or where another file has the same stem (CheXpert names every frontal film
/// `view1_frontal.jpg`) by as many of its last folders as tell it from the others, joined by
/// `_` (`patient64541_study1_view1_frontal`). Files no folder tells apart (`x.png` and `x.jpg`)
/// are refused.
pub fn paths(
    dir: &Path,
    images: &[PathBuf],
    target: &CamTarget,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let parts: Vec<Vec<String>> = images.iter().map(|image| name_parts(image)).collect();
    let last = |p: &[String], depth: usize| p[p.len().saturating_sub(depth)..].join("_");
    let names: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, own)| {
            let apart = |depth: usize| {
                let name = last(own, depth);
                parts
                    .iter()
                    .enumerate()
                    .all(|(j, other)| j == i || last(other, depth) != name)
            };
            let depth = (1..=own.len()).find(|&d| apart(d)).unwrap_or(own.len());
            last(own, depth)
        })
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, name) in names.iter().enumerate() {
        if let Some(i) = seen.insert(name, j) {
            bail!(
                "{} and {} would write the same heatmap files ({name}.{}.*): rename one, or run \
                 them separately with another --cam-dir",
                images[i].display(),
                images[j].display(),
                target.file_tag()
            );
        }
    }
    Ok(names
        .iter()
        .map(|name| {
            let base = format!("{name}.{}", target.file_tag());
            (
                dir.join(format!("{base}.png")),
                dir.join(format!("{base}.safetensors")),
            )
        })
        .collect())
}

/// A path's folder names and its file stem, in order (`..`, `.` and the root left out).
fn name_parts(image: &Path) -> Vec<String> {
    let mut parts: Vec<String> = image
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    parts.extend(image.file_stem().map(|s| s.to_string_lossy().into_owned()));
    parts
}

/// One image's heatmap and what it was computed from.
pub struct ImageCam<'a> {
    pub image: &'a Path,
    pub checkpoint: &'a Path,
    pub target: &'a CamTarget,
    /// The prepared grey square.
    pub pixels: &'a [u8],
    pub size: usize,
    /// The model's score for the output (a probability, or years for age).
    pub score: f64,
}

impl ImageCam<'_> {
    /// Writes the overlay PNG and the safetensors of image `i` of `cam` (computed for a batch).
    pub fn write(
        &self,
        cam: &GradCam,
        i: usize,
        (png, numbers): &(PathBuf, PathBuf),
    ) -> Result<()> {
        let raw = cam.cam.get(i)?.to_device(&Device::Cpu)?;
        let (h, w) = raw.dims2()?;
        let raw: Vec<f32> = raw.flatten_all()?.to_vec1()?;
        let map = heatmap(&raw, (h, w), (self.size, self.size));
        let side = self.size * OVERLAY_MIN_SIDE.div_ceil(self.size);
        let grey: Vec<f32> = self.pixels.iter().map(|&g| f32::from(g) / 255.0).collect();
        let rgb = match side == self.size {
            true => overlay(&grey, &map),
            false => overlay(
                &resize_bilinear(&grey, (self.size, self.size), (side, side)),
                &heatmap(&raw, (h, w), (side, side)),
            ),
        };
        atomic::write_bytes(png, &encode_png(&rgb, side)?)?;
        let logit: f32 = cam.logits.get(i)?.to_device(&Device::Cpu)?.to_scalar()?;
        let cpu = Device::Cpu;
        let tensors = [
            ("cam", Tensor::from_vec(raw, (h, w), &cpu)?),
            (
                "heatmap",
                Tensor::from_vec(map, (self.size, self.size), &cpu)?,
            ),
            ("weights", cam.weights.get(i)?.to_device(&cpu)?),
            (
                "input",
                Tensor::from_vec(self.pixels.to_vec(), (self.size, self.size), &cpu)?,
            ),
        ]
        .map(|(name, t)| (name.to_string(), t));
        let metadata = HashMap::from([
            ("image".to_string(), self.image.display().to_string()),
            (
                "checkpoint".to_string(),
                self.checkpoint.display().to_string(),
            ),
            ("output".to_string(), self.target.column.clone()),
            ("head".to_string(), self.target.head_name.clone()),
            ("logit".to_string(), logit.to_string()),
            ("score".to_string(), self.score.to_string()),
            (
                "method".to_string(),
                "Grad-CAM (pytorch-grad-cam's GradCAM)".to_string(),
            ),
        ]);
        cxr_models::write_weights(numbers, &tensors, Some(metadata))
            .with_context(|| format!("cannot write {}", numbers.display()))
    }
}

/// `show_cam_on_image(img, mask)` with its defaults: the grey image (0..1) and the jet colour of
/// the mask's level (`uint8(255 * mask)`), averaged, divided by the largest value, to 8 bits
/// (truncated, as numpy's `uint8` does). RGB, row by row.
fn overlay(grey: &[f32], heat: &[f32]) -> Vec<u8> {
    let blended: Vec<f32> = grey
        .iter()
        .zip(heat)
        .flat_map(|(&g, &m)| jet((255.0 * m) as u8).map(|c| 0.5 * (f32::from(c) / 255.0) + 0.5 * g))
        .collect();
    let max = blended
        .iter()
        .copied()
        .fold(0.0, f32::max)
        .max(f32::MIN_POSITIVE);
    blended.iter().map(|v| (255.0 * v / max) as u8).collect()
}

/// MATLAB's jet at level `level` (OpenCV's `COLORMAP_JET` table): blue through cyan, yellow to
/// red; each channel a trapezoid `1.5 - |4 v - k|` clamped to 0..1, in 8 bits.
fn jet(level: u8) -> [u8; 3] {
    let v = f32::from(level) / 255.0;
    let channel = |k: f32| ((1.5 - (4.0 * v - k).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

fn encode_png(rgb: &[u8], size: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let side = u32::try_from(size).context("image too large for a PNG")?;
    let mut encoder = png::Encoder::new(&mut bytes, side, side);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Task;
    use cxr_core::{LabelPolicy, Observation};

    fn heads() -> Vec<HeadTask> {
        let observations = [
            Observation::parse("Edema").unwrap(),
            Observation::parse("Pleural Effusion").unwrap(),
        ];
        vec![
            HeadTask::new(
                Task::Pathologies,
                1.0,
                &observations,
                &LabelPolicy::default(),
            ),
            HeadTask::new(Task::Sex, 0.1, &[], &LabelPolicy::default()),
        ]
    }

    #[test]
    fn names_are_predictions_columns() {
        let heads = heads();
        let t = CamTarget::find(&heads, "pleural_effusion").unwrap();
        assert_eq!(
            (t.head, t.output, t.column.as_str()),
            (0, 1, "Pleural Effusion")
        );
        assert_eq!(t.head_name, "pathologies");
        let t = CamTarget::find(&heads, "Sex").unwrap();
        assert_eq!((t.head, t.output, t.head_name.as_str()), (1, 0, "sex"));
        let err = CamTarget::find(&heads, "Fracture").unwrap_err().to_string();
        assert_eq!(
            err,
            "--cam `Fracture`: the checkpoint has no such output; its outputs are Edema, \
             Pleural Effusion, sex"
        );
    }

    #[test]
    fn files_are_named_by_their_stems_or_as_many_folders_as_tell_them_apart() {
        let t = CamTarget::find(&heads(), "Pleural Effusion").unwrap();
        let names = |images: &[&str]| -> Vec<String> {
            let images: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();
            let files = paths(Path::new("out"), &images, &t).unwrap();
            for (png, numbers) in &files {
                assert_eq!(png.with_extension("safetensors"), *numbers);
            }
            files
                .iter()
                .map(|(png, _)| png.display().to_string())
                .collect()
        };
        assert_eq!(
            names(&["a/x.png", "b/y.jpg"]),
            ["out/x.Pleural_Effusion.png", "out/y.Pleural_Effusion.png"]
        );
        let chexpert = [
            "/d/valid/patient64541/study1/view1_frontal.jpg",
            "/d/valid/patient64542/study1/view1_frontal.jpg",
            "../d/valid/patient64542/study1/view2_lateral.jpg",
            "nih/00000075_000.png",
        ];
        assert_eq!(
            names(&chexpert),
            [
                "out/patient64541_study1_view1_frontal.Pleural_Effusion.png",
                "out/patient64542_study1_view1_frontal.Pleural_Effusion.png",
                "out/view2_lateral.Pleural_Effusion.png",
                "out/00000075_000.Pleural_Effusion.png",
            ]
        );
        let images = [PathBuf::from("a/x.png"), PathBuf::from("a/x.dcm")];
        let err = paths(Path::new("out"), &images, &t)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "a/x.png and a/x.dcm would write the same heatmap files (a_x.Pleural_Effusion.*)"
            ),
            "{err}"
        );
    }

    #[test]
    fn jet_runs_from_dark_blue_to_dark_red() {
        assert_eq!(jet(0), [0, 0, 128]);
        assert_eq!(jet(255), [128, 0, 0]);
        // The middle: green, with a little more red than blue.
        assert_eq!(jet(128), [130, 255, 125]);
        // A quarter of the way: cyan-ish blue; three quarters: yellow-ish red.
        assert_eq!(jet(64), [0, 129, 255]);
        assert_eq!(jet(191), [255, 128, 0]);
    }

    #[test]
    fn the_overlay_is_rescaled_to_its_brightest_value() {
        // White under the hottest level: (1 + 0.5 * 128/255) / 2 of red is the largest value.
        let rgb = overlay(&[1.0, 0.0], &[1.0, 0.0]);
        assert_eq!(rgb[0], 255);
        // Black under the coldest level keeps only the blue of jet's first colour.
        assert_eq!(rgb[3..5], [0, 0]);
        assert!(rgb[5] > 0);
    }
}
