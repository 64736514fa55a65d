//! Refusing weights that hold NaN or infinite values.
//!
//! A checkpoint written by a run that diverged, or damaged on its way, loads as well as a good
//! one and nothing fails later: a first convolution of NaN gives every image the same scores
//! (the ReLUs and pools turn NaN into constants), a few thousand NaN inside one layer move the
//! AUCs a little. So every file that weights are read from goes through [`check_finite`]:
//! [`crate::read_weights`] calls it, and with it every load ([`crate::Model::load`],
//! [`crate::Model::from_checkpoint`]) and whatever else reads through it (an optimiser's
//! moments). It is one pass over the values, on the CPU copy that loading makes anyway.

use std::path::Path;

use candle_core::{CpuStorage, Device, Storage, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::{ModelError, NonFiniteTensor, Result};

/// Refuses `tensors`, read from `path`, when any of them holds a NaN or an infinity: the error
/// ([`ModelError::NonFinite`]) names the file and every such tensor with its counts. Integer
/// tensors have no such values and are skipped.
pub fn check_finite<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<()> {
    let mut bad = Vec::new();
    for (name, tensor) in tensors {
        let (nan, infinite) = count_non_finite(tensor)?;
        if nan + infinite > 0 {
            bad.push(NonFiniteTensor {
                name: name.to_string(),
                nan,
                infinite,
                total: tensor.elem_count(),
            });
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(ModelError::NonFinite {
        path: path.to_path_buf(),
        tensors: bad,
    })
}

/// How many values of `tensor` are NaN and how many infinite (0 and 0 for integer tensors).
fn count_non_finite(tensor: &Tensor) -> Result<(usize, usize)> {
    if !tensor.dtype().is_float() {
        return Ok((0, 0));
    }
    // Loading reads to the CPU first; tensors elsewhere, or strided, are copied.
    let tensor = tensor.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        unreachable!("a tensor moved to the CPU is stored there")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        unreachable!("a contiguous tensor has contiguous offsets")
    };
    Ok(match cpu {
        CpuStorage::F32(v) => count(&v[start..end]),
        CpuStorage::F64(v) => count(&v[start..end]),
        CpuStorage::F16(v) => count(&v[start..end]),
        CpuStorage::BF16(v) => count(&v[start..end]),
        CpuStorage::F8E4M3(v) => count(&v[start..end]),
        // Integers, and the packed formats candle only carries as bytes.
        _ => (0, 0),
    })
}

/// (NaN, infinite) among `values`: a good tensor costs one pass that counts nothing, in pieces
/// over the threads (ResNet152's 58M f32 values: 30-60 ms on two busy cores, where reading
/// them takes 200-300 ms).
fn count<T: WithDType>(values: &[T]) -> (usize, usize) {
    let non_finite = count_where(values, |x| !x.is_finite());
    if non_finite == 0 {
        return (0, 0);
    }
    let nan = count_where(values, f64::is_nan);
    (nan, non_finite - nan)
}

/// How many of `values` are `bad` (generic, so that the test is inlined into the loop).
fn count_where<T: WithDType>(values: &[T], bad: impl Fn(f64) -> bool + Sync) -> usize {
    values
        .par_chunks(1 << 16)
        .map(|piece| piece.iter().filter(|x| bad(x.to_f64())).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn counts_nan_and_infinity_in_every_float_dtype() {
        let values = [
            1.0f32,
            f32::NAN,
            f32::INFINITY,
            -2.0,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let t = Tensor::new(&values[..], &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let t = t.to_dtype(dtype).unwrap();
            assert_eq!(count_non_finite(&t).unwrap(), (2, 2), "{dtype:?}");
        }
        // A strided view counts its own values only.
        let m = Tensor::new(&[[1.0f32, f32::NAN], [2.0, 3.0]], &Device::Cpu).unwrap();
        assert_eq!(count_non_finite(&m.t().unwrap()).unwrap(), (1, 0));
        assert_eq!(
            count_non_finite(&m.narrow(0, 1, 1).unwrap()).unwrap(),
            (0, 0)
        );
        let ints = Tensor::new(&[1i64, 2], &Device::Cpu).unwrap();
        assert_eq!(count_non_finite(&ints).unwrap(), (0, 0));
    }

    #[test]
    fn names_the_file_and_each_bad_tensor() {
        let good = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let bad = Tensor::new(&[f32::NAN, 2.0, f32::INFINITY], &Device::Cpu).unwrap();
        let path = Path::new("runs/x/best.safetensors");
        assert!(check_finite(path, [("a", &good)]).is_ok());
        let err = check_finite(path, [("a", &good), ("layer1.0.conv1.weight", &bad)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs/x/best.safetensors"), "{err}");
        assert!(
            err.contains("layer1.0.conv1.weight: 2 of 3 values non-finite (1 NaN, 1 infinite)"),
            "{err}"
        );
        assert!(!err.contains("  a:"), "{err}");
    }
}
