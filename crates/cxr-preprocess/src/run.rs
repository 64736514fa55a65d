//! One preprocessing job: plan the shards, make the missing ones in parallel, finish the index.
//!
//! Shard `k` covers manifest rows `[k * shard_rows, (k + 1) * shard_rows)` whatever happens, so
//! everything about a shard is decided by the manifest and the settings alone: a re-run skips the
//! shards whose sidecar exists and whose file matches the sidecar's checksum (a shard that fails
//! it is made again), an array task takes the shards with `k % N == I`, and no two tasks ever
//! write the same file. Shards are made in parallel and the images inside each shard too
//! (rayon steals across both levels), so both cores stay busy while a finished shard is hashed and
//! written.

use crate::output::{self, Finish, OutputSettings, ShardState};
use anyhow::{bail, ensure, Context, Result};
use cxr_core::shard::ShardSettings;
use cxr_core::shard::{self, shard_file, ImageError, ShardInfo, FORMAT};
use cxr_core::{Manifest, ManifestRow};
use cxr_image::{Decoding, Target};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which share of the shards this process makes: those with `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayTask {
    pub index: usize,
    pub count: usize,
}

impl ArrayTask {
    /// The whole job in one process.
    pub const ALL: ArrayTask = ArrayTask { index: 0, count: 1 };

    /// The task from explicit flags, else from a Slurm job array's environment
    /// (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`), else
    /// [`ArrayTask::ALL`]. `env` looks a variable up (`std::env::var` in the binary).
    pub fn resolve(
        index: Option<usize>,
        count: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ArrayTask> {
        let task = match (index, count) {
            (Some(index), Some(count)) => ArrayTask { index, count },
            (None, None) => match (env("SLURM_ARRAY_TASK_ID"), env("SLURM_ARRAY_TASK_COUNT")) {
                (Some(id), Some(count)) => {
                    let number = |name: &str, text: &str| -> Result<usize> {
                        text.trim()
                            .parse()
                            .with_context(|| format!("{name}={text:?} is not a task number"))
                    };
                    let id = number("SLURM_ARRAY_TASK_ID", &id)?;
                    let min = match env("SLURM_ARRAY_TASK_MIN") {
                        Some(min) => number("SLURM_ARRAY_TASK_MIN", &min)?,
                        None => 0,
                    };
                    ensure!(
                        id >= min,
                        "SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
                    );
                    ArrayTask {
                        index: id - min,
                        count: number("SLURM_ARRAY_TASK_COUNT", &count)?,
                    }
                }
                _ => ArrayTask::ALL,
            },
            _ => bail!("--shard-index and --num-shards go together: give both, or neither"),
        };
        ensure!(task.count > 0, "--num-shards must be at least 1");
        ensure!(
            task.index < task.count,
            "task {} of {} does not exist: task numbers run from 0 to {}; with a Slurm array \
             of steps other than 1, pass --shard-index and --num-shards explicitly",
            task.index,
            task.count,
            task.count - 1
        );
        Ok(task)
    }

    fn owns(&self, shard: usize) -> bool {
        shard % self.count == self.index
    }
}

/// A preprocessing job, as the command line describes it.
#[derive(Debug, Clone)]
pub struct Options {
    pub manifest: PathBuf,
    /// Manifest paths are relative to this directory.
    pub root: PathBuf,
    pub out: PathBuf,
    pub target: Target,
    pub shard_rows: usize,
    /// JPEG scaling and the DICOM intensity rule.
    pub decoding: Decoding,
    /// Worker threads; `None` uses every core.
    pub jobs: Option<usize>,
    pub task: ArrayTask,
}

/// What a job did, for the closing report.
#[derive(Debug, Clone)]
pub struct Summary {
    pub task: ArrayTask,
    pub shards_written: usize,
    pub images_written: usize,
    /// Shards (and their images) of this task that an earlier run had finished.
    pub shards_skipped: usize,
    pub images_skipped: usize,
    /// Shards an earlier run had finished but whose files failed their checksum, made again (and
    /// counted in `shards_written`).
    pub shards_remade: Vec<usize>,
    /// Images that failed in this run.
    pub new_errors: Vec<ImageError>,
    /// Images recorded as failed in the shards skipped.
    pub old_errors: usize,
    pub elapsed: Duration,
    pub finish: Finish,
}

impl Summary {
    /// Every image missing from this task's shards, new or old.
    pub fn errors(&self) -> usize {
        self.new_errors.len() + self.old_errors
    }

