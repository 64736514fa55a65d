//! The command line's global options, through the binary.

use std::process::{Command, Output};

fn cxr_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxr-train"))
        .args(args)
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("CANDLE_NUM_THREADS")
        .output()
        .unwrap()
}

const TINY_BENCH: [&str; 12] = [
    "bench", "--model", "resnet18", "--size", "32", "--batch", "2", "--steps", "1", "--warmup",
    "0", "--json",
];

/// `--threads` sizes the pool the kernels run on, given before or after the subcommand.
#[test]
fn threads_size_the_pool() {
    let before = [&["--threads", "1"][..], &TINY_BENCH].concat();
    let after = [&TINY_BENCH[..], &["--threads", "1"]].concat();
    for args in [before, after] {
        let out = cxr_train(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["threads"], 1, "{args:?}");
    }
}

#[test]
fn bad_threads_and_devices_say_what_to_give() {
    let out = cxr_train(&["--threads", "0", "bench", "--model", "resnet18"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads 0: give at least 1"));

    let out = cxr_train(&["bench", "--model", "resnet18", "--device", "gpu"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("device `gpu`: use cpu, cuda or cuda:N"),
        "{stderr}"
    );
}

/// `gpu-check` rehearsed on the CPU: candle's own ops (the CUDA path) against the kernels, a
/// table per model, exit 0 when everything judged agrees.
#[test]
fn gpu_check_rehearses_on_the_cpu() {
    let out = cxr_train(&[
        "gpu-check",
        "--device",
        "cpu",
        "--models",
        "tiny_densenet,tiny_resnet_basic",
        "--steps",
        "2",
        "--size",
        "32",
        "--batch",
        "4",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "the CPU on candle's own ops (the CUDA path) against the CPU kernels in f32",
        "tiny_densenet 32x32 batch 4",
        "tiny_resnet_basic 32x32 batch 4",
        "gpu-check: all 2 models agree",
    ] {
        assert!(stdout.contains(expected), "no `{expected}` in\n{stdout}");
    }
    // Two steps of four quantities each, and the eval forward, per model.
    let judged = stdout.lines().filter(|l| l.contains(" yes ")).count();
    assert_eq!(judged, 2 * (2 * 4 + 1), "{stdout}");
}

#[test]
fn gpu_check_names_what_it_cannot_check() {
    let out = cxr_train(&["gpu-check", "--device", "cpu", "--models", "vgg16"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vgg16"), "{stderr}");
    let out = cxr_train(&["gpu-check", "--device", "cpu", "--batch", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a batch of 2"));
}

/// bf16 runs on CUDA; on the CPU every command that takes it refuses it with what to do.
#[test]
fn bf16_on_the_cpu_is_refused_with_a_way_out() {
    let args = [&TINY_BENCH[..], &["--precision", "bf16"]].concat();
    let out = cxr_train(&args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bf16 runs on CUDA"), "{stderr}");
    assert!(stderr.contains("--precision f32"), "{stderr}");
    let out = cxr_train(&[&TINY_BENCH[..], &["--precision", "fp16"]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use f32 or bf16"));
}
