//! The rule every tool applies before doing any work: an output is never one of its inputs.
//!
//! `cxr-train predict --manifest m.parquet --out m.parquet` used to replace the manifest with
//! predictions, and exit 0. Paths are compared as the files they name, not as text: through
//! `.`/`..`, symlinks (canonical paths) and, on Unix, hard links (device and inode), for outputs
//! that exist already as well as for those that do not yet.
//!
//! Paths come with the option (or argument) that named them, so that the refusal says which
//! two options collide, as the user typed them.

use std::path::{Component, Path, PathBuf};

/// A path from the command line and the option that named it: `("--out", path)`, or the name
/// of a positional argument (`("predictions", path)`).
pub type Named<'a> = (&'a str, &'a Path);

/// An output that would overwrite (or write into) one of the command's inputs.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OutputIsInput {
    message: String,
}

/// Refuse `output` if it is the same file (or directory) as one of `inputs`.
///
/// ```text
/// --out x.csv is also an input (--csv x.csv): refusing to overwrite it; choose another output path
/// ```
pub fn refuse_output_among_inputs(output: Named, inputs: &[Named]) -> Result<(), OutputIsInput> {
    let (flag, out) = output;
    let out_key = Key::of(out);
    for &(input_flag, input) in inputs {
        if out_key.same(&Key::of(input)) {
            let relation = if out == input {
                "is also an input"
            } else {
                "is the same file as an input"
            };
            return Err(OutputIsInput {
                message: format!(
                    "{flag} {} {relation} ({input_flag} {}): refusing to overwrite it; choose \
                     another output path",
                    out.display(),
                    input.display()
                ),
            });
        }
    }
    Ok(())
}

