//! How an image file becomes a checkpoint's input outside shards: as the shards it was trained
//! on were made.
//!
//! A checkpoint records its run's configuration, which names the shard directory the run read,
//! and that directory records how its images were made: the side and the resize in `index.json`
//! (cxr-core's shard index), the JPEG and DICOM decoding in `preprocess.json` (cxr-core's
//! `ShardSettings`, which cxr-preprocess writes). `cxr-train predict --image` prepares each file with those settings through
//! [`cxr_image::prepare`], the function cxr-preprocess calls, so a file gives the pixels its shard
//! holds. Flags override each setting (`--size`, `--resize`, `--full-decode`,
//! `--dicom-intensity`); where the shards cannot be read (a checkpoint moved to another machine,
//! or a run started from another directory), `--size` is needed and the rest take
//! cxr-preprocess's defaults.

use anyhow::{bail, Context, Result};
use cxr_core::shard::{Resize, ShardIndex, ShardSettings, SETTINGS_FILE};
use cxr_image::{Decoding, DicomIntensity, JpegScaling, Target};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How files become input squares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInput {
    pub target: Target,
    pub decoding: Decoding,
}

/// The settings given on the command line; `None` takes the training shards' own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputFlags {
    pub size: Option<usize>,
    pub resize: Option<Resize>,
    pub full_decode: Option<bool>,
    pub dicom: Option<DicomIntensity>,
}

/// The settings in use and where they came from, for the user to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInput {
    pub input: ImageInput,
    /// The training shards read, if they could be.
    pub shards: Option<PathBuf>,
}

impl fmt::Display for ImageInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resize = match self.target.resize {
            Resize::Pad => "pad",
            Resize::CentreCrop => "centre-crop",
        };
        let jpeg = match self.decoding.jpeg {
            JpegScaling::Dct => "scaled",
            JpegScaling::Full => "full",
        };
        write!(
            f,
            "{} px, {resize}, {jpeg} JPEG decoding, DICOM {}",
            self.target.size,
            self.decoding.dicom.name()
        )
    }
}

impl fmt::Display for ResolvedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shards {
            Some(dir) => write!(
                f,
                "{} (the training shards {}, unless a flag says otherwise)",
                self.input,
                dir.display()
            ),
            None => write!(
                f,
                "{} (the flags, and cxr-preprocess's defaults)",
                self.input
            ),
        }
    }
}

impl InputFlags {
    /// The input for a checkpoint whose run configuration is `training_config` (its metadata):
    /// the flags where given, else the training shards' settings.
    pub fn resolve(&self, training_config: &BTreeMap<String, String>) -> Result<ResolvedInput> {
        let shards = training_shards(training_config);
        let trained =
            match &shards {
                Some(dir) => match shard_input(dir) {
                    Ok(input) => Some(input),
                    Err(e) if self.size.is_some() => {
                        eprintln!("note: {e:#}; using the flags and cxr-preprocess's defaults");
                        None
                    }
                    Err(e) => return Err(e.context(
                        "give --size (and --resize, --full-decode, --dicom-intensity where the \
                         shards were not made with cxr-preprocess's defaults)",
                    )),
                },
                None => None,
            };
        let Some(trained) = trained else {
            let Some(size) = self.size else {
                bail!(
                    "the checkpoint does not say which shards it was trained on: give --size \
                     (and --resize, --full-decode, --dicom-intensity as the training shards were \
                     made)"
                );
            };
            return Ok(ResolvedInput {
                input: self.over(ImageInput {
                    target: Target::new(size, Resize::Pad),
                    decoding: Decoding::default(),
                }),
                shards: None,
            });
        };
        let input = self.over(trained);
        if input != trained {
            eprintln!("note: the training shards were made at {trained}; the flags change that");
        }
        Ok(ResolvedInput { input, shards })
    }

    /// `base` with each setting the flags give replaced.
    fn over(&self, base: ImageInput) -> ImageInput {
        ImageInput {
            target: Target::new(
                self.size.unwrap_or(base.target.size),
                self.resize.unwrap_or(base.target.resize),
            ),
            decoding: Decoding {
                jpeg: match self.full_decode {
                    Some(true) => JpegScaling::Full,
                    Some(false) => JpegScaling::Dct,
                    None => base.decoding.jpeg,
                },
                dicom: self.dicom.unwrap_or(base.decoding.dicom),
            },
        }
    }
}

