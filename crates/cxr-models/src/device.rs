//! Devices by name, as `cxr-train --device` and the tests' `CXR_TEST_DEVICE` give them, and the
//! GPU's memory.
//!
//! Each GPU is opened once per process: candle gives every `Device::new_cuda` a new identity and
//! treats two identities as two devices, so tensors made through a second call could not meet
//! the first call's tensors ("device mismatch"). [`device`] hands out clones of one device.
//!
//! On opening, the device's memory pool is told to keep what it frees: candle allocates through
//! CUDA's stream-ordered allocator, whose default pool hands memory back to the driver at every
//! synchronisation (each step's copy of the loss to the host is one), so every step would map
//! its whole working set afresh. The pool's high-water mark is what [`gpu_memory`] reports.

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
    cuda::open(ordinal).map_err(|e| {
        ModelError::InvalidInput(format!(
            "cannot open device `{spec}` ({e}): it needs a build with the `cuda` feature \
             (`make cuda`) and an NVIDIA GPU with its driver"
        ))
    })
}

/// The GPU memory in use by this process's tensors: now and at the peak since the last
/// [`GpuMemory::reset_peak`], in bytes, from the device's memory pool. None on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuMemory {
    pub used: u64,
    pub peak: u64,
}

/// The memory of `device`'s pool (None on the CPU, or where the pool cannot be read).
pub fn gpu_memory(device: &Device) -> Option<GpuMemory> {
    cuda::memory(device)
}

impl GpuMemory {
    /// Starts a new peak at the memory in use now.
    pub fn reset_peak(device: &Device) {
        cuda::reset_peak(device)
    }

    pub fn peak_mib(&self) -> f64 {
        self.peak as f64 / (1u64 << 20) as f64
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};

    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::Device;

    use super::GpuMemory;

    /// Each ordinal's device, opened once.
    pub(super) fn open(ordinal: usize) -> candle_core::Result<Device> {
        static OPENED: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
        let opened = OPENED.get_or_init(Default::default);
        let mut opened = opened.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(device) = opened.get(&ordinal) {
            return Ok(device.clone());
        }
        let device = Device::new_cuda(ordinal)?;
        // Keep freed memory in the pool (the module doc says why); a pool that cannot be set
        // only costs speed.
        if let Some(pool) = pool(&device) {
            let mut keep = u64::MAX;
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
            // SAFETY: the device's default pool, and a u64 as the attribute takes.
            let _ = unsafe { result::mem_pool::set_attribute(pool, attr, as_ptr(&mut keep)) };
        }
        opened.insert(ordinal, device.clone());
        Ok(device)
    }

    /// The default memory pool of a CUDA device, which the stream-ordered allocator uses.
    fn pool(device: &Device) -> Option<sys::CUmemoryPool> {
        let Device::Cuda(cuda) = device else {
            return None;
        };
        let context = cuda.cuda_stream().context().clone();
        context.bind_to_thread().ok()?;
        // SAFETY: a device handle of a live context.
        unsafe { result::device::get_default_mem_pool(context.cu_device()).ok() }
    }

    fn as_ptr(value: &mut u64) -> *mut std::ffi::c_void {
        (value as *mut u64).cast()
    }

    fn attribute(pool: sys::CUmemoryPool, attr: sys::CUmemPool_attribute) -> Option<u64> {
        let mut value = 0u64;
        // SAFETY: the pool attributes read here are u64s.
        unsafe { result::mem_pool::get_attribute(pool, attr, as_ptr(&mut value)).ok()? };
        Some(value)
    }

    pub(super) fn memory(device: &Device) -> Option<GpuMemory> {
        use sys::CUmemPool_attribute::{
            CU_MEMPOOL_ATTR_USED_MEM_CURRENT, CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        };
        let pool = pool(device)?;
        Some(GpuMemory {
            used: attribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            peak: attribute(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        })
    }

    pub(super) fn reset_peak(device: &Device) {
        if let Some(pool) = pool(device) {
            // Setting the high-water mark to 0 restarts it from the memory in use.
            let mut zero = 0u64;
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
            // SAFETY: as in `open`.
            let _ = unsafe { result::mem_pool::set_attribute(pool, attr, as_ptr(&mut zero)) };
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use candle_core::Device;

    use super::GpuMemory;

    pub(super) fn open(ordinal: usize) -> candle_core::Result<Device> {
        Device::new_cuda(ordinal)
    }

    pub(super) fn memory(_: &Device) -> Option<GpuMemory> {
        None
    }

    pub(super) fn reset_peak(_: &Device) {}
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

    #[test]
    fn the_cpu_has_no_gpu_memory() {
        assert_eq!(gpu_memory(&Device::Cpu), None);
        GpuMemory::reset_peak(&Device::Cpu);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let err = device("cuda:1").unwrap_err().to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
