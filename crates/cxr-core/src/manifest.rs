//! The manifest: one row per image, the contract between `cxr-index` and every later tool.
//!
//! Stored as Parquet with these columns (documented for users in `data-manifests/README.md`):
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `image_id` | str | NIH: the `Image Index` file name; CheXpert: the CSV's `Path`; MIMIC: `dicom_id`; DICOM: `SOPInstanceUID` |
//! | `dataset` | enum | `chexpert`, `nih`, `mimic` or `dicom` |
//! | `path` | str, nullable | image path relative to the dataset root given to the tools; null: the same as `image_id` |
//! | `patient_id` | str (categorical) | `patient00001` (CheXpert), `00000001` (NIH), `10000032` (MIMIC `subject_id`), DICOM `PatientID` |
//! | `study_id` | str | `patient00001/study1` (CheXpert), `00000001/003` (NIH: patient and follow-up), `10000032/50414267` (MIMIC: subject and study), DICOM `StudyInstanceUID` |
//! | `view` | enum | `frontal` or `lateral` |
//! | `projection` | enum | `AP`, `PA`, `LL`, `RL` or `unknown` |
//! | `sex` | enum | `male`, `female` or `unknown` |
//! | `age` | i32, nullable | years as the dataset states them (CheXpert has ages of 0) |
//! | `source_split` | enum, nullable | the dataset's own split (`train`/`valid` for CheXpert's CSVs; `train`/`valid`/`test` for MIMIC's split file, whose `validate` is `valid`) |
//! | `split` | enum | patient-level `train`/`valid`/`test`; no patient is in two splits |
//! | one per [`Observation`] | i8, nullable | raw state: 1 positive, 0 negative, -1 uncertain, null not mentioned |
//!
//! The enum columns are dictionary-encoded strings whose categories are the spellings in
//! declaration order (`Dataset::NAMES`, ...); `patient_id` is dictionary-encoded the same way,
//! its categories in order of first appearance. Text columns from older manifests read the same.
//!
//! Row order is meaningful: shards refer to rows by position, so a manifest is never re-sorted
//! behind the shards' back (shards also store image ids, and readers check them).

mod columns;

pub use columns::ManifestColumns;

use crate::label::LabelState;
use crate::observation::{Observation, OBSERVATIONS};
use crate::{Error, Result};
use polars::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The manifest's spellings, in the order of [`Self::ALL`].
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// Position in [`Self::ALL`]: the category code in the manifest file.
            pub fn code(self) -> u8 {
                self as u8
            }
            /// The manifest's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parse the manifest's spelling (case-insensitive).
            pub fn parse(text: &str) -> Option<$name> {
                $(if text.eq_ignore_ascii_case($text) { return Some($name::$variant); })+
                None
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Which dataset a row comes from: `mimic` is MIMIC-CXR-JPG, `dicom` a folder of DICOM
    /// files indexed from their own tags (a hospital export). New datasets are added at the end,
    /// so the category codes of manifests written before them keep their meaning.
    Dataset { Chexpert => "chexpert", Nih => "nih", Mimic => "mimic", Dicom => "dicom" }
);
string_enum!(
    /// Frontal (AP/PA) or lateral.
    View { Frontal => "frontal", Lateral => "lateral" }
);
string_enum!(
    /// The radiographic projection.
    Projection { Ap => "AP", Pa => "PA", Ll => "LL", Rl => "RL", Unknown => "unknown" }
);
string_enum!(
    /// Patient sex as recorded.
    Sex { Male => "male", Female => "female", Unknown => "unknown" }
);
string_enum!(
    /// A patient-level split. `official` is the dataset's own evaluation set, kept apart from
    /// the patient split: CheXpert's `valid.csv` (radiologist consensus labels, the set
    /// published CheXpert numbers are on) or a list such as NIH's `test_list.txt`. It is never
    /// trained on or used to select checkpoints, only scored.
    Split { Train => "train", Valid => "valid", Test => "test", Official => "official" }
);