/// The shard directory a run configuration names (`shards` of `cxr_train` or `cxr_pretrain`).
fn training_shards(training_config: &BTreeMap<String, String>) -> Option<PathBuf> {
    training_config.values().find_map(|json| {
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        Some(PathBuf::from(value.get("shards")?.as_str()?))
    })
}

/// The square and decoding the shards in `dir` were made with.
pub fn shard_input(dir: &Path) -> Result<ImageInput> {
    let index = ShardIndex::read(dir).with_context(|| {
        format!(
            "cannot read the training shards' index in {} (relative paths are from where the \
             run was started)",
            dir.display()
        )
    })?;
    let settings = ShardSettings::read(dir)?;
    let file = dir.join(SETTINGS_FILE);
    let named = |e: String| anyhow::anyhow!("{}: {e}", file.display());
    // Shards made before the settings were recorded: the defaults they were made with.
    let (jpeg, dicom) = match settings {
        Some(s) => (
            JpegScaling::from_name(&s.jpeg_decode).map_err(named)?,
            DicomIntensity::from_name(&s.dicom_intensity).map_err(named)?,
        ),
        None => Default::default(),
    };
    Ok(ImageInput {
        target: Target::new(index.size, index.resize),
        decoding: Decoding { jpeg, dicom },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shards: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("cxr_train".into(), format!(r#"{{"shards": "{shards}"}}"#)),
            (
                "normalisation".into(),
                r#"{"mean": [0.449], "std": [0.226]}"#.into(),
            ),
        ])
    }

    /// A shard directory's index and, given the decoding, the settings cxr-preprocess records.
    fn shards(dir: &Path, size: usize, resize: Resize, decoding: Option<Decoding>) {
        let index = ShardIndex {
            format: cxr_core::shard::FORMAT.into(),
            size,
            resize,
            shard_rows: 4,
            manifest_rows: 0,
            shards: Vec::new(),
        };
        index.write(dir).unwrap();
        if let Some(d) = decoding {
            let settings = ShardSettings {
                format: cxr_core::shard::FORMAT.into(),
                size,
                resize,
                shard_rows: 4,
                jpeg_decode: d.jpeg.name().into(),
                dicom_intensity: d.dicom.name().into(),
                manifest_rows: 0,
                manifest_sha256: String::new(),
            };
            let json = serde_json::to_vec(&settings).unwrap();
            std::fs::write(dir.join(SETTINGS_FILE), json).unwrap();
        }
    }

    #[test]
    fn the_training_shards_decide_unless_a_flag_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let decoding = Decoding {
            jpeg: JpegScaling::Full,
            dicom: DicomIntensity::FullRange,
        };
        shards(dir.path(), 64, Resize::CentreCrop, Some(decoding));
        let config = config(&dir.path().display().to_string());
        let resolved = InputFlags::default().resolve(&config).unwrap();
        let trained = ImageInput {
            target: Target::new(64, Resize::CentreCrop),
            decoding,
        };
        assert_eq!(resolved.input, trained);
        assert_eq!(resolved.shards.as_deref(), Some(dir.path()));
        let flags = InputFlags {
            size: Some(128),
            full_decode: Some(false),
            ..InputFlags::default()
        };
        let input = flags.resolve(&config).unwrap().input;
        assert_eq!(input.target, Target::new(128, Resize::CentreCrop));
        assert_eq!(input.decoding.jpeg, JpegScaling::Dct);
        assert_eq!(input.decoding.dicom, DicomIntensity::FullRange);
    }

    #[test]
    fn shards_without_settings_were_made_with_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        shards(dir.path(), 32, Resize::Pad, None);
        let input = shard_input(dir.path()).unwrap();
        assert_eq!(input.target, Target::new(32, Resize::Pad));
        assert_eq!(input.decoding, Decoding::default());
    }

    #[test]
    fn without_readable_shards_the_size_must_be_given() {
        let err = InputFlags::default()
            .resolve(&config("/nowhere/shards"))
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.starts_with("give --size"), "{err}");
        assert!(err.contains("/nowhere/shards"), "{err}");
        let err = InputFlags::default()
            .resolve(&BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not say which shards"), "{err}");
        let flags = InputFlags {
            size: Some(96),
            ..InputFlags::default()
        };
        let resolved = flags.resolve(&config("/nowhere/shards")).unwrap();
        assert_eq!(resolved.input.target, Target::new(96, Resize::Pad));
        assert_eq!(resolved.input.decoding, Decoding::default());
        assert_eq!(resolved.shards, None);
    }
}
