//! Mixed precision: convolutions and matrix products in bf16, everything else in f32.
//!
//! As PyTorch's bf16 autocast does it on a GPU: the operands of each convolution and matrix
//! product are rounded to bf16 (8 significant bits), multiplied on bf16 tensor cores with f32
//! accumulation, and the result is taken back to f32. BatchNorm statistics, the losses, the
//! optimiser and the master weights stay f32, so the update of a small weight is not lost to
//! bf16's rounding. Gradients flow back through the same casts (candle differentiates
//! `to_dtype`), so the backward's products are bf16 too.
//!
//! It is a property of the model ([`crate::Model::set_precision`]); the layers read it from a
//! scope that [`crate::Model::forward`] opens. The CPU kernels are f32 only: in bf16 a model runs
//! on CUDA, or on the CPU inside [`crate::with_candle_ops`], which is how the tests check its
//! numbers against f32 where no GPU is.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The arithmetic of convolutions and matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (on CUDA, cuDNN may still use TF32 unless it is turned off).
    #[default]
    F32,
    /// bf16 operands, f32 accumulation and f32 everywhere else.
    Bf16,
}

impl Precision {
    /// Whether this is the default, f32 (run configurations leave it out then, so that
    /// configurations written before bf16 existed read and hash as they did).
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

impl FromStr for Precision {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(ModelError::InvalidInput(format!(
                "precision `{s}`: use f32 or bf16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

thread_local! {
    static CURRENT: RefCell<Precision> = const { RefCell::new(Precision::F32) };
}

/// Runs `f` with the layers computing in `precision` (this thread only).
pub(crate) fn scope<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    crate::layers::scoped(&CURRENT, precision, f)
}

/// The precision the layers compute in now.
pub(crate) fn current() -> Precision {
    CURRENT.with_borrow(|p| *p)
}

/// The dtype the operands of products are rounded to in the current precision.
pub(crate) fn operand_dtype() -> DType {
    match current() {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    }
}

/// `a @ b`, in bf16 with an f32 result when the current precision says so. For the layers
/// outside this crate that belong to a model's computation (a projector's linear layers): call
/// it inside [`crate::Model::precision_scope`].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dtype = operand_dtype();
    if dtype == DType::F32 {
        return Ok(a.matmul(b)?);
    }
    let product = a.to_dtype(dtype)?.matmul(&b.to_dtype(dtype)?)?;
    Ok(product.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn parses_and_prints_its_names() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("use f32 or bf16"), "{err}");
    }

    #[test]
    fn bf16_rounds_the_operands_and_returns_f32() {
        // 1 + 2^-10 is exact in f32 and rounds to 1 in bf16 (8 significant bits).
        let a = Tensor::new(&[[1.0f32 + 1.0 / 1024.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1.0f32]], &Device::Cpu).unwrap();
        let f32_product = matmul(&a, &b).unwrap();
        let bf16_product = scope(Precision::Bf16, || matmul(&a, &b)).unwrap();
        assert_eq!(bf16_product.dtype(), DType::F32);
        assert_eq!(
            f32_product.to_vec2::<f32>().unwrap(),
            [[1.0 + 1.0 / 1024.0]]
        );
        assert_eq!(bf16_product.to_vec2::<f32>().unwrap(), [[1.0]]);
        assert_eq!(current(), Precision::F32, "the scope ends with the call");
    }
}
