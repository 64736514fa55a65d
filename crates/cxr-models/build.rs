//! With the `cuda` feature, compiles `src/cuda/batchnorm.cu` to PTX for `include_str!` (see
//! `src/batchnorm_cuda.rs`), with the nvcc that candle-kernels builds with (`NVCC`, else `nvcc`
//! on the PATH; `make cuda` installs one from PyPI). Without the feature it does nothing, so the
//! CPU build needs no CUDA at all.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/cuda/batchnorm.cu";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-changed={SOURCE}");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let ptx = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("batchnorm.ptx");
    // compute_75 PTX: the oldest architecture CUDA 13 compiles for; the driver compiles it for
    // the GPU it runs on (Hopper included) when the module is loaded.
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-arch=compute_75", "-o"])
        .arg(&ptx)
        .arg(SOURCE)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {nvcc} for {SOURCE} ({e}): set NVCC, or build with `make cuda`")
        });
    assert!(status.success(), "{nvcc} failed on {SOURCE}");
}
