//! Numeric options out of range are refused as the command line is parsed, naming the option,
//! the value and the range, before anything is read or written.

mod train_fixture;

use train_fixture::cxr_train;

use std::path::Path;

/// `args` fail with `expected` in the message, and `untouched` was not created.
fn assert_refused(args: &[&str], expected: &str, untouched: &Path) {
    let out = cxr_train(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} accepted:\n{stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: no `{expected}` in\n{stderr}"
    );
    assert!(
        !untouched.exists(),
        "{args:?} wrote {}",
        untouched.display()
    );
}

/// A fit that would otherwise start training on a real (tiny) dataset: each out-of-range option
/// stops it before the run directory exists.
#[test]
fn fit_refuses_out_of_range_options_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 16);
    let run = dir.path().join("run");
    let base = [
        "fit",
        "--manifest",
        manifest.to_str().unwrap(),
        "--shards",
        shards.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
        "--arch",
        "resnet18",
        "--task",
        "view",
    ];
    // Small, unless a case gives its own.
    let small = [
        ("--batch-size", "8"),
        ("--epochs", "1"),
        ("--max-steps", "1"),
    ];
    // Clap's message: invalid value '<VALUE>' for '<OPTION>': must be <RANGE>.
    let invalid = |value: &str, option: &str, range: &str| {
        format!("invalid value '{value}' for '{option}': must be {range}")
    };
    let positive = "a finite number > 0";
    let cases: [(&[&str], String); 21] = [
        (&["--lr=-0.001"], invalid("-0.001", "--lr <LR>", positive)),
        (&["--lr", "NaN"], invalid("NaN", "--lr <LR>", positive)),
        (&["--lr", "inf"], invalid("inf", "--lr <LR>", positive)),
        (&["--lr", "0"], invalid("0", "--lr <LR>", positive)),
        (
            &["--weight-decay=-1"],
            invalid(
                "-1",
                "--weight-decay <WEIGHT_DECAY>",
                "a finite number >= 0",
            ),
        ),
        (
            &["--batch-size", "0"],
            invalid("0", "--batch-size <BATCH_SIZE>", "a whole number >= 1"),
        ),
        (
            &["--epochs", "0"],
            invalid("0", "--epochs <EPOCHS>", "a whole number >= 1"),
        ),
        (
            &["--beta2", "1"],
            invalid("1", "--beta2 <BETA2>", "a finite number in [0, 1)"),
        ),
        (&["--eps", "0"], invalid("0", "--eps <EPS>", positive)),
        (
            &["--optimizer", "sgd", "--momentum", "1.5"],
            invalid("1.5", "--momentum <MOMENTUM>", "a finite number in [0, 1)"),
        ),
        (
            &["--clip-grad=-5"],
            invalid("-5", "--clip-grad <CLIP_GRAD>", positive),
        ),
        (
            &["--rotate", "720"],
            invalid("720", "--rotate <ROTATE>", "a finite number in [0, 180]"),
        ),
        (
            &["--brightness", "1.5"],
            invalid(
                "1.5",
                "--brightness <BRIGHTNESS>",
                "a finite number in [0, 1]",
            ),
        ),
        (
            &["--mean", "0.5", "--std", "0"],
            invalid("0", "--std <STD>", positive),
        ),
        (
            &["--log-every", "0"],
            invalid("0", "--log-every <LOG_EVERY>", "a whole number >= 1"),
        ),
        (
            &["--schedule", "step", "--gamma", "2"],
            invalid("2", "--gamma <GAMMA>", "a finite number in (0, 1]"),
        ),
        (
            &["--loss", "aucm", "--optimizer", "pesg", "--margin=-1"],
            invalid("-1", "--margin <MARGIN>", positive),
        ),
        (
            &["--max-steps", "0"],
            invalid("0", "--max-steps <MAX_STEPS>", "a whole number >= 1"),
        ),
        // Rules between options, and in option lists, before any work too.
        (
            &["--freeze-epochs", "2"],
            "--freeze-epochs 2 is more than --epochs 1".into(),
        ),
        (
            &["--schedule", "cosine", "--lr", "1e-4", "--min-lr", "1e-3"],
            "--min-lr 0.001 is above --lr 0.0001".into(),
        ),
        (
            &["--aux", "sex=-0.1"],
            "--aux sex=-0.1: the weight must be a finite number > 0".into(),
        ),
    ];
    for (extra, expected) in cases {
        let mut args = [&base[..], extra].concat();
        for (option, value) in small {
            if !extra.iter().any(|a| a.starts_with(option)) {
                args.extend([option, value]);
            }
        }
        assert_refused(&args, &expected, &run);
    }
}

#[test]
fn other_commands_refuse_out_of_range_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_str = out.to_str().unwrap();
    let predict = [
        "predict",
        "--checkpoint",
        "absent.safetensors",
        "--manifest",
        "absent.parquet",
        "--shards",
        "absent",
        "--out",
        out_str,
    ];
    let pretrain = [
        "pretrain",
        "--manifest",
        "absent.parquet",
        "--shards",
        "absent",
        "--run-dir",
        out_str,
    ];
    let cases: [(Vec<&str>, &str); 7] = [
        (
            [&predict[..], &["--batch-size", "0"]].concat(),
            "invalid value '0' for '--batch-size <BATCH_SIZE>': must be a whole number >= 1",
        ),
        (
            [&pretrain[..], &["--lambda=-1"]].concat(),
            "invalid value '-1' for '--lambda <LAMBDA>': must be a finite number >= 0",
        ),
        (
            [&pretrain[..], &["--projector", "256,0"]].concat(),
            "invalid value '0' for '--projector <PROJECTOR>': must be a whole number >= 1",
        ),
        (
            [&pretrain[..], &["--lr", "nan"]].concat(),
            "invalid value 'nan' for '--lr <LR>': must be a finite number > 0",
        ),
        (
            [&pretrain[..], &["--in-channels", "2"]].concat(),
            "invalid value '2' for '--in-channels <IN_CHANNELS>': must be 1 (grey) or 3",
        ),
        (
            vec!["bench", "--model", "resnet18", "--batch", "0"],
            "invalid value '0' for '--batch <BATCH>': must be a whole number >= 1",
        ),
        (
            vec!["gpu-check", "--device", "cpu", "--lr=-0.01"],
            "invalid value '-0.01' for '--lr <LR>': must be a finite number > 0",
        ),
    ];
    for (args, expected) in cases {
        assert_refused(&args, expected, &out);
    }
}
