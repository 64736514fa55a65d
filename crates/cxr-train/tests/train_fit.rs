//! End-to-end fits on the tiny synthetic dataset: reproducibility, resume equality, NaN stop,
//! run-directory safeguards, and predictions cxr-eval can read.

mod train_fixture;

use candle_core::Device;
use cxr_core::predictions::Predictions;
use cxr_core::runlog::{self, Phase};
use cxr_core::Split;
use cxr_train::checkpoint::Keep;
use cxr_train::config::{OptimizerConfig, ScheduleConfig, Task};
use cxr_train::predict::{self, PredictOptions};
use cxr_train::trainer::{fit, FitOptions};
use std::path::Path;

/// CPU, no progress bar, everything kept: these tests compare last models and resume states.
use train_fixture::fit_options as options;

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut tensors: Vec<_> = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

/// Metric records without the wall-clock throughput and data wait.
fn metrics(run: &Path) -> Vec<String> {
    runlog::read(&run.join(runlog::FILE_NAME))
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.images_per_s = None;
            r.data_wait = None;
            serde_json::to_string(&r).unwrap()
        })
        .collect()
}

#[test]
fn same_seed_same_numbers_and_resume_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 16);
    let run_a = dir.path().join("a");
    let run_b = dir.path().join("b");
    let run_c = dir.path().join("c");
    let mut config = train_fixture::config(&manifest, &shards, &run_a);
    config.aux = cxr_train::config::parse_aux("sex=0.5,age=0.5").unwrap();
    // 24 training images, batch 8: 3 steps per epoch, 6 in all; validation at 3 and 6.
    let a = fit(&config, &options(false, None)).unwrap();
    assert_eq!((a.steps, a.total_steps), (6, 6));
    config.run_dir = run_b.clone();
    fit(&config, &options(false, None)).unwrap();
    assert_eq!(metrics(&run_a), metrics(&run_b));
    assert_eq!(
        weights(&run_a.join("last.safetensors")),
        weights(&run_b.join("last.safetensors"))
    );
    let records = runlog::read(&run_a.join(runlog::FILE_NAME)).unwrap();
    for r in records.iter().filter(|r| r.phase == Phase::Train) {
        let wait = r
            .data_wait
            .expect("training records say how long they waited for data");
        assert!((0.0..=1.0).contains(&wait), "{r:?}");
    }
    let valid: Vec<_> = records.iter().filter(|r| r.phase == Phase::Valid).collect();
    assert_eq!(valid.len(), 2);
    let auc = valid[0].auc.as_ref().unwrap();
    assert!(
        auc.contains_key("view") && auc.contains_key("sex") && !auc.contains_key("age"),
        "{auc:?}"
    );
    for name in [
        "config.json",
        "best.safetensors",
        "best.json",
        "last.state.json",
        "valid_predictions.parquet",
    ] {
        assert!(run_a.join(name).exists(), "{name} missing");
    }
    // config.json keeps the row subset's fields at the top level, as written before they were
    // grouped, so older runs still resume.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_a.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["train_split"], "train");
    assert_eq!(saved["frontal_only"], false);
    assert!(saved.get("subset").is_none(), "{saved}");
    let preds = Predictions::read(&run_a.join("valid_predictions.parquet")).unwrap();
    assert_eq!(preds.tasks, ["view", "sex", "age"]);
    assert_eq!(preds.len(), 8);

    // Stopped mid-epoch after 4 steps (a checkpoint is written at the stop), then resumed.
    config.run_dir = run_c.clone();
    let stopped = fit(&config, &options(false, Some(4))).unwrap();
    assert_eq!(stopped.steps, 4);
    assert!(!run_c.join("valid_predictions.parquet").exists());
    let resumed = fit(&config, &options(true, None)).unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(
        weights(&run_a.join("last.safetensors")),
        weights(&run_c.join("last.safetensors"))
    );
    assert_eq!(metrics(&run_a), metrics(&run_c));
    assert_eq!(
        std::fs::read_dir(run_c.join("resume")).unwrap().count(),
        1,
        "old resume states are removed"
    );

    // A run directory in use is never overwritten, and a resume with other settings is refused:
    // each with its own message (both name --resume; "already" holds "lr").
    let err = fit(&config, &options(false, None)).unwrap_err().to_string();
    assert!(
        err.contains("already holds a run: pass --resume to continue it"),
        "{err}"
    );
    config.lr = 0.5;
    let err = fit(&config, &options(true, None)).unwrap_err().to_string();
    let config_json = run_c.join("config.json");
    let differ = format!(
        "--resume with settings that differ from {} (lr)",
        config_json.display()
    );
    assert!(err.contains(&differ), "{err}");

    // Predictions for the test split, in the form cxr-eval reads.
    let out = dir.path().join("test.parquet");
    let n = predict::run(&PredictOptions {
        checkpoint: &run_a.join("best.safetensors"),
        shards: &shards,
        manifest: &manifest,
        split: Split::Test,
        frontal_only: false,
        out: &out,
        batch_size: 16,
        chunk_images: 2048,
        device: Device::Cpu,
        precision: Default::default(),
    })
    .unwrap();
    assert_eq!(n, 8);
    let preds = Predictions::read(&out).unwrap();
    assert_eq!(preds.image_ids[0], "00001.png");
    assert!(preds
        .task("view")
        .unwrap()
        .iter()
        .all(|p| (0.0..=1.0).contains(p)));
    assert!(preds.task("age").unwrap().iter().all(|p| p.is_finite()));
}

