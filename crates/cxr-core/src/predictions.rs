//! Model predictions: one row per image, one score column per task.
//!
//! `cxr-train` writes them after validation or inference and `cxr-eval` scores them, so the
//! format lives here rather than in either tool. A predictions file has
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `image_id` | str | the manifest's `image_id` of the image scored |
//! | one per task | f32 or f64 | the model's score: a probability or a logit |
//!
//! Task columns are named by the observation (`Pleural Effusion`), optionally with the `prob_`
//! prefix and `_` for spaces that public CheXNet reproductions write (`prob_Pleural_Effusion`),
//! or by a non-pathology task (`sex`, `view`, `age`). Scores may be probabilities or logits:
//! ROC AUC depends only on their order. Files written by other tools are accepted as CSV too, and
//! when no `image_id` column exists, NIH's `Image Index` or CheXpert's `Path` column is used as
//! the id, since those are exactly the manifest's ids for the two datasets.
//!
//! Files are written as Parquet (zstd, f64 scores), atomically; [`Predictions::read`] takes
//! Parquet or CSV. Every reader error names the file, and the row or line and the column.
//! NaN and infinite scores are refused on read and on write: a NaN has no rank, infinities of one
//! sign all tie (a column of `inf` scores AUC 0.5 whatever the labels), and both come from an
//! overflow or a diverged model, which should fail loudly rather than produce a plausible AUC.
//! Probabilities are always finite; finite logits carry every ranking an infinite one could.

use crate::atomic;
use polars::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The id column's name.
pub const IMAGE_ID: &str = "image_id";

/// Id columns accepted when `image_id` is absent, in order of preference.
const ID_ALIASES: [&str; 2] = ["Image Index", "Path"];

/// Scores of several tasks for a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// The manifest's image ids, one per row.
    pub image_ids: Vec<String>,
    /// Task column names as written (`prob_Edema`, `Edema`, `sex`, ...).
    pub tasks: Vec<String>,
    /// `scores[t][i]`: the score of task `t` for image `i`.
    pub scores: Vec<Vec<f64>>,
}

/// Why predictions could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PredictionsError {
    /// The file could not be opened, read, parsed as Parquet or written.
    #[error(transparent)]
    File(#[from] crate::Error),
    /// The file was read but its contents are not valid predictions.
    #[error("{path}: not a valid predictions file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Predictions built in memory are inconsistent (see [`Predictions::new`]).
    #[error("invalid predictions: {0}")]
    Inconsistent(String),
}

type Result<T, E = PredictionsError> = std::result::Result<T, E>;

impl Predictions {
    /// Build predictions, checking that every task has one finite (never NaN or infinite) score
    /// per image, that image ids and task names are unique, and that no task is called
    /// `image_id`.
    pub fn new(image_ids: Vec<String>, tasks: Vec<String>, scores: Vec<Vec<f64>>) -> Result<Self> {
        let p = Predictions {
            image_ids,
            tasks,
            scores,
        };
        p.check().map_err(PredictionsError::Inconsistent)?;
        Ok(p)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.image_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }

    /// The scores of the task column named exactly `name`.
    pub fn task(&self, name: &str) -> Option<&[f64]> {
        let t = self.tasks.iter().position(|n| n == name)?;
        Some(&self.scores[t])
    }

    fn check(&self) -> Result<(), String> {
        if self.tasks.len() != self.scores.len() {
            return Err(format!(
                "{} task names but {} score columns",
                self.tasks.len(),
                self.scores.len()
            ));
        }
        let mut seen_tasks = HashMap::new();
        for (t, name) in self.tasks.iter().enumerate() {
            if name.trim().is_empty() || name == IMAGE_ID {
                return Err(format!(
                    "task {t} has the name `{name}`, which is reserved or empty"
                ));
            }
            if let Some(first) = seen_tasks.insert(name.as_str(), t) {
                return Err(format!(
                    "task `{name}` appears twice (columns {first} and {t})"
                ));
            }
            if self.scores[t].len() != self.image_ids.len() {
                return Err(format!(
                    "task `{name}` has {} scores for {} images",
                    self.scores[t].len(),
                    self.image_ids.len()
                ));
            }
            if let Some(i) = self.scores[t].iter().position(|s| !s.is_finite()) {
                return Err(format!(
                    "row {i} (image `{}`): `{name}` is {}",
                    self.image_ids[i],
                    not_finite(self.scores[t][i])
                ));
            }
        }
        let mut seen_ids = HashMap::with_capacity(self.image_ids.len());
        for (i, id) in self.image_ids.iter().enumerate() {
            if id.is_empty() {
                return Err(format!("row {i}: `{IMAGE_ID}` is empty"));
            }
            if let Some(first) = seen_ids.insert(id.as_str(), i) {
                return Err(format!(
                    "image `{id}` appears twice (rows {first} and {i}); each image must be scored once"
                ));
            }
        }
        Ok(())
    }

