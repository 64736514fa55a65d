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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value '0' for '--threads <N>': must be a whole number >= 1"),
        "{stderr}"
    );

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

/// Errors meant for users: `cxr-train: error: ...` and exit status 1, each cause once, never a
/// backtrace, whatever RUST_BACKTRACE says (`fn main() -> Result` printed anyhow's Debug form:
/// "Error: ...", "Caused by:" and a stack backtrace).
#[test]
fn errors_print_no_backtrace_and_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    for backtrace in ["1", "full"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cxr-train"))
            .current_dir(dir.path())
            .args(["fit", "--manifest", "absent.parquet", "--shards", "shards"])
            .args(["--run-dir", "run"])
            .env("RUST_BACKTRACE", backtrace)
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.starts_with("cxr-train: error: "), "{text}");
        assert!(text.contains("absent.parquet"), "{text}");
        assert!(!text.to_lowercase().contains("backtrace"), "{text}");
        assert!(!text.contains("Caused by"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
    }
}

/// `predict --manifest m.parquet --out m.parquet` replaced the manifest with predictions (and
/// `--out` the checkpoint, 44 MB with 2 KB), exit 0; `fit --init checkpoint:run/best.safetensors
/// --run-dir run` overwrote its own starting weights. Outputs that are inputs, by any path, are
/// refused before any work (the inputs here are not even valid files) and left as they were.
#[test]
fn outputs_that_are_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::create_dir_all(dir.path().join("shards")).unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    for (name, bytes) in [
        ("m.parquet", "manifest"),
        ("c.safetensors", "checkpoint"),
        ("run/best.safetensors", "weights"),
    ] {
        std::fs::write(path(name), bytes).unwrap();
    }
    std::fs::hard_link(path("m.parquet"), path("hard.parquet")).unwrap();
    let (m, c, shards) = (path("m.parquet"), path("c.safetensors"), path("shards"));
    let predict = |out: &str| {
        let args = [
            "predict",
            "--checkpoint",
            &c,
            "--shards",
            &shards,
            "--manifest",
            &m,
        ];
        cxr_train(&[&args[..], &["--out", out]].concat())
    };
    let refused = |out: Output, expected: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("refusing to overwrite it"), "{stderr}");
    };
    refused(
        predict(&m),
        &format!("--out {m} is also an input (--manifest {m})"),
    );
    refused(
        predict(&c),
        &format!("--out {c} is also an input (--checkpoint {c})"),
    );
    refused(
        predict(&path("hard.parquet")),
        "is the same file as an input (--manifest",
    );
    refused(
        predict(&format!("{shards}/index.json")),
        "is also an input (the --shards index",
    );

    let init = format!("checkpoint:{}", path("run/best.safetensors"));
    let run = path("run");
    let fit = [
        "fit",
        "--manifest",
        &m,
        "--shards",
        &shards,
        "--run-dir",
        &run,
    ];
    refused(
        cxr_train(&[&fit[..], &["--init", &init]].concat()),
        &format!(
            "--run-dir {run} would write {run}/best.safetensors, which is an input (--init \
             {run}/best.safetensors)"
        ),
    );
    let pretrain = [
        "pretrain",
        "--manifest",
        &m,
        "--shards",
        &shards,
        "--run-dir",
        &shards,
    ];
    refused(cxr_train(&pretrain), "is also an input (--shards");

    for (name, bytes) in [
        ("m.parquet", "manifest"),
        ("c.safetensors", "checkpoint"),
        ("run/best.safetensors", "weights"),
    ] {
        assert_eq!(
            std::fs::read_to_string(path(name)).unwrap(),
            bytes,
            "{name}"
        );
    }
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(&shards).unwrap().count(), 0);
}