    /// Images decoded (or failed) per second in this run.
    pub fn rate(&self) -> f64 {
        (self.images_written + self.new_errors.len()) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.task != ArrayTask::ALL {
            write!(f, "task {} of {}: ", self.task.index, self.task.count)?;
        }
        write!(
            f,
            "{} images written in {} shards, {} skipped as already done ({} shards), {} errors",
            self.images_written,
            self.shards_written,
            self.images_skipped,
            self.shards_skipped,
            self.errors()
        )?;
        if self.old_errors > 0 {
            write!(f, " ({} from earlier runs)", self.old_errors)?;
        }
        if let Some(first) = self.shards_remade.first() {
            write!(
                f,
                "; {} corrupted shards (failing their checksum) made again, first {}",
                self.shards_remade.len(),
                shard_file(*first)
            )?;
        }
        write!(
            f,
            "; {:.1} s, {:.1} images/s",
            self.elapsed.as_secs_f64(),
            self.rate()
        )
    }
}

/// The manifest path of `row`, checked to stay inside the image root.
fn relative_path(index: usize, row: &ManifestRow) -> Result<&Path> {
    let path = Path::new(&row.path);
    let problem = if row.path.is_empty() {
        Some("is empty")
    } else {
        path.components().find_map(|c| match c {
            Component::Normal(_) | Component::CurDir => None,
            Component::ParentDir => Some("goes up with `..`"),
            Component::RootDir | Component::Prefix(_) => Some("is absolute"),
        })
    };
    match problem {
        None => Ok(path),
        Some(problem) => bail!(
            "manifest row {index} (image `{}`): path `{}` {problem}, which would read outside --root; \
             manifest paths must be relative to the dataset root: fix the manifest (cxr-index writes them so)",
            row.image_id,
            row.path
        ),
    }
}

/// Run a preprocessing job. Images that fail are left out and reported in the summary; only
/// problems with the job itself (manifest, output directory, disk) are errors.
pub fn run(options: &Options) -> Result<Summary> {
    let start = Instant::now();
    let Options {
        target, shard_rows, ..
    } = *options;
    Target::check_size(target.size).map_err(anyhow::Error::msg)?;
    ensure!(shard_rows > 0, "--shard-rows must be at least 1");
    // Manifest errors name the file.
    let manifest = Manifest::read(&options.manifest).context("reading the manifest")?;
    ensure!(
        !manifest.is_empty(),
        "manifest {} has no rows",
        options.manifest.display()
    );
    let paths = manifest
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| relative_path(i, row))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        options.root.is_dir(),
        "image root {} is not a directory (--root is the folder the manifest's paths start from)",
        options.root.display()
    );
    let out = options.out.as_path();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let settings = ShardSettings {
        format: FORMAT.to_string(),
        size: target.size,
        resize: target.resize,
        shard_rows,
        jpeg_decode: options.decoding.jpeg.name().to_string(),
        dicom_intensity: options.decoding.dicom.name().to_string(),
        manifest_rows: manifest.len(),
        manifest_sha256: ShardSettings::fingerprint(&manifest),
    };
    // Refuse other settings now, but record ours only once a shard has been made with them, just
    // before it is written: a run that fails before (a shard too large for memory, say) must not
    // lock the directory to settings that do not work.
    settings.check(out)?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(jobs) = options.jobs {
        pool = pool.num_threads(jobs);
    }
    let pool = pool.build().context("starting worker threads")?;

    // Shards done by an earlier run count only if they still match their checksums (hashed in
    // parallel: this reads every finished shard once).
    let owned: Vec<usize> = (0..settings.shard_count())
        .filter(|&k| options.task.owns(k))
        .collect();
    let states: Vec<ShardState> = pool.install(|| {
        owned
            .par_iter()
            .map(|&k| settings.state(out, k))
            .collect::<Result<_>>()
    })?;
    let mut todo = Vec::new();
    let mut verified = HashSet::new();
    let mut shards_remade = Vec::new();
    let (mut shards_skipped, mut images_skipped, mut old_errors) = (0, 0, 0);
    for (&k, state) in owned.iter().zip(states) {
        match state {
            ShardState::Done(info) => {
                shards_skipped += 1;
                images_skipped += info.images;
                old_errors += info.errors.len();
                verified.insert(k);
            }
            ShardState::Missing => todo.push(k),
            ShardState::Corrupted(_) => {
                shards_remade.push(k);
                todo.push(k);
            }
        }
    }

    let images_todo = todo
        .iter()
        .map(|&k| settings.rows_of(k).len())
        .sum::<usize>();
    let progress = ProgressBar::new(images_todo as u64).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} images, {per_sec}, {eta} left",
        )
        .expect("valid template"),
    );
    let job = Job {
        manifest: &manifest,
        paths: &paths,
        root: &options.root,
        out,
        settings: &settings,
        target,
        decoding: options.decoding,
        progress: &progress,
        claimed: Mutex::new(false),
    };
    let made: Vec<ShardInfo> = pool.install(|| {
        todo.par_iter()
            .map(|&k| job.make_shard(k))
            .collect::<Result<_>>()
    })?;
    progress.finish_and_clear();
    // Nothing to make (all done, or a task that owns no shard): the settings are recorded now.
    job.claim()?;

    verified.extend(todo.iter().copied());
    let finish = pool.install(|| output::finish_trusting(out, &verified))?;
    Ok(Summary {
        task: options.task,
        shards_written: made.len(),
        images_written: made.iter().map(|s| s.images).sum(),
        shards_skipped,
        images_skipped,
        shards_remade,
        new_errors: made.into_iter().flat_map(|s| s.errors).collect(),
        old_errors,
        elapsed: start.elapsed(),
        finish,
    })
}

