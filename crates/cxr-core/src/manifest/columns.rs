//! A manifest held column by column, as it is written: what `cxr-index` builds from a label file.
//!
//! Rows as structs of owned strings cost four small allocations per image and, for CheXpert's
//! quarter of a million images, some 200 MB of memory the kernel must clear first (a third of an
//! indexing run). Here each text column is one buffer of bytes plus the end of every value, and
//! the fixed vocabularies are one byte per row, ready to become Parquet columns.

use super::{Dataset, ManifestRow, Projection, Sex, Split, View};
use crate::atomic;
use crate::label::LabelState;
use crate::observation::OBSERVATIONS;
use crate::{Error, Result};
use polars::prelude::*;
use std::path::Path;

/// Text values stored end to end in one buffer.
#[derive(Debug, Clone, Default)]
struct Texts {
    bytes: String,
    ends: Vec<usize>,
}

impl Texts {
    fn push(&mut self, value: &str) {
        self.bytes.push_str(value);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        (0..self.ends.len()).map(|i| self.get(i))
    }
}

/// Every row of a manifest, stored column by column; rows are pushed and read back as
/// [`ManifestRow<&str>`].
#[derive(Debug, Clone, Default)]
pub struct ManifestColumns {
    image_id: Texts,
    dataset: Vec<Dataset>,
    /// Empty where the path is the image id (every CheXpert row); a path is never empty.
    path: Texts,
    patient_id: Texts,
    study_id: Texts,
    view: Vec<View>,
    projection: Vec<Projection>,
    sex: Vec<Sex>,
    age: Vec<Option<i32>>,
    source_split: Vec<Option<Split>>,
    split: Vec<Split>,
    labels: Vec<[LabelState; OBSERVATIONS.len()]>,
}

impl ManifestColumns {
    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }

    /// Append a row.
    pub fn push(&mut self, row: &ManifestRow<&str>) {
        self.image_id.push(row.image_id);
        self.dataset.push(row.dataset);
        self.path.push(if row.path == row.image_id {
            ""
        } else {
            row.path
        });
        self.patient_id.push(row.patient_id);
        self.study_id.push(row.study_id);
        self.view.push(row.view);
        self.projection.push(row.projection);
        self.sex.push(row.sex);
        self.age.push(row.age);
        self.source_split.push(row.source_split);
        self.split.push(row.split);
        self.labels.push(row.labels);
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> ManifestRow<&str> {
        let image_id = self.image_id.get(i);
        let path = self.path.get(i);
        ManifestRow {
            image_id,
            dataset: self.dataset[i],
            path: if path.is_empty() { image_id } else { path },
            patient_id: self.patient_id.get(i),
            study_id: self.study_id.get(i),
            view: self.view[i],
            projection: self.projection[i],
            sex: self.sex[i],
            age: self.age[i],
            source_split: self.source_split[i],
            split: self.split[i],
            labels: self.labels[i],
        }
    }

    /// Every row, in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = ManifestRow<&str>> {
        (0..self.len()).map(|i| self.row(i))
    }

    /// Write as Parquet (LZ4), atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut df = self.to_frame().map_err(|source| Error::Polars {
            path: path.to_path_buf(),
            source,
        })?;
        atomic::write_with(path, |w| {
            ParquetWriter::new(w)
                .with_compression(ParquetCompression::Lz4Raw)
                .with_statistics(StatisticsOptions::empty())
                // Column by column on this thread: the parallel writer's thread pool costs more
                // CPU time than it saves wall time on a manifest-sized frame.
                .set_parallel(false)
                .finish(&mut df)
                .map(|_| ())
                .map_err(std::io::Error::other)
        })
    }

    fn to_frame(&self) -> PolarsResult<DataFrame> {
        let text = |name: &str, values: &Texts| {
            StringChunked::from_iter_values(name.into(), values.iter()).into_column()
        };
        // Null where the path is the image id: a quarter of a million CheXpert paths stored once
        // instead of twice.
        let path = self.path.iter().map(|p| (!p.is_empty()).then_some(p));
        let mut columns = vec![
            text("image_id", &self.image_id),
            category(
                "dataset",
                Dataset::NAMES,
                self.dataset.iter().map(|d| Some(d.code())),
            )?,
            StringChunked::from_iter_options("path".into(), path).into_column(),
            interned("patient_id", self.patient_id.iter())?,
            text("study_id", &self.study_id),
            category(
                "view",
                View::NAMES,
                self.view.iter().map(|v| Some(v.code())),
            )?,
            category(
                "projection",
                Projection::NAMES,
                self.projection.iter().map(|p| Some(p.code())),
            )?,
            category("sex", Sex::NAMES, self.sex.iter().map(|s| Some(s.code())))?,
            Column::new("age".into(), self.age.as_slice()),
            category(
                "source_split",
                Split::NAMES,
                self.source_split.iter().map(|s| s.map(Split::code)),
            )?,
            category(
                "split",
                Split::NAMES,
                self.split.iter().map(|s| Some(s.code())),
            )?,
        ];
        columns.extend(self.label_columns());
        DataFrame::new(self.len(), columns)
    }

    /// The label columns as plain values plus a validity mask, each collected in one pass over
    /// the compact label array: building an `Int8Chunked` from `Option<i8>`s, or pushing row by
    /// row into 42 vectors, costs more than the rest of writing.
    fn label_columns(&self) -> impl Iterator<Item = Column> + '_ {
        OBSERVATIONS.iter().map(|o| {
            let states = self.labels.iter().map(|labels| labels[o.index()]);
            let values = states.clone().map(|s| s.code().unwrap_or(0)).collect();
            // The mask's type (arrow's `Bitmap`, which polars does not re-export) is inferred.
            let validity = Some(states.map(|s| s != LabelState::NotMentioned).collect());
            let codes = Int8Chunked::from_vec_validity(o.name().into(), values, validity);
            codes.into_series().into_column()
        })
    }
}

