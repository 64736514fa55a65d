//! Opening label files: plain or gzipped CSV, columns looked up by header name.

use crate::{IndexError, Sink};
use cxr_core::ManifestRow;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// A CSV label file with its header, read record by record.
pub struct LabelFile {
    pub path: PathBuf,
    pub header: Vec<String>,
    reader: csv::Reader<Box<dyn Read>>,
}

impl LabelFile {
    /// Open `path`, decompressing it if it starts with the gzip magic bytes.
    pub fn open(path: &Path) -> Result<LabelFile, IndexError> {
        let io = |source| IndexError::Io {
            file: path.to_path_buf(),
            source,
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut magic = [0u8; 2];
        let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let input: Box<dyn Read> = if gz {
            Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(file)))
        } else {
            Box::new(file)
        };
        // Flexible: NIH's header splits `OriginalImage[Width,Height]` into two tokens.
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let header = reader
            .headers()
            .map_err(|source| IndexError::Csv {
                file: path.to_path_buf(),
                line: 1,
                source,
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        Ok(LabelFile {
            path: path.to_path_buf(),
            header,
            reader,
        })
    }

    /// Position of column `name` in the header.
    pub fn column(&self, name: &str) -> Result<usize, IndexError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| IndexError::MissingColumn {
                file: self.path.clone(),
                column: name.to_string(),
                found: self.header.join(", "),
            })
    }

    /// Read the next record into `record` (one buffer reused for every row, not one allocated
    /// per row): `Ok(false)` at the end of the file.
    pub fn next_record(&mut self, record: &mut csv::ByteRecord) -> Result<bool, IndexError> {
        self.reader
            .read_byte_record(record)
            .map_err(|source| IndexError::Csv {
                file: self.path.clone(),
                line: source.position().map_or(0, |p| p.line()),
                source,
            })
    }
}

/// Open `path`, find its columns with `find`, turn each record into a row with `row` and hand it
/// to `sink`. Rows borrow from the record (and from the columns' scratch text): none is copied
/// until the sink stores it. A file with a header and no records is an error
/// ([`IndexError::NoRows`]): it would index to nothing without a word.
pub fn for_each_row<C>(
    path: &Path,
    find: impl FnOnce(&LabelFile) -> Result<C, IndexError>,
    row: impl for<'a> Fn(&'a mut C, &'a Cell<'a>) -> Result<ManifestRow<&'a str>, IndexError>,
    sink: &mut Sink,
) -> Result<(), IndexError> {
    for_each_record(path, find, |columns, line, cell| {
        sink(line, cell.and_then(|cell| row(columns, cell)))
    })
}

/// Open `path`, find its columns with `find` and hand `each` every record, or the error reading
/// it, with the line it starts on: for files read into tables (labels by study, splits by image)
/// rather than into rows. Returning `Err` stops reading. A file with a header and no records is
/// an error ([`IndexError::NoRows`]).
pub fn for_each_record<C>(
    path: &Path,
    find: impl FnOnce(&LabelFile) -> Result<C, IndexError>,
    mut each: impl FnMut(&mut C, u64, Result<&Cell<'_>, IndexError>) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    let mut file = LabelFile::open(path)?;
    let mut columns = find(&file)?;
    let mut record = csv::ByteRecord::new();
    let mut records = 0u64;
    loop {
        match file.next_record(&mut record) {
            Ok(false) if records == 0 => {
                return Err(IndexError::NoRows {
                    file: file.path.clone(),
                })
            }
            Ok(false) => return Ok(()),
            Err(e) => {
                records += 1;
                let line = match &e {
                    IndexError::Csv { line, .. } => *line,
                    _ => 0,
                };
                each(&mut columns, line, Err(e))?
            }
            Ok(true) => {
                records += 1;
                let line = record.position().map_or(0, |p| p.line());
                let cell = Cell {
                    file: &file.path,
                    line,
                    record: &record,
                };
                each(&mut columns, line, Ok(&cell))?;
            }
        }
    }
}

/// Builds errors for one record of one file.
pub struct Cell<'a> {
    pub file: &'a Path,
    pub line: u64,
    pub record: &'a csv::ByteRecord,
}

impl Cell<'_> {
    /// The trimmed text of field `index` named `column`.
    pub fn get(&self, index: usize, column: &str) -> Result<&str, IndexError> {
        let bytes = self.bytes(index, column)?;
        std::str::from_utf8(bytes)
            .map_err(|_| self.error(column, &String::from_utf8_lossy(bytes), "not UTF-8:"))
    }

    /// The raw bytes of field `index` named `column`, ASCII whitespace trimmed: for fields
    /// matched against a few ASCII spellings (labels, sex, view), which need no UTF-8 check.
    pub fn bytes(&self, index: usize, column: &str) -> Result<&[u8], IndexError> {
        self.record
            .get(index)
            .map(<[u8]>::trim_ascii)
            .ok_or_else(|| self.error(column, "", "the row is too short: missing"))
    }

    /// Refuse a record without exactly `fields` fields: files whose header names every column
    /// (not NIH's) are read this way, so that a field lost or added shifts no value into the
    /// next column unnoticed.
    pub fn check_width(&self, fields: usize) -> Result<(), IndexError> {
        if self.record.len() == fields {
            return Ok(());
        }
        Err(IndexError::Width {
            file: self.file.to_path_buf(),
            line: self.line,
            found: self.record.len(),
            expected: fields,
        })
    }

    /// The error for field bytes that are none of the expected values.
    pub fn bad(&self, column: &str, value: &[u8], problem: &str) -> IndexError {
        self.error(column, &String::from_utf8_lossy(value), problem)
    }

    pub fn error(&self, column: &str, value: &str, problem: &str) -> IndexError {
        IndexError::Value {
            file: self.file.to_path_buf(),
            line: self.line,
            column: column.to_string(),
            value: value.to_string(),
            problem: problem.to_string(),
        }
    }
}
