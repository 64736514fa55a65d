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
