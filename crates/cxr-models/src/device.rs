//! Devices by name, as `cxr-train --device` and the tests' `CXR_TEST_DEVICE` give them.

use candle_core::Device;

use crate::error::{ModelError, Result};

/// `cpu`, `cuda` (the first GPU) or `cuda:N`. A CUDA device needs this crate's `cuda` feature
/// (cxr-train's `cuda` or `cudnn`, see `make cuda`) and a GPU; the error says so.
pub fn device(spec: &str) -> Result<Device> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => spec
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                ModelError::InvalidInput(format!("device `{spec}`: use cpu, cuda or cuda:N"))
            })?,
    };
    Device::new_cuda(ordinal).map_err(|e| {
        ModelError::InvalidInput(format!(
            "cannot open device `{spec}` ({e}): it needs a build with the `cuda` feature \
             (`make cuda`) and an NVIDIA GPU with its driver"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_device_or_what_to_write() {
        assert!(device("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = device(bad).unwrap_err().to_string();
            assert!(err.contains("use cpu, cuda or cuda:N"), "{bad}: {err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let err = device("cuda:1").unwrap_err().to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
