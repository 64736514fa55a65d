//! Grad-CAM (Selvaraju et al., ICCV 2017): where in the image the evidence for one output is.
//!
//! For an output `y` (one logit of one head) and the map `A` the heads pool (`[C, h, w]`:
//! DenseNet's features after the final ReLU, ResNet's `layer4` output), each channel gets the
//! weight `alpha_k = mean_ij dy/dA_k[i, j]`, and the map is `ReLU(sum_k alpha_k A_k)`, in the
//! logit's units at the feature map's resolution ([`GradCam::cam`]). The gradient is candle's
//! autograd through the heads, on the map of an eval-mode forward (BatchNorm on its running
//! statistics): what `model.eval()` and a backward from the logit compute in PyTorch.
//!
//! To look at, [`heatmap`] brings a map to the input's size exactly as the `pytorch-grad-cam`
//! library's `GradCAM` returns it (`grad-cam` 1.5 on PyPI; `BaseCAM.forward`): shifted to
//! start at 0 and divided by `1e-7 + max`, resized bilinearly with OpenCV's `cv2.resize`
//! (`INTER_LINEAR`: pixel centres at `+0.5`, edges clamped, no antialiasing), then shifted and
//! divided again, so it runs from 0 to 1 whatever the logit's scale.
//! `tests/reference/gradcam.py` computes both with that library on the golden models, and
//! `tests/grad_cam.rs` holds ours to them.

use candle_core::{Tensor, Var};

use crate::error::{ModelError, Result};
use crate::model::Model;

/// Grad-CAM of one output for a batch of images.
#[derive(Debug, Clone)]
pub struct GradCam {
    /// `[N, h, w]`: `ReLU(sum_k alpha_k A_k)` at the feature map's resolution, in the logit's
    /// units (not normalised).
    pub cam: Tensor,
    /// `[N, C]`: `alpha_k`, the spatial mean of the output's gradient on each channel.
    pub weights: Tensor,
    /// `[N]`: the output explained, as the same forward computed it.
    pub logits: Tensor,
}

impl Model {
    /// Grad-CAM of output `output` of head `head` for each image of `x` (`[N, in_channels, H,
    /// W]`, normalised as the model was trained). The images are independent: the backward
    /// starts from the sum of their logits, each of which depends on its own image only.
    pub fn grad_cam(&self, x: &Tensor, head: &str, output: usize) -> Result<GradCam> {
        let map = Var::from_tensor(&self.eval_pooled_map(x)?)?;
        let logits = self.head_logits(map.as_tensor(), head)?;
        let outputs = logits.dim(1)?;
        if output >= outputs {
            return Err(ModelError::InvalidInput(format!(
                "head `{head}` has {outputs} outputs; output {output} does not exist"
            )));
        }
        let logits = logits.narrow(1, output, 1)?.squeeze(1)?;
        let grads = logits.sum_all()?.backward()?;
        let grad = grads.get(map.as_tensor()).ok_or_else(|| {
            ModelError::InvalidInput(format!("head `{head}` does not depend on the feature map"))
        })?;
        let weights = grad.mean((2, 3))?;
        let cam = map
            .as_tensor()
            .broadcast_mul(&weights.unsqueeze(2)?.unsqueeze(3)?)?
            .sum(1)?
            .relu()?;
        Ok(GradCam {
            cam,
            weights,
            logits: logits.detach(),
        })
    }
}

/// A raw map (`h x w` values, row by row) as `pytorch-grad-cam` returns it at `out_h x out_w`:
/// scaled to 0..1, resized as `cv2.resize` does (see the module docs), scaled to 0..1 again. A
/// map of zeros stays zeros.
pub fn heatmap(cam: &[f32], (h, w): (usize, usize), (out_h, out_w): (usize, usize)) -> Vec<f32> {
    assert_eq!(cam.len(), h * w, "a {h} x {w} map has {} values", h * w);
    unit_range(&resize_bilinear(&unit_range(cam), (h, w), (out_h, out_w)))
}

/// `pytorch_grad_cam.utils.image.scale_cam_image` without the resize, in f32 as numpy computes
/// it: `v - min`, divided by `1e-7 + max` of that.
fn unit_range(values: &[f32]) -> Vec<f32> {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let shifted: Vec<f32> = values.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let scale = 1e-7 + max;
    shifted.iter().map(|v| v / scale).collect()
}

/// OpenCV's `INTER_LINEAR` resize of a single-channel f32 image (`h x w` values, row by row)
/// to `out_h x out_w`: source coordinate `(d + 0.5) * src / dst - 0.5`, its two neighbours
/// weighted linearly, clamped to the edge pixel outside; rows interpolated first, then columns
/// combined, as OpenCV orders it. What [`heatmap`] resizes with, and what enlarges an image to
/// lay a heatmap of the same size over.
pub fn resize_bilinear(
    src: &[f32],
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    let taps_x = linear_taps(w, out_w);
    let taps_y = linear_taps(h, out_h);
    let row = |y: usize| -> Vec<f32> {
        let line = &src[y * w..(y + 1) * w];
        taps_x
            .iter()
            .map(|&(x, a0, a1)| line[x] * a0 + line[(x + 1).min(w - 1)] * a1)
            .collect()
    };
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y, b0, b1) in &taps_y {
        let (r0, r1) = (row(y), row((y + 1).min(h - 1)));
        out.extend(r0.iter().zip(&r1).map(|(v0, v1)| v0 * b0 + v1 * b1));
    }
    out
}

/// For each output coordinate: the first source pixel and the two weights, as OpenCV's
/// `resize` computes them (the fraction in f32; a coordinate before the first pixel or at or
/// after the last takes that pixel alone).
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, f32, f32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let frac = f - s;
            match s as isize {
                s if s < 0 => (0, 1.0, 0.0),
                s if s as usize >= src - 1 => (src - 1, 1.0, 0.0),
                s => (s as usize, 1.0 - frac, frac),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_follow_opencv_at_the_edges_and_inside() {
        // 2 -> 4: centres at -0.25, 0.25, 0.75, 1.25; the outer two clamp.
        let taps = linear_taps(2, 4);
        assert_eq!(taps[0], (0, 1.0, 0.0));
        assert_eq!(taps[1], (0, 0.75, 0.25));
        assert_eq!(taps[2], (0, 0.25, 0.75));
        assert_eq!(taps[3], (1, 1.0, 0.0));
        // The same size copies.
        assert!(linear_taps(5, 5)
            .iter()
            .enumerate()
            .all(|(i, &t)| t == (i, 1.0, 0.0)));
    }

    #[test]
    fn heatmap_runs_from_zero_to_one_and_keeps_a_zero_map() {
        let map = heatmap(&[0.0, 2.0, 4.0, 8.0], (2, 2), (4, 4));
        let (lo, hi) = map
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert_eq!(lo, 0.0);
        assert!((hi - 1.0).abs() < 1e-6, "{hi}");
        // The corner pixel sits on the larger source value's side.
        assert_eq!(map[15], hi);
        assert!(heatmap(&[0.0; 4], (2, 2), (3, 3)).iter().all(|&v| v == 0.0));
    }
}
