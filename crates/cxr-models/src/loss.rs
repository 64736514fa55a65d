//! Binary cross-entropy on logits, numerically stable.
//!
//! The study's multi-label losses (pathologies, sex) are BCE on logits. candle-nn's
//! `binary_cross_entropy_with_logit` goes through `sigmoid` and `log`, which overflows to
//! infinity for logits of large magnitude; this is PyTorch's stable form instead:
//! `max(x, 0) - x * y + log(1 + exp(-|x|))`.

use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// Mean binary cross-entropy of `logits` against `targets` (same shape, targets in [0, 1]),
/// as `torch.nn.BCEWithLogitsLoss()` computes it.
///
/// With a `mask` (same shape, 1 = counts, 0 = ignore, e.g. unlabelled findings), the mean runs
/// over the unmasked entries only; when every entry is masked the loss is 0, not NaN.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let same_shape = |t: &Tensor, what: &str| {
        if t.dims() == logits.dims() {
            Ok(())
        } else {
            Err(ModelError::InvalidInput(format!(
                "bce_with_logits: {what} have shape {:?}, logits {:?}",
                t.dims(),
                logits.dims()
            )))
        }
    };
    same_shape(targets, "targets")?;
    let targets = targets.to_dtype(logits.dtype())?;
    // `maximum` splits the gradient at x = 0, giving sigmoid(0) - y there, as the math says.
    let loss = ((logits.maximum(0f64)? - logits.mul(&targets)?)?
        + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    match mask {
        None => Ok(loss.mean_all()?),
        Some(mask) => {
            same_shape(mask, "mask")?;
            let mask = mask.to_dtype(logits.dtype())?;
            let count = mask.sum_all()?.clamp(1f64, f64::MAX)?;
            Ok(loss.mul(&mask)?.sum_all()?.div(&count)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn naive(x: f64, y: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
    }

    #[test]
    fn matches_the_definition_and_stays_finite() {
        let dev = Device::Cpu;
        let xs = [-3.0f32, -0.5, 0.0, 0.7, 4.0];
        let ys = [1.0f32, 0.0, 1.0, 1.0, 0.0];
        let x = Tensor::new(&xs, &dev).unwrap();
        let y = Tensor::new(&ys, &dev).unwrap();
        let got = bce_with_logits(&x, &y, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = xs
            .iter()
            .zip(ys)
            .map(|(&x, y)| naive(x as f64, y as f64))
            .sum::<f64>()
            / 5.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");

        let big = Tensor::new(&[200f32, -200.0], &dev).unwrap();
        let y = Tensor::new(&[0f32, 1.0], &dev).unwrap();
        let got = bce_with_logits(&big, &y, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(got, 200.0);
    }

    #[test]
    fn mask_excludes_entries_and_empty_mask_gives_zero() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, -2.0], [0.5, 3.0]], &dev).unwrap();
        let y = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let got = bce_with_logits(&x, &y, Some(&mask))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = (naive(1.0, 1.0) + naive(3.0, 1.0)) / 2.0;
        assert!((got - want).abs() < 1e-6);
        let none = mask.zeros_like().unwrap();
        let got = bce_with_logits(&x, &y, Some(&none))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(got, 0.0);
        assert!(bce_with_logits(&x, &y.flatten_all().unwrap(), None).is_err());
    }
}