/// One image. Text fields are owned (`String`, rows read from a manifest) or borrowed (`&str`,
/// rows parsed from a label file on their way into [`ManifestColumns`], or read out of them).
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRow<S = String> {
    pub image_id: S,
    pub dataset: Dataset,
    pub path: S,
    pub patient_id: S,
    pub study_id: S,
    pub view: View,
    pub projection: Projection,
    pub sex: Sex,
    pub age: Option<i32>,
    pub source_split: Option<Split>,
    pub split: Split,
    /// Raw states indexed by [`Observation::index`].
    pub labels: [LabelState; OBSERVATIONS.len()],
}

impl ManifestRow {
    /// A frontal image with nothing else known: every label not mentioned, projection and sex
    /// unknown, split `train`. Tests, benchmarks and tools that index bare image folders start
    /// here and set what they know with struct-update syntax.
    pub fn unlabelled(
        dataset: Dataset,
        image_id: &str,
        path: &str,
        patient_id: &str,
        study_id: &str,
    ) -> ManifestRow {
        ManifestRow {
            image_id: image_id.to_string(),
            dataset,
            path: path.to_string(),
            patient_id: patient_id.to_string(),
            study_id: study_id.to_string(),
            view: View::Frontal,
            projection: Projection::Unknown,
            sex: Sex::Unknown,
            age: None,
            source_split: None,
            split: Split::Train,
            labels: [LabelState::NotMentioned; OBSERVATIONS.len()],
        }
    }
}

impl<S: AsRef<str>> ManifestRow<S> {
    pub fn label(&self, observation: Observation) -> LabelState {
        self.labels[observation.index()]
    }

    /// The image's path under `root`, refusing a path that could leave it.
    pub fn image_path(&self, root: &Path) -> Result<PathBuf, String> {
        checked_relative(self.path.as_ref()).map(|p| root.join(p))
    }

    /// The same row with borrowed text.
    pub fn borrowed(&self) -> ManifestRow<&str> {
        self.map_text(|text| text.as_ref())
    }
}

impl<S> ManifestRow<S> {
    /// The same row with every text field mapped by `f`.
    pub fn map_text<'a, T>(&'a self, f: impl Fn(&'a S) -> T) -> ManifestRow<T> {
        ManifestRow {
            image_id: f(&self.image_id),
            path: f(&self.path),
            patient_id: f(&self.patient_id),
            study_id: f(&self.study_id),
            dataset: self.dataset,
            view: self.view,
            projection: self.projection,
            sex: self.sex,
            age: self.age,
            source_split: self.source_split,
            split: self.split,
            labels: self.labels,
        }
    }
}

impl ManifestRow<&str> {
    /// The same row with owned text.
    pub fn owned(&self) -> ManifestRow {
        self.map_text(|text| text.to_string())
    }
}

/// `path` as a relative path that stays under its root: no root, prefix or `..` component.
/// Manifests come from label files users download; a crafted `../../etc` must not be read.
pub fn checked_relative(path: &str) -> Result<&Path, String> {
    let p = Path::new(path);
    // Fast path for the common case (every row of a label file comes through here): a path can
    // only escape with a `..`, a leading separator or, on Windows, a drive prefix (`C:`).
    if !path.is_empty()
        && !path.starts_with(['/', '\\'])
        && !path.contains("..")
        && !path.contains(':')
    {
        return Ok(p);
    }
    let escapes = p
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if path.is_empty() || escapes {
        Err(format!("image path `{path}` is not a plain relative path under the dataset root (absolute or with `..`)"))
    } else {
        Ok(p)
    }
}

/// All rows of a manifest, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub rows: Vec<ManifestRow>,
}