    /// Read Parquet (`.parquet`, `.pq`, or any file starting with Parquet's magic bytes) or CSV.
    pub fn read(path: &Path) -> Result<Predictions> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let parquet = match ext.as_str() {
            "parquet" | "pq" => true,
            "csv" => false,
            _ => {
                let mut magic = [0u8; 4];
                let mut file = File::open(path).map_err(|e| crate::Error::io(path, e))?;
                file.read_exact(&mut magic).is_ok() && magic == *b"PAR1"
            }
        };
        if parquet {
            Self::read_parquet(path)
        } else {
            Self::read_csv(path)
        }
    }

    /// Read a Parquet file: a text id column and numeric (float or integer) task columns.
    pub fn read_parquet(path: &Path) -> Result<Predictions> {
        let invalid = |reason: String| PredictionsError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let polars = |source| crate::Error::Polars {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| crate::Error::io(path, e))?;
        let df = ParquetReader::new(file).finish().map_err(polars)?;
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let id_name = id_column(&names).map_err(invalid)?;
        let ids = df.column(id_name).map_err(polars)?;
        let ids = ids.str().map_err(|_| {
            invalid(format!(
                "column `{id_name}` should hold text, found {}",
                ids.dtype()
            ))
        })?;
        let image_ids = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                id.map(str::to_string)
                    .ok_or_else(|| invalid(format!("row {i}: `{id_name}` is empty")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tasks = Vec::new();
        let mut scores = Vec::new();
        for column in df.columns() {
            let name = column.name().as_str();
            if name == id_name {
                continue;
            }
            if !column.dtype().is_primitive_numeric() {
                return Err(invalid(format!(
                    "column `{name}` holds {}, but task columns must hold numbers (scores); \
                     drop it or convert it",
                    column.dtype()
                )));
            }
            let values = column.cast(&DataType::Float64).map_err(polars)?;
            let values = values.f64().map_err(polars)?;
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match v {
                    None => {
                        return Err(invalid(format!(
                            "row {i} (image `{}`): `{name}` is empty",
                            image_ids[i]
                        )))
                    }
                    Some(v) => out.push(v),
                }
            }
            tasks.push(name.to_string());
            scores.push(out);
        }
        let p = Predictions {
            image_ids,
            tasks,
            scores,
        };
        p.check().map_err(invalid)?;
        Ok(p)
    }

    /// Read a CSV file with a header row: an id column and numeric task columns.
    pub fn read_csv(path: &Path) -> Result<Predictions> {
        let invalid = |reason: String| PredictionsError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let csv_error = |e: csv::Error| invalid(e.to_string());
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| match e.into_kind() {
                csv::ErrorKind::Io(io) => PredictionsError::File(crate::Error::io(path, io)),
                other => invalid(format!("{other:?}")),
            })?;
        let names: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_string)
            .collect();
        let id_name = id_column(&names).map_err(invalid)?;
        let id_col = names.iter().position(|n| n == id_name).unwrap_or_default();
        let task_cols: Vec<usize> = (0..names.len()).filter(|&c| c != id_col).collect();
        let mut image_ids = Vec::new();
        let mut scores = vec![Vec::new(); task_cols.len()];
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let line = record.position().map_or(0, |p| p.line());
            let id = record.get(id_col).unwrap_or_default();
            if id.is_empty() {
                return Err(invalid(format!("line {line}: `{id_name}` is empty")));
            }
            for (t, &c) in task_cols.iter().enumerate() {
                let text = record.get(c).unwrap_or_default();
                let value: f64 = text.parse().map_err(|_| {
                    invalid(format!(
                        "line {line} (image `{id}`): `{}` is `{text}`, not a number; task columns \
                         must hold scores",
                        names[c]
                    ))
                })?;
                if !value.is_finite() {
                    return Err(invalid(format!(
                        "line {line} (image `{id}`): `{}` is {}",
                        names[c],
                        not_finite(value)
                    )));
                }
                scores[t].push(value);
            }
            image_ids.push(id.to_string());
        }
        let p = Predictions {
            image_ids,
            tasks: task_cols.iter().map(|&c| names[c].clone()).collect(),
            scores,
        };
        p.check().map_err(invalid)?;
        Ok(p)
    }

    /// Write as Parquet (zstd, f64 scores), atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.check().map_err(PredictionsError::Inconsistent)?;
        let polars = |source| crate::Error::Polars {
            path: path.to_path_buf(),
            source,
        };
        let mut columns = vec![Column::new(IMAGE_ID.into(), &self.image_ids)];
        for (name, values) in self.tasks.iter().zip(&self.scores) {
            columns.push(Column::new(name.as_str().into(), values));
        }
        let mut df = DataFrame::new(self.len(), columns).map_err(polars)?;
        atomic::write_with(path, |w| {
            ParquetWriter::new(w)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(&mut df)
                .map(|_| ())
                .map_err(std::io::Error::other)
        })?;
        Ok(())
    }

    /// Write as CSV (shortest round-trip decimal scores), atomically: for people and for tools
    /// without a Parquet reader.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        self.check().map_err(PredictionsError::Inconsistent)?;
        atomic::write_with(path, |w| {
            let mut out = csv::Writer::from_writer(w);
            let mut header = vec![IMAGE_ID];
            header.extend(self.tasks.iter().map(String::as_str));
            out.write_record(&header)?;
            for (i, id) in self.image_ids.iter().enumerate() {
                let mut row = vec![id.clone()];
                row.extend(self.scores.iter().map(|s| s[i].to_string()));
                out.write_record(&row)?;
            }
            out.flush()
        })?;
        Ok(())
    }
}