#[test]
fn a_finished_run_keeps_its_best_model_and_a_rerun_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 16);
    let run = dir.path().join("run");
    let config = train_fixture::config(&manifest, &shards, &run);
    let keep_best = FitOptions {
        keep: Keep::Best,
        ..options(false, None)
    };
    // Stopped before the end, the run keeps what a resume needs.
    fit(
        &config,
        &FitOptions {
            max_steps: Some(4),
            ..keep_best.clone()
        },
    )
    .unwrap();
    assert!(run.join("resume").exists() && run.join("last.safetensors").exists());
    let done = fit(
        &config,
        &FitOptions {
            resume: true,
            ..keep_best.clone()
        },
    )
    .unwrap();
    assert_eq!(done.steps, 6);
    let mut left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "best.json",
            "best.safetensors",
            "config.json",
            "last.state.json",
            "metrics.jsonl",
            "valid_predictions.parquet"
        ]
    );
    let state = cxr_train::checkpoint::read_state(&run).unwrap().unwrap();
    assert!(state.finished && state.step == 6, "{state:?}");
    // Resumed again (as a run store does), the finished run is left as it is.
    let best = weights(&run.join("best.safetensors"));
    let log = metrics(&run);
    let again = fit(
        &config,
        &FitOptions {
            resume: true,
            ..keep_best
        },
    )
    .unwrap();
    assert_eq!((again.steps, again.best), (6, done.best));
    assert_eq!(weights(&run.join("best.safetensors")), best);
    assert_eq!(metrics(&run), log);
}

#[test]
fn a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 40);
    let run = dir.path().join("run");
    let mut config = train_fixture::config(&manifest, &shards, &run);
    config.task = Task::Age;
    config.optimizer = OptimizerConfig::Sgd {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    // Steps 1-2 at lr 1e-3 (checkpoint at step 2), then 1e27, then 1e57 (infinite in f32).
    config.schedule = ScheduleConfig::Step {
        every: 2,
        gamma: 1e30,
    };
    config.clip_grad_norm = None;
    config.eval_every = 2;
    config.epochs = 20;
    let err = fit(&config, &options(false, None)).unwrap_err().to_string();
    assert!(err.contains("loss became") && err.contains("--lr"), "{err}");
    assert!(err.contains("last good checkpoint (step"), "{err}");
    let state = cxr_train::checkpoint::read_state(&run).unwrap().unwrap();
    assert!(run
        .join(&state.resume_dir)
        .join("model.safetensors")
        .exists());
}

