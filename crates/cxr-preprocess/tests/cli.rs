//! The binary as users and cluster jobs run it: resuming after `kill -9`, array tasks, bad images,
//! refused paths, reproducible bytes.

mod common;

use common::{fixture, nih_full, nih_pngs, write_manifest};
use cxr_core::hash::sha256_hex;
use cxr_core::shard::{info_file, ShardInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const FIXTURES: [&str; 3] = [
    "nih-00000442-progressive.jpg",
    "nih-00001511-colour-progressive.jpg",
    "nih-00001511-colour-restarts.jpg",
];

/// 40 NIH PNGs (6 RGBA) and 3 JPEGs in a scratch image root, with a manifest.
struct Job {
    dir: TempDir,
}

impl Job {
    fn new(extra: &[(&str, &[u8])], paths: Option<Vec<String>>) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        std::fs::create_dir(&root).unwrap();
        let mut names = nih_pngs();
        for name in &names {
            std::fs::copy(nih_full().join(name), root.join(name)).unwrap();
        }
        for name in FIXTURES {
            let from = fixture(name);
            std::fs::copy(from, root.join(name)).unwrap();
            names.push(name.to_string());
        }
        for (name, bytes) in extra {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        write_manifest(&dir.path().join("m.parquet"), &paths.unwrap_or(names));
        Job { dir }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, out: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxr-preprocess"));
        cmd.arg("--manifest")
            .arg(self.dir.path().join("m.parquet"))
            .arg("--root")
            .arg(self.dir.path().join("images"))
            .arg("--out")
            .arg(self.out(out))
            .args(extra);
        // Defaults of the standard job unless the test sets them.
        for (flag, value) in [("--size", "32"), ("--shard-rows", "2")] {
            if !extra.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("SLURM_ARRAY_TASK_MIN")
            .env_remove("SLURM_ARRAY_TASK_COUNT");
        cmd
    }

    fn run(&self, out: &str, extra: &[&str]) -> Output {
        self.command(out, extra).output().unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeds(output: Output) -> String {
    let text = stderr(&output);
    assert!(
        output.status.success(),
        "exit {:?}: {text}",
        output.status.code()
    );
    text
}

/// Every visible file of an output directory, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn assert_same(dir: &Path, expected: &BTreeMap<String, Vec<u8>>) {
    let found = files(dir);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in expected {
        assert!(
            found[name] == *bytes,
            "{name} differs from the uninterrupted run"
        );
    }
    assert!(
        temp_files(dir).is_empty(),
        "temporary files left: {:?}",
        temp_files(dir)
    );
}

/// One uninterrupted run of the standard job, shared by the tests that compare against it.
fn reference() -> &'static (Job, BTreeMap<String, Vec<u8>>) {
    static REFERENCE: OnceLock<(Job, BTreeMap<String, Vec<u8>>)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let job = Job::new(&[], None);
        let text = succeeds(job.run("single", &[]));
        assert!(text.contains("43 images written in 22 shards"), "{text}");
        let files = files(&job.out("single"));
        assert!(files.contains_key("index.json") && files.contains_key("errors.csv"));
        (job, files)
    })
}

#[test]
fn the_same_job_in_another_process_gives_the_same_bytes() {
    let (job, expected) = reference();
    succeeds(job.run("again", &["--jobs", "1"]));
    assert_same(&job.out("again"), expected);
    assert_eq!(expected["errors.csv"], b"row,path,reason\n");
}

#[test]
fn array_tasks_together_equal_a_single_run() {
    let (job, expected) = reference();
    let text = succeeds(job.run("array", &["--shard-index", "0", "--num-shards", "3"]));
    assert!(
        text.contains("task 0 of 3") && text.contains("still to make"),
        "{text}"
    );
    assert!(!job.out("array").join("index.json").exists());
    // Task 2 from a Slurm array's environment (ids 5..=7 here).
    let output = job
        .command("array", &[])
        .env("SLURM_ARRAY_TASK_ID", "7")
        .env("SLURM_ARRAY_TASK_MIN", "5")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    assert!(succeeds(output).contains("task 2 of 3"));
    let text = succeeds(job.run("array", &["--shard-index", "1", "--num-shards", "3"]));
    assert!(
        text.contains("wrote") && text.contains("index.json"),
        "{text}"
    );
    assert_same(&job.out("array"), expected);
}