impl Manifest {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Position of every image id, for joining predictions and shards back to rows.
    pub fn positions(&self) -> HashMap<&str, usize> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.image_id.as_str(), i))
            .collect()
    }

    /// Write as Parquet (LZ4), atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let columns: ManifestColumns = self.rows.iter().map(ManifestRow::borrowed).collect();
        columns.write(path)
    }

    /// Read a manifest written by [`Manifest::write`], checking every column and value.
    pub fn read(path: &Path) -> Result<Manifest> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let polars = |source| Error::Polars {
            path: path.to_path_buf(),
            source,
        };
        let mut df = ParquetReader::new(file).finish().map_err(polars)?;
        // Fixed vocabularies are stored as categories (see `to_frame`), older manifests as text;
        // both are read as text and parsed.
        let categorical: Vec<_> = df
            .columns()
            .iter()
            .filter(|c| c.dtype().is_categorical() || c.dtype().is_enum())
            .map(|c| c.name().clone())
            .collect();
        for name in categorical {
            let text = df.column(&name).and_then(|c| c.cast(&DataType::String));
            df.with_column(text.map_err(polars)?).map_err(polars)?;
        }
        Self::from_frame(&df).map_err(|reason| Error::Manifest {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn from_frame(df: &DataFrame) -> Result<Manifest, String> {
        let n = df.height();
        let strings = |name: &str| -> Result<Vec<Option<&str>>, String> {
            let col = df
                .column(name)
                .map_err(|_| format!("missing column `{name}`; re-create it with cxr-index"))?;
            let ca = col
                .str()
                .map_err(|_| format!("column `{name}` should hold text, found {}", col.dtype()))?;
            Ok(ca.iter().collect())
        };
        let required = |name: &str| -> Result<Vec<&str>, String> {
            strings(name)?
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| format!("row {i}: `{name}` is empty")))
                .collect()
        };
        fn parsed<T>(
            name: &str,
            values: Vec<&str>,
            parse: fn(&str) -> Option<T>,
        ) -> Result<Vec<T>, String> {
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    parse(v).ok_or_else(|| format!("row {i}: `{name}` has unknown value `{v}`"))
                })
                .collect()
        }
        let image_id = required("image_id")?;
        let dataset = parsed("dataset", required("dataset")?, Dataset::parse)?;
        let path = strings("path")?;
        let patient_id = required("patient_id")?;
        let study_id = required("study_id")?;
        let view = parsed("view", required("view")?, View::parse)?;
        let projection = parsed("projection", required("projection")?, Projection::parse)?;
        let sex = parsed("sex", required("sex")?, Sex::parse)?;
        let split = parsed("split", required("split")?, Split::parse)?;
        let source_split = strings("source_split")?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                None => Ok(None),
                Some(v) => Split::parse(v)
                    .map(Some)
                    .ok_or_else(|| format!("row {i}: `source_split` has unknown value `{v}`")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let age: Vec<Option<i32>> = df
            .column("age")
            .map_err(|_| "missing column `age`".to_string())?
            .i32()
            .map_err(|_| "column `age` should be i32".to_string())?
            .iter()
            .collect();
        let mut labels = vec![[LabelState::NotMentioned; OBSERVATIONS.len()]; n];
        for o in OBSERVATIONS {
            let col = df
                .column(o.name())
                .map_err(|_| format!("missing label column `{}`", o.name()))?;
            let codes = col
                .i8()
                .map_err(|_| format!("label column `{}` should be i8", o.name()))?;
            for (i, code) in codes.iter().enumerate() {
                labels[i][o.index()] = LabelState::from_code(code).ok_or_else(|| {
                    format!(
                        "row {i}: `{}` has unknown state {} (expected 1 positive, 0 negative, \
                         -1 uncertain or empty for not mentioned)",
                        o.name(),
                        code.map_or("empty".to_string(), |c| c.to_string())
                    )
                })?;
            }
        }
        let rows = (0..n)
            .map(|i| ManifestRow {
                image_id: image_id[i].to_string(),
                dataset: dataset[i],
                path: path[i].unwrap_or(image_id[i]).to_string(),
                patient_id: patient_id[i].to_string(),
                study_id: study_id[i].to_string(),
                view: view[i],
                projection: projection[i],
                sex: sex[i],
                age: age[i],
                source_split: source_split[i],
                split: split[i],
                labels: labels[i],
            })
            .collect();
        Ok(Manifest { rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_row(i: usize) -> ManifestRow {
        let mut labels = [LabelState::NotMentioned; OBSERVATIONS.len()];
        labels[2] = LabelState::Positive;
        labels[5] = LabelState::Uncertain;
        labels[8] = LabelState::Negative;
        ManifestRow {
            projection: if i.is_multiple_of(2) {
                Projection::Pa
            } else {
                Projection::Ap
            },
            sex: Sex::Female,
            age: if i == 1 { None } else { Some(40 + i as i32) },
            labels,
            ..ManifestRow::unlabelled(
                Dataset::Nih,
                &format!("img{i}.png"),
                &format!("images/img{i}.png"),
                &format!("{:08}", i / 2),
                &format!("{:08}/000", i / 2),
            )
        }
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert!(checked_relative("CheXpert-v1.0-small/train/p1/s1/v.jpg").is_ok());
        for bad in ["/etc/passwd", "../x.png", "a/../../x.png", ""] {
            assert!(checked_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parquet_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let mut manifest = Manifest {
            rows: (0..5).map(sample_row).collect(),
        };
        // CheXpert's image id is its path, which is stored once.
        manifest.rows[3].image_id = manifest.rows[3].path.clone();
        manifest.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), manifest);
    }

    #[test]
    fn fixed_vocabularies_are_categories_and_text_columns_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let manifest = Manifest {
            rows: (0..5).map(sample_row).collect(),
        };
        manifest.write(&path).unwrap();
        let mut df = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        for name in [
            "dataset",
            "view",
            "projection",
            "sex",
            "source_split",
            "split",
        ] {
            assert!(df.column(name).unwrap().dtype().is_enum(), "{name}");
            let text = df.column(name).unwrap().cast(&DataType::String).unwrap();
            df.with_column(text).unwrap();
        }
        // A manifest written before the categories, with every column as text.
        let old = dir.path().join("old.parquet");
        ParquetWriter::new(File::create(&old).unwrap())
            .finish(&mut df)
            .unwrap();
        assert_eq!(Manifest::read(&old).unwrap(), manifest);
    }

    /// `mimic` and `dicom` were added to `dataset`'s categories after manifests had been
    /// written with `chexpert` and `nih` only: the old codes keep their meaning, old files read
    /// the same, and rows of every dataset round trip.
    #[test]
    fn datasets_added_later_leave_old_manifests_readable() {
        assert_eq!(&Dataset::NAMES[..2], ["chexpert", "nih"]);
        assert_eq!((Dataset::Chexpert.code(), Dataset::Nih.code()), (0, 1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let datasets = [Dataset::Chexpert, Dataset::Nih];
        let old = Manifest {
            rows: (0..6)
                .map(|i| ManifestRow {
                    dataset: datasets[i % 2],
                    ..sample_row(i)
                })
                .collect(),
        };
        old.write(&path).unwrap();
        let mut df = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        let two =
            DataType::from_frozen_categories(FrozenCategories::new(["chexpert", "nih"]).unwrap());
        let dataset = df.column("dataset").unwrap();
        let dataset = dataset.cast(&DataType::String).unwrap().cast(&two).unwrap();
        df.with_column(dataset).unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), old);

        let every = Manifest {
            rows: (0..8)
                .map(|i| ManifestRow {
                    dataset: Dataset::ALL[i % Dataset::ALL.len()],
                    ..sample_row(i)
                })
                .collect(),
        };
        every.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), every);
    }

    #[test]
    fn patient_ids_past_every_small_code_type_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        // 70,000 patients: more than 16-bit category codes hold.
        let manifest = Manifest {
            rows: (0..140_000).map(sample_row).collect(),
        };
        manifest.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), manifest);
    }

    #[test]
    fn an_unknown_label_code_is_named_as_the_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let manifest = Manifest {
            rows: (0..3).map(sample_row).collect(),
        };
        manifest.write(&path).unwrap();
        let mut df = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        df.with_column(Column::new("Edema".into(), [Some(0i8), None, Some(7)]))
            .unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let err = Manifest::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("row 2: `Edema` has unknown state 7 (") && !err.contains("Some("),
            "{err}"
        );
    }

    #[test]
    fn foreign_parquet_is_refused_with_the_missing_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.parquet");
        let mut df = DataFrame::new(1, vec![Column::new("x".into(), [1i32])]).unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let err = Manifest::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("other.parquet") && err.contains("image_id"),
            "{err}"
        );
    }
}