#[test]
fn an_unwritable_run_directory_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 40);
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let config = train_fixture::config(&manifest, &shards, &blocker.join("run"));
    let err = format!("{:#}", fit(&config, &options(false, None)).unwrap_err());
    assert!(
        err.contains("run directory") && err.contains("--run-dir"),
        "{err}"
    );
}

/// `--run-store`: two experiments asking for the same run share one trained run, each with its
/// run directory a link to it; a changed setting is a new run; a real directory in the way is
/// refused untouched.
#[test]
fn a_run_store_trains_a_shared_run_once() {
    use cxr_train::store;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 16);
    let store_dir = dir.path().join("out/run-store");
    let first = dir.path().join("out/policy/runs/u-ignore__s0");
    let second = dir.path().join("out/aux/runs/no-aux__s0");
    let mut config = train_fixture::config(&manifest, &shards, &first);
    let a = store::fit(&config, &options(false, None), &store_dir).unwrap();
    assert_eq!((a.steps, a.run_dir.as_path()), (6, first.as_path()));
    let stored = store_dir.join(store::run_key(&config));
    let predictions = stored.join("valid_predictions.parquet");
    let written = std::fs::metadata(&predictions).unwrap().modified().unwrap();
    let trained = metrics(&stored);

    config.run_dir = second.clone();
    assert_eq!(
        store::run_key(&config),
        stored.file_name().unwrap().to_str().unwrap()
    );
    let b = store::fit(&config, &options(false, None), &store_dir).unwrap();
    assert_eq!(b.steps, 6);
    for run in [&first, &second] {
        let target = std::fs::read_link(run).unwrap();
        assert!(target.is_relative(), "{target:?}");
        assert_eq!(
            std::fs::canonicalize(run).unwrap(),
            stored.canonicalize().unwrap()
        );
    }
    assert_eq!(metrics(&stored), trained, "trained once, not twice");
    let modified = std::fs::metadata(&predictions).unwrap().modified().unwrap();
    assert_eq!(modified, written, "a finished run is not redone");

    config.seed = 1;
    store::fit(&config, &options(false, Some(1)), &store_dir).unwrap();
    let runs = std::fs::read_dir(&store_dir).unwrap().flatten();
    let dirs = runs.filter(|e| e.path().is_dir()).count();
    assert_eq!(dirs, 2, "another seed is another run");
    assert_ne!(
        std::fs::canonicalize(&second).unwrap(),
        stored.canonicalize().unwrap(),
        "the link follows the settings"
    );

    let own = dir.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("notes.txt"), "mine").unwrap();
    config.run_dir = own.clone();
    let err = store::fit(&config, &options(false, None), &store_dir).unwrap_err();
    assert!(
        format!("{err:#}").contains("nothing was overwritten"),
        "{err:#}"
    );
    assert_eq!(
        std::fs::read_to_string(own.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// bf16 is a setting of the run (its numbers differ), so a bf16 run is another run in a store;
/// f32 is written nowhere, so configurations and store keys from before bf16 existed stay as
/// they were.
#[test]
fn precision_is_part_of_a_run_only_when_it_is_bf16() {
    use cxr_models::Precision;
    use cxr_train::store::run_key;
    let dir = Path::new("/data");
    let config = train_fixture::config(&dir.join("m.parquet"), &dir.join("s"), &dir.join("r"));
    let json = serde_json::to_value(&config).unwrap();
    assert!(json.get("precision").is_none(), "{json}");
    let read: cxr_train::config::TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(read.precision, Precision::F32);
    let bf16 = cxr_train::config::TrainConfig {
        precision: Precision::Bf16,
        ..config.clone()
    };
    assert_eq!(serde_json::to_value(&bf16).unwrap()["precision"], "bf16");
    assert_ne!(run_key(&bf16), run_key(&config));
}

/// A U-Ones run is selected on the labels a U-Ignore run is selected on: the validation AUC
/// that chose its checkpoint counts uncertain Atelectasis as unknown, not as positive.
#[test]
fn checkpoints_are_selected_on_u_ignore_labels_whatever_the_training_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 60, 32);
    let run = dir.path().join("run");
    let mut config = train_fixture::config(&manifest, &shards, &run);
    config.task = Task::Pathologies;
    config.pathologies = vec!["Atelectasis".into(), "Cardiomegaly".into()];
    config.policy = "u-ones".into();
    fit(&config, &options(false, None)).unwrap();

    let best: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("best.json")).unwrap()).unwrap();
    let selected = best["auc"]["Atelectasis"].as_f64().unwrap();
    // The best model's validation predictions, scored two ways.
    let preds = Predictions::read(&run.join("valid_predictions.parquet")).unwrap();
    let scores = preds.task("Atelectasis").unwrap();
    let m = cxr_core::Manifest::read(&manifest).unwrap();
    let state = |id: &str| {
        let row = m.rows.iter().find(|r| r.image_id == id).unwrap();
        row.label(cxr_core::Observation::parse("Atelectasis").unwrap())
    };
    let labels = |uncertain: Option<bool>| -> Vec<Option<bool>> {
        preds
            .image_ids
            .iter()
            .map(|id| match state(id) {
                cxr_core::LabelState::Positive => Some(true),
                cxr_core::LabelState::Uncertain => uncertain,
                _ => Some(false),
            })
            .collect()
    };
    let auc = |uncertain| cxr_core::auc::roc_auc_known(&labels(uncertain), scores).unwrap();
    let (u_ignore, u_ones) = (auc(None), auc(Some(true)));
    assert!(
        (u_ignore - u_ones).abs() > 1e-3,
        "the fixture must tell them apart"
    );
    assert!(
        (selected - u_ignore).abs() < 1e-9,
        "{selected} vs U-Ignore {u_ignore}, U-Ones {u_ones}"
    );
}

