//! Checkpoints holding NaN are refused wherever cxr-train reads one: `predict --checkpoint`,
//! `fit --init checkpoint:`, and a resume whose optimiser moments went NaN. Nothing is written.

mod train_fixture;

use train_fixture::cxr_train;

use cxr_train::checkpoint;
use cxr_train::trainer::fit;
use std::path::Path;
use std::process::Output;

/// Sets the first `count` values of the f32 tensor `name` in the safetensors file at `path` to
/// NaN, in place, as a damaged file or a diverged run would have them (metadata unchanged).
fn poison(path: &Path, name: &str, count: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let info = &header[name];
    assert_eq!(info["dtype"], "F32", "{name} in {header}");
    let start = 8 + len + info["data_offsets"][0].as_u64().unwrap() as usize;
    for k in 0..count {
        bytes[start + 4 * k..start + 4 * k + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn assert_refused(out: &Output, file: &Path, tensor: &str, count: usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{stderr}");
    for expected in [
        file.display().to_string(),
        format!("{tensor}: {count} of "),
        format!("({count} NaN)"),
    ] {
        assert!(stderr.contains(&expected), "no `{expected}` in\n{stderr}");
    }
}

#[test]
fn nan_weights_are_refused_by_predict_init_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 16);
    let run = dir.path().join("run");
    let config = train_fixture::config(&manifest, &shards, &run);
    // Two of six steps: a checkpoint and resume state to damage.
    fit(&config, &train_fixture::fit_options(false, Some(2))).unwrap();
    let (manifest, shards) = (manifest.to_str().unwrap(), shards.to_str().unwrap());

    // predict: the whole first convolution NaN (before: the same scores for every image).
    let damaged = dir.path().join("damaged.safetensors");
    std::fs::copy(run.join(checkpoint::LAST_MODEL), &damaged).unwrap();
    poison(&damaged, "features.conv0.weight", 8);
    let out_file = dir.path().join("predictions.parquet");
    let out = cxr_train(&[
        "predict",
        "--checkpoint",
        damaged.to_str().unwrap(),
        "--manifest",
        manifest,
        "--shards",
        shards,
        "--split",
        "test",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_refused(&out, &damaged, "features.conv0.weight", 8);
    assert!(!out_file.exists());

    // fit --init checkpoint: refused before the run directory is made.
    let new_run = dir.path().join("from-damaged");
    let init = format!("checkpoint:{}", damaged.display());
    let out = cxr_train(&[
        "fit",
        "--manifest",
        manifest,
        "--shards",
        shards,
        "--run-dir",
        new_run.to_str().unwrap(),
        "--arch",
        "resnet18",
        "--task",
        "view",
        "--init",
        &init,
    ]);
    assert_refused(&out, &damaged, "features.conv0.weight", 8);
    assert!(!new_run.exists());

    // --resume with an Adam moment gone NaN: refused, naming the optimiser state file.
    let state = checkpoint::read_state(&run).unwrap().unwrap();
    let optim = run.join(&state.resume_dir).join("optim.safetensors");
    poison(&optim, "second.0", 3);
    let err = format!(
        "{:#}",
        fit(&config, &train_fixture::fit_options(true, None)).unwrap_err()
    );
    for expected in [
        optim.display().to_string(),
        "second.0: 3 of ".to_string(),
        "(3 NaN)".to_string(),
    ] {
        assert!(err.contains(&expected), "no `{expected}` in\n{err}");
    }
    // The run is where it was: nothing trained on from the damaged state.
    assert_eq!(checkpoint::read_state(&run).unwrap().unwrap(), state);
}