impl<'a> FromIterator<ManifestRow<&'a str>> for ManifestColumns {
    fn from_iter<I: IntoIterator<Item = ManifestRow<&'a str>>>(rows: I) -> Self {
        let mut columns = ManifestColumns::default();
        rows.into_iter().for_each(|row| columns.push(&row));
        columns
    }
}

/// A column of a fixed vocabulary as an enum: a Parquet dictionary column built straight from our
/// codes. As text, the Parquet writer would hash every value to find the dictionary itself, the
/// largest cost of writing a manifest.
fn category(
    name: &str,
    names: &[&'static str],
    codes: impl Iterator<Item = Option<u8>>,
) -> PolarsResult<Column> {
    let dtype = DataType::from_frozen_categories(FrozenCategories::new(names.iter().copied())?);
    let codes: UInt8Chunked = codes.collect();
    let codes = codes.with_name(name.into());
    Ok(Categorical8Chunked::from_cats_and_dtype(codes, dtype)
        .into_series()
        .into_column())
}

/// A text column with few distinct values (a patient has several images) as categories numbered
/// here: given plain text, the Parquet writer would build that dictionary itself by hashing every
/// value, the largest single cost of writing a manifest. Reads back as text.
fn interned<'a>(
    name: &str,
    values: impl ExactSizeIterator<Item = &'a str>,
) -> PolarsResult<Column> {
    let mut codes: Vec<u32> = Vec::with_capacity(values.len());
    let mut distinct: Vec<&str> = Vec::new();
    let mut code_of: PlHashMap<&str, u32> = PlHashMap::new();
    let mut last: Option<(&str, u32)> = None;
    for value in values {
        // Label files list a patient's images together: a value like the one before it needs no
        // lookup.
        let code = match last {
            Some((before, code)) if before == value => code,
            _ => *code_of.entry(value).or_insert_with(|| {
                distinct.push(value);
                distinct.len() as u32 - 1
            }),
        };
        last = Some((value, code));
        codes.push(code);
    }
    let dtype = DataType::from_frozen_categories(FrozenCategories::new(distinct)?);
    let name = name.into();
    // Codes are stored in the smallest type that holds them, as the categories require.
    let series = match dtype.cat_physical()? {
        CategoricalPhysical::U8 => {
            let codes = UInt8Chunked::from_vec(name, codes.into_iter().map(|c| c as u8).collect());
            Categorical8Chunked::from_cats_and_dtype(codes, dtype).into_series()
        }
        CategoricalPhysical::U16 => {
            let codes =
                UInt16Chunked::from_vec(name, codes.into_iter().map(|c| c as u16).collect());
            Categorical16Chunked::from_cats_and_dtype(codes, dtype).into_series()
        }
        CategoricalPhysical::U32 => {
            Categorical32Chunked::from_cats_and_dtype(UInt32Chunked::from_vec(name, codes), dtype)
                .into_series()
        }
    };
    Ok(series.into_column())
}