/// Refuse an output directory `dir` that is one of `inputs`, or whose entries `written` (the
/// names the command writes in it: files, or folders it replaces whole) are or hold one of
/// `inputs`.
///
/// ```text
/// --run-dir runs/a would write runs/a/best.safetensors, which is an input (--init
/// runs/a/best.safetensors): refusing to overwrite it; choose another output path
/// ```
pub fn refuse_output_dir_among_inputs(
    dir: Named,
    written: &[&str],
    inputs: &[Named],
) -> Result<(), OutputIsInput> {
    refuse_output_among_inputs(dir, inputs)?;
    let (flag, out) = dir;
    let keys: Vec<(&Path, Key)> = inputs.iter().map(|&(_, p)| (p, Key::of(p))).collect();
    for name in written {
        let entry = out.join(name);
        let entry_key = Key::of(&entry);
        for (&(input_flag, input), (_, input_key)) in inputs.iter().zip(&keys) {
            let inside = input_key.path.starts_with(&entry_key.path);
            if inside || entry_key.same(input_key) {
                let what = if inside && input_key.path != entry_key.path {
                    "which holds an input"
                } else {
                    "which is an input"
                };
                return Err(OutputIsInput {
                    message: format!(
                        "{flag} {} would write {}, {what} ({input_flag} {}): refusing to \
                         overwrite it; choose another output path",
                        out.display(),
                        entry.display(),
                        input.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same file or directory (see the module's comment).
pub fn same_file(a: &Path, b: &Path) -> bool {
    Key::of(a).same(&Key::of(b))
}

/// What identifies a path's file: its absolute, canonical form (for a path that does not exist,
/// that of its nearest existing ancestor, followed by the rest of the path) and, where it
/// exists, its device and inode.
struct Key {
    path: PathBuf,
    #[cfg(unix)]
    inode: Option<(u64, u64)>,
}

impl Key {
    fn of(path: &Path) -> Key {
        Key {
            path: resolved(path),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
            },
        }
    }

    fn same(&self, other: &Key) -> bool {
        #[cfg(unix)]
        if let (Some(a), Some(b)) = (self.inode, other.inode) {
            return a == b;
        }
        self.path == other.path
    }
}

/// `path` made absolute with symlinks resolved as far as it exists; the components that do not
/// exist yet are appended as written (`.` dropped, `..` taking off the last one).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    let absolute = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let mut base = absolute.as_path();
    let mut rest = Vec::new();
    let start = loop {
        if let Ok(canonical) = base.canonicalize() {
            break canonical;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            // `..` or `.` at the end of a missing path: keep it lexically.
            (Some(parent), None) => {
                rest.push(
                    base.components()
                        .next_back()
                        .map_or_else(Default::default, |c| c.as_os_str().to_os_string()),
                );
                base = parent;
            }
            (None, _) => break base.to_path_buf(),
        }
    };
    let mut out = start;
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                out.pop();
            }
            _ => out.push(part),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn message(result: Result<(), OutputIsInput>) -> String {
        result.expect_err("should be refused").to_string()
    }

    #[test]
    fn same_path_is_refused_with_both_options() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x.csv");
        fs::write(&x, "a").unwrap();
        let text = message(refuse_output_among_inputs(("--out", &x), &[("--csv", &x)]));
        let x = x.display();
        assert_eq!(
            text,
            format!(
                "--out {x} is also an input (--csv {x}): refusing to overwrite it; choose \
                 another output path"
            )
        );
    }

    #[test]
    fn other_spellings_of_one_path_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let x = dir.path().join("x.csv");
        fs::write(&x, "a").unwrap();
        let dotted = dir.path().join("sub/../././x.csv");
        let text = message(refuse_output_among_inputs(
            ("--out", &dotted),
            &[("--manifest", &x)],
        ));
        assert!(
            text.contains("is the same file as an input (--manifest"),
            "{text}"
        );
        // Neither exists: still the same path once `.` and `..` are resolved.
        let a = dir.path().join("new/./m.parquet");
        let b = dir.path().join("new/deeper/../m.parquet");
        assert!(same_file(&a, &b));
        assert!(!same_file(&a, &dir.path().join("new/n.parquet")));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_hard_links_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x.csv");
        fs::write(&x, "a").unwrap();
        let soft = dir.path().join("soft.csv");
        std::os::unix::fs::symlink(&x, &soft).unwrap();
        let hard = dir.path().join("hard.csv");
        fs::hard_link(&x, &hard).unwrap();
        for link in [&soft, &hard] {
            let text = message(refuse_output_among_inputs(
                ("--out", link),
                &[("--csv", &x)],
            ));
            assert!(text.contains("is the same file as an input"), "{text}");
            message(refuse_output_among_inputs(
                ("--out", &x),
                &[("--csv", link)],
            ));
        }
        // A symlinked folder on the way to an output that does not exist yet.
        let folder = dir.path().join("folder");
        fs::create_dir(&folder).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&folder, &linked).unwrap();
        assert!(same_file(
            &folder.join("new.parquet"),
            &linked.join("new.parquet")
        ));
    }

    #[test]
    fn different_and_new_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x.csv");
        let y = dir.path().join("y.csv");
        fs::write(&x, "a").unwrap();
        fs::write(&y, "a").unwrap();
        refuse_output_among_inputs(("--out", &y), &[("--csv", &x)]).unwrap();
        let new = dir.path().join("new.parquet");
        refuse_output_among_inputs(("--out", &new), &[("--csv", &x), ("--csv", &y)]).unwrap();
        refuse_output_among_inputs(("--out", &dir.path().join("a/b/c")), &[("--csv", &x)]).unwrap();
        refuse_output_among_inputs(("--out", &new), &[]).unwrap();
    }

    #[test]
    fn an_output_directory_must_not_write_over_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        fs::create_dir_all(run.join("resume/step-1")).unwrap();
        let best = run.join("best.safetensors");
        fs::write(&best, "weights").unwrap();
        let names = ["best.safetensors", "config.json", "resume"];
        let text = message(refuse_output_dir_among_inputs(
            ("--run-dir", &run),
            &names,
            &[("--init", &best)],
        ));
        assert!(
            text.starts_with(&format!(
                "--run-dir {} would write {}, which is an input (--init {})",
                run.display(),
                best.display(),
                best.display()
            )),
            "{text}"
        );
        let inner = run.join("resume/step-1/model.safetensors");
        let text = message(refuse_output_dir_among_inputs(
            ("--run-dir", &run),
            &names,
            &[("--init", &inner)],
        ));
        assert!(text.contains("which holds an input"), "{text}");
        // The directory itself, and a file of another name in it, which nothing overwrites.
        message(refuse_output_dir_among_inputs(
            ("--out", &run),
            &names,
            &[("--root", &run)],
        ));
        let other = run.join("preds.parquet");
        fs::write(&other, "p").unwrap();
        refuse_output_dir_among_inputs(("--out", &run), &names, &[("predictions", &other)])
            .unwrap();
    }
}