/// Why a score that is not finite cannot be ranked: the value and what to do.
fn not_finite(value: f64) -> String {
    if value.is_nan() {
        "NaN; a NaN score has no rank, so fix the model or drop the row".to_string()
    } else {
        format!(
            "{value}; infinite scores tie with each other whatever the labels (a column of them \
             scores AUC 0.5) and come from an overflow or a diverged model, so fix the model or \
             write probabilities or finite logits"
        )
    }
}

/// The id column among `names`: `image_id`, else one of [`ID_ALIASES`].
fn id_column(names: &[String]) -> Result<&'static str, String> {
    std::iter::once(IMAGE_ID)
        .chain(ID_ALIASES)
        .find(|wanted| names.iter().any(|n| n == wanted))
        .ok_or_else(|| {
            format!(
                "no `{IMAGE_ID}` column (found: {}); name the column holding the manifest's image \
                 ids `{IMAGE_ID}`",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Predictions {
        Predictions::new(
            vec!["a.png".into(), "b.png".into(), "c.png".into()],
            vec!["prob_Edema".into(), "sex".into()],
            vec![vec![0.1, 0.25, f64::MAX], vec![-3.5, 1e-300, 0.1 + 0.2]],
        )
        .unwrap()
    }

    #[test]
    fn parquet_and_csv_round_trips_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample();
        let pq = dir.path().join("p.parquet");
        p.write(&pq).unwrap();
        assert_eq!(Predictions::read(&pq).unwrap(), p);
        let csv = dir.path().join("p.csv");
        p.write_csv(&csv).unwrap();
        assert_eq!(Predictions::read(&csv).unwrap(), p);
        // Without an extension the content decides.
        let bare = dir.path().join("p");
        std::fs::copy(&pq, &bare).unwrap();
        assert_eq!(Predictions::read(&bare).unwrap(), p);
    }

    #[test]
    fn f32_parquet_columns_are_widened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f32.parquet");
        let mut df = DataFrame::new(
            2,
            vec![
                Column::new("image_id".into(), ["x", "y"]),
                Column::new("Cardiomegaly".into(), [0.5f32, 0.25f32]),
            ],
        )
        .unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let p = Predictions::read(&path).unwrap();
        assert_eq!(p.task("Cardiomegaly").unwrap(), &[0.5, 0.25]);
    }

    #[test]
    fn nih_style_csv_uses_image_index_as_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chexnet.csv");
        std::fs::write(
            &path,
            "Image Index,prob_Atelectasis\n00000001_000.png,0.3\n",
        )
        .unwrap();
        let p = Predictions::read(&path).unwrap();
        assert_eq!(p.image_ids, ["00000001_000.png"]);
        assert_eq!(p.tasks, ["prob_Atelectasis"]);
    }

    #[test]
    fn csv_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, "image_id,Edema\na,0.1\nb,NaN\n").unwrap();
        let err = Predictions::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.csv")
                && err.contains("line 3")
                && err.contains("Edema")
                && err.contains("NaN"),
            "{err}"
        );
        std::fs::write(&path, "image_id,Edema\na,high\n").unwrap();
        let err = Predictions::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`high`"), "{err}");
        std::fs::write(&path, "id,Edema\na,0.1\n").unwrap();
        let err = Predictions::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("no `image_id` column") && err.contains("`id`"),
            "{err}"
        );
        std::fs::write(&path, "image_id,Edema\na,0.1\na,0.2\n").unwrap();
        let err = Predictions::read(&path).unwrap_err().to_string();
        assert!(err.contains("`a` appears twice"), "{err}");
    }

    #[test]
    fn nan_is_refused_in_memory_and_in_parquet() {
        let err = Predictions::new(vec!["a".into()], vec!["Edema".into()], vec![vec![f64::NAN]])
            .unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.parquet");
        let mut df = DataFrame::new(
            2,
            vec![
                Column::new("image_id".into(), ["x", "y"]),
                Column::new("Edema".into(), [0.5, f64::NAN]),
            ],
        )
        .unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let err = Predictions::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("nan.parquet") && err.contains("row 1") && err.contains("`y`"),
            "{err}"
        );
    }

    /// A column of `inf` scored AUC 0.5 whatever the labels: infinities are refused as NaN is,
    /// naming the file, the first row and the column, in memory, in Parquet (f64 and f32) and
    /// in CSV.
    #[test]
    fn infinities_are_refused_like_nan() {
        for inf in [f64::INFINITY, f64::NEG_INFINITY] {
            let err = Predictions::new(
                vec!["a".into(), "b".into()],
                vec!["Edema".into()],
                vec![vec![0.5, inf]],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("row 1 (image `b`): `Edema` is") && err.contains("infinite"),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, column) in [
            (
                "inf64.parquet",
                Column::new("Edema".into(), [0.5, f64::INFINITY, f64::INFINITY]),
            ),
            (
                "inf32.parquet",
                Column::new("Edema".into(), [0.5f32, f32::NEG_INFINITY, 0.25]),
            ),
        ] {
            let path = dir.path().join(name);
            let ids = Column::new("image_id".into(), ["x", "y", "z"]);
            let mut df = DataFrame::new(3, vec![ids, column]).unwrap();
            ParquetWriter::new(File::create(&path).unwrap())
                .finish(&mut df)
                .unwrap();
            let err = Predictions::read(&path).unwrap_err().to_string();
            assert!(
                err.contains(name)
                    && err.contains("row 1 (image `y`)")
                    && err.contains("`Edema` is")
                    && err.contains("inf;"),
                "{err}"
            );
        }
        let path = dir.path().join("inf.csv");
        for text in ["inf", "-inf", "Infinity"] {
            std::fs::write(&path, format!("image_id,Edema\na,0.1\nb,{text}\n")).unwrap();
            let err = Predictions::read(&path).unwrap_err().to_string();
            assert!(
                err.contains("inf.csv")
                    && err.contains("line 3 (image `b`)")
                    && err.contains("`Edema` is")
                    && err.contains("infinite"),
                "{err}"
            );
        }
    }
}