/// `cxr-train predict` killed with SIGKILL part-way keeps the chunks it finished in
/// `OUT.partial/`; the re-run scores only the rest, says so, and writes the predictions file an
/// uninterrupted run writes, byte for byte, and removes the partial directory.
#[test]
fn a_killed_predict_resumes_from_its_finished_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 2000, 500);
    let run = dir.path().join("run");
    let mut config = train_fixture::config(&manifest, &shards, &run);
    (config.epochs, config.batch_size) = (1, 64);
    fit(&config, &options(false, None)).unwrap();
    let args = |out: &Path| -> Vec<String> {
        let paths = [
            run.join("best.safetensors"),
            shards.clone(),
            manifest.clone(),
        ];
        let [checkpoint, shards, manifest] = paths.map(|p| p.to_str().unwrap().to_string());
        [
            "predict",
            "--checkpoint",
            &checkpoint,
            "--shards",
            &shards,
            "--manifest",
            &manifest,
            "--batch-size",
            "4",
            "--chunk",
            "8",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = dir.path().join("whole.parquet");
    let out =
        train_fixture::cxr_train(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 400 test images in 50 chunks; kill once three are on disk (again if the run was faster).
    let killed = dir.path().join("killed.parquet");
    let partial = dir.path().join("killed.parquet.partial");
    let stopped_with = (0..5)
        .find_map(|_| {
            let _ = std::fs::remove_dir_all(&partial);
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cxr-train"))
                .args(["--threads", "1"])
                .args(args(&killed))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            while !partial.join("chunk-00002.f32").exists() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            let chunks = std::fs::read_dir(&partial).ok()?.count() - 1;
            (!killed.exists() && chunks < 50).then_some(chunks)
        })
        .expect("predict was killed before it finished");
    assert!(stopped_with >= 3, "{stopped_with} chunks kept");

    let out =
        train_fixture::cxr_train(&args(&killed).iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let resumed = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resumed: "))
        .unwrap_or_else(|| panic!("no resume reported: {stderr}"));
    let reused: usize = resumed.split(' ').next().unwrap().parse().unwrap();
    assert!(reused >= 3 && resumed.contains("of 50 chunks"), "{resumed}");
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&killed).unwrap()
    );
    assert!(!partial.exists(), "the partial directory is removed");
}