/// Kill the run once `sidecars` shards are done.
fn kill_after(job: &Job, out: &str, sidecars: usize) {
    let mut child = job
        .command(out, &["--jobs", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = job.out(out);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..22).filter(|&k| dir.join(info_file(k)).exists()).count() < sidecars {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_killed_run_resumes_to_the_same_bytes() {
    let (job, expected) = reference();
    let dir = job.out("killed");
    kill_after(job, "killed", 3);
    kill_after(job, "killed", 9);
    // Whatever a kill left must be whole: every shard with a sidecar matches its checksum.
    let done: Vec<ShardInfo> = (0..22)
        .filter_map(|k| ShardInfo::read_done(&dir, k))
        .collect();
    assert!((9..22).contains(&done.len()), "{} shards done", done.len());
    for info in &done {
        assert_eq!(
            sha256_hex(&std::fs::read(dir.join(&info.file)).unwrap()),
            info.sha256
        );
    }
    assert!(!dir.join("index.json").exists());
    let text = succeeds(job.run("killed", &[]));
    assert!(text.contains(&format!("({} shards)", done.len())), "{text}");
    assert_same(&dir, expected);
}

#[test]
fn bad_images_are_reported_and_left_out_and_fail_the_exit_status() {
    let png = std::fs::read(nih_full().join("00000442_000.png")).unwrap();
    let jpeg = std::fs::read(fixture(FIXTURES[2])).unwrap();
    let progressive = std::fs::read(fixture(FIXTURES[0])).unwrap();
    let mut corrupt = png[..100].to_vec();
    corrupt.extend(std::iter::repeat_n(0x5A, 5000));
    let extra: [(&str, &[u8]); 6] = [
        ("corrupt.png", &corrupt),
        ("truncated.png", &png[..png.len() / 2]),
        ("truncated.jpg", &jpeg[..jpeg.len() / 2]),
        (
            "truncated-progressive.jpg",
            &progressive[..progressive.len() / 2],
        ),
        ("empty.png", b""),
        ("notes.png", b"these are not pixels\n"),
    ];
    let mut paths: Vec<String> = extra.iter().map(|(n, _)| n.to_string()).collect();
    paths.insert(3, "00000442_000.png".into());
    paths.push("missing.png".into());
    paths.push(FIXTURES[2].into());
    let job = Job::new(&extra, Some(paths));
    let output = job.run("bad", &["--shard-rows", "4"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(
        text.contains("7 errors") && text.contains("--allow-errors"),
        "{text}"
    );
    let report =
        String::from_utf8(std::fs::read(job.out("bad").join("errors.csv")).unwrap()).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 8, "{report}");
    assert_eq!(lines[0], "row,path,reason");
    for (line, (row, path)) in lines[1..].iter().zip([
        (0, "corrupt.png"),
        (1, "truncated.png"),
        (2, "truncated.jpg"),
        (4, "truncated-progressive.jpg"),
        (5, "empty.png"),
        (6, "notes.png"),
        (7, "missing.png"),
    ]) {
        assert!(line.starts_with(&format!("{row},{path},")), "{line}");
    }
    assert!(
        lines[5].ends_with("empty file") && lines[7].ends_with("file not found"),
        "{report}"
    );
    let index = cxr_core::ShardIndex::read(&job.out("bad")).unwrap();
    assert_eq!(index.images(), 2);
    let rows: Vec<usize> = index
        .open_all(&job.out("bad"))
        .unwrap()
        .iter()
        .flat_map(|s| s.rows().to_vec())
        .collect();
    assert_eq!(rows, [3, 8]);
    // Accepting them: nothing is redone, the old errors still count, the exit status is 0.
    let text = succeeds(job.run("bad", &["--shard-rows", "4", "--allow-errors"]));
    assert!(text.contains("7 errors (7 from earlier runs)"), "{text}");
}

#[test]
fn paths_escaping_the_root_are_refused_naming_the_row() {
    for (bad, problem) in [("../m.parquet", "goes up"), ("/etc/passwd", "is absolute")] {
        let job = Job::new(&[], Some(vec!["00000442_000.png".into(), bad.into()]));
        let output = job.run("out", &[]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            text.contains("manifest row 1") && text.contains(bad) && text.contains(problem),
            "{text}"
        );
        assert!(
            !job.out("out").exists(),
            "nothing is written before the manifest is checked"
        );
    }
}

#[test]
fn an_output_made_with_other_settings_is_refused() {
    let job = Job::new(&[], Some(vec!["00000442_000.png".into()]));
    succeeds(job.run("out", &[]));
    let output = job.run("out", &["--size", "48"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("other settings") && text.contains("size 32 there, 48 now"),
        "{text}"
    );
}

#[test]
fn index_only_rebuilds_index_and_errors_report() {
    let (job, expected) = reference();
    let out = job.out("reindexed");
    std::fs::create_dir(&out).unwrap();
    for (name, bytes) in expected {
        if name != "index.json" && name != "errors.csv" {
            std::fs::write(out.join(name), bytes).unwrap();
        }
    }
    let index_only = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_cxr-preprocess"))
            .arg("--out")
            .arg(dir)
            .arg("--index-only")
            .output()
            .unwrap()
    };
    succeeds(index_only(&out));
    assert_same(&out, expected);
    std::fs::remove_file(out.join(info_file(5))).unwrap();
    let output = index_only(&out);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("1 shards missing (first: [5])"), "{text}");
}

/// Every pixel of a shard inverted, as a damaged disk or a stray script might leave it: the file
/// still parses, only its checksum tells.
fn invert_pixels(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header]).unwrap();
    let offsets = &meta["images"]["data_offsets"];
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    for b in &mut bytes[8 + header + start as usize..8 + header + end as usize] {
        *b = 255 - *b;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupted_shard_is_refused_by_readers_and_index_only_and_remade_on_resume() {
    let (job, expected) = reference();
    let out = job.out("corrupted");
    std::fs::create_dir(&out).unwrap();
    for (name, bytes) in expected {
        std::fs::write(out.join(name), bytes).unwrap();
    }
    invert_pixels(&out.join("shard-00003.safetensors"));
    let index = cxr_core::ShardIndex::read(&out).unwrap();
    let err = index.open_all(&out).err().unwrap().to_string();
    assert!(
        err.contains("shard-00003.safetensors: not a valid cxr shard: corrupted"),
        "{err}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_cxr-preprocess"))
        .arg("--out")
        .arg(&out)
        .arg("--index-only")
        .output()
        .unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("shard 3 must first be made again")
            && text.contains("shard-00003.safetensors")
            && text.contains("corrupted"),
        "{text}"
    );

    let text = succeeds(job.run("corrupted", &[]));
    assert!(
        text.contains("2 images written in 1 shards")
            && text.contains("1 corrupted shards (failing their checksum) made again"),
        "{text}"
    );
    assert_same(&out, expected);
}

#[test]
fn a_size_out_of_range_is_refused_before_anything_is_written() {
    let job = Job::new(&[], Some(vec!["00000442_000.png".into()]));
    for size in ["100000", "8", "0"] {
        let output = job.run("out", &["--size", size]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(
            text.contains(&format!(
                "--size {size} is out of range: it must be 16 to 4096 pixels"
            )),
            "{text}"
        );
        assert!(!job.out("out").exists());
    }
}

/// A first run that fails while making its first shard (here: its images do not fit in memory)
/// must leave the directory free for other settings.
#[cfg(target_os = "linux")]
#[test]
fn a_run_that_fails_before_its_first_shard_does_not_lock_the_directory() {
    let job = Job::new(&[], None);
    // 43 images of 4096 x 4096 in one shard need 688 MiB; the process may map 400 MB.
    let cmd = job.command(
        "out",
        &["--size", "4096", "--shard-rows", "64", "--jobs", "1"],
    );
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg("ulimit -v 400000 && exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    let output = limited.output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot allocate 688 MiB for the images of shard 0"),
        "{text}"
    );
    assert!(!job.out("out").join("preprocess.json").exists());
    succeeds(job.run("out", &["--size", "48"]));
    let settings = std::fs::read_to_string(job.out("out").join("preprocess.json")).unwrap();
    assert!(settings.contains("\"size\": 48"), "{settings}");
}

#[test]
fn help_teaches_with_examples() {
    let output = Command::new(env!("CARGO_BIN_EXE_cxr-preprocess"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Examples:",
        "--shard-index",
        "--resize",
        "--allow-errors",
        "--dicom-intensity",
        "DICOM",
        "SLURM_ARRAY_TASK_ID",
        "Exit status",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

/// Errors meant for users: `cxr-preprocess: error: ...` and exit status 1, each cause once,
/// never a backtrace, whatever RUST_BACKTRACE says.
#[test]
fn errors_print_no_backtrace_and_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    for backtrace in ["1", "full"] {
        let output = Command::new(env!("CARGO_BIN_EXE_cxr-preprocess"))
            .current_dir(dir.path())
            .args([
                "--manifest",
                "absent.parquet",
                "--root",
                ".",
                "--size",
                "32",
            ])
            .args(["--out", "out"])
            .env("RUST_BACKTRACE", backtrace)
            .env("RUST_LIB_BACKTRACE", "1")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .output()
            .unwrap();
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(text.starts_with("cxr-preprocess: error: "), "{text}");
        assert!(text.contains("absent.parquet"), "{text}");
        assert!(!text.to_lowercase().contains("backtrace"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
    }
}

/// `--out` the image folder wrote shards, index.json and errors.csv among the images, exit 0.
/// An --out that is the manifest or the --root (by any path to them) is refused before any work.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let job = Job::new(&[], None);
    let root = job.out("images");
    let manifest = job.out("m.parquet");
    let (images, table) = (files(&root), std::fs::read(&manifest).unwrap());
    #[cfg(unix)]
    std::os::unix::fs::symlink(&root, job.out("link")).unwrap();
    let refusals = [
        ("images", "is also an input (--root"),
        ("m.parquet", "is also an input (--manifest"),
        #[cfg(unix)]
        ("link", "is the same file as an input (--root"),
    ];
    for (out, expected) in refusals {
        let output = job.run(out, &[]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            text.contains(&format!("--out {} {expected}", job.out(out).display())),
            "{text}"
        );
        assert!(text.contains("refusing to overwrite it"), "{text}");
    }
    assert_eq!(files(&root), images, "the image folder must be untouched");
    assert_eq!(std::fs::read(&manifest).unwrap(), table);
}