/// What every shard of a job shares.
struct Job<'a> {
    manifest: &'a Manifest,
    paths: &'a [&'a Path],
    root: &'a Path,
    out: &'a Path,
    settings: &'a ShardSettings,
    target: Target,
    decoding: Decoding,
    progress: &'a ProgressBar,
    /// Whether this run has recorded (or found) its settings in the directory.
    claimed: Mutex<bool>,
}

impl Job<'_> {
    /// Record the settings in the directory before its first shard is written (once per run).
    fn claim(&self) -> Result<()> {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if !*claimed {
            self.settings.claim(self.out)?;
            *claimed = true;
        }
        Ok(())
    }

    /// Decode and resize shard `k`'s images, then write the shard and its sidecar.
    fn make_shard(&self, k: usize) -> Result<ShardInfo> {
        let rows = self.settings.rows_of(k);
        let area = self.target.size * self.target.size;
        // Fallible, so that a shard too large for the machine is a message, not an abort.
        let mut images = Vec::new();
        if images.try_reserve_exact(rows.len() * area).is_err() {
            bail!(
                "cannot allocate {} MiB for the images of shard {k} ({} rows of {s} x {s} px; \
                 every shard in progress holds its images in memory): lower --shard-rows, --jobs \
                 or --size",
                (rows.len() * area) >> 20,
                rows.len(),
                s = self.target.size
            );
        }
        images.resize(rows.len() * area, 0);
        let outcomes: Vec<Result<(), String>> = images
            .par_chunks_mut(area)
            .zip(rows.clone().into_par_iter())
            .map(|(pixels, row)| {
                let outcome = self.image(row, pixels);
                self.progress.inc(1);
                outcome
            })
            .collect();

        // Close the gaps left by failed images.
        let (mut kept, mut errors) = (Vec::new(), Vec::new());
        for (row, outcome) in rows.clone().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    let from = (row - rows.start) * area;
                    images.copy_within(from..from + area, kept.len() * area);
                    kept.push(row);
                }
                Err(reason) => errors.push(ImageError {
                    row,
                    path: self.manifest.rows[row].path.clone(),
                    reason,
                }),
            }
        }
        images.truncate(kept.len() * area);
        let ids: Vec<&str> = kept
            .iter()
            .map(|&r| self.manifest.rows[r].image_id.as_str())
            .collect();
        let bytes = shard::encode(&images, &kept, &ids, self.target.size, self.target.resize)?;
        let info = ShardInfo::new(k, rows.start, rows.len(), &bytes, kept.len(), errors);
        self.claim()?;
        info.write_shard(self.out, k, &bytes)
            .with_context(|| format!("writing shard {k} to {}", self.out.display()))?;
        Ok(info)
    }

    /// Read, decode and resize manifest row `row` into `pixels`; the error is the reason for
    /// the report.
    fn image(&self, row: usize, pixels: &mut [u8]) -> Result<(), String> {
        let path = self.root.join(self.paths[row]);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            _ => format!("cannot read: {e}"),
        })?;
        cxr_image::prepare(&bytes, &self.target, self.decoding, pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn array_task_from_flags_env_or_whole_job() {
        let none = env(&[]);
        assert_eq!(
            ArrayTask::resolve(None, None, &none).unwrap(),
            ArrayTask::ALL
        );
        assert_eq!(
            ArrayTask::resolve(Some(2), Some(3), &none).unwrap(),
            ArrayTask { index: 2, count: 3 }
        );
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            ArrayTask::resolve(None, None, &slurm).unwrap(),
            ArrayTask { index: 1, count: 3 }
        );
        // Flags win over the environment.
        assert_eq!(
            ArrayTask::resolve(Some(0), Some(1), &slurm).unwrap(),
            ArrayTask::ALL
        );
        assert!(ArrayTask::resolve(Some(3), Some(3), &none).is_err());
        assert!(ArrayTask::resolve(Some(0), None, &none).is_err());
        let past_end = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        let err = ArrayTask::resolve(None, None, &past_end)
            .unwrap_err()
            .to_string();
        assert!(err.contains("task 4 of 3"), "{err}");
    }
}
