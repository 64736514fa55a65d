//! Loading and saving weights with torchvision's names.
//!
//! Reads safetensors and zip-format PyTorch files (`torch.save(model.state_dict(), f)`, also
//! wrapped as `{"state_dict": ...}` or `{"model": ...}`) through `candle_core::pickle`, which
//! parses the pickle without executing anything from it, so no Python is needed and an untrusted
//! file cannot run code. On top of the raw tensors it handles what real checkpoints contain:
//! DataParallel's `module.` prefix, torchvision's legacy DenseNet names (`norm.1` for `norm1`),
//! three-channel ImageNet weights for a one-channel model (the first convolution is summed over
//! RGB, which equals feeding the grey image three times), and heads of another size.
//!
//! Loading checks everything before changing anything: a checkpoint that does not fit is
//! reported in full (missing, unexpected and mis-shaped tensors) and the model is left as it was.
//! A file holding NaN or infinite values is refused as it is read, naming those tensors
//! (`finite.rs`).
//!
//! Saving writes safetensors (f32; `num_batches_tracked` as i64, as torchvision does) with the
//! model configuration and the caller's training configuration and code revision as metadata,
//! atomically: a temp file in the destination directory, then a rename.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::{Architecture, HeadSpec, ModelConfig};
use crate::error::{ModelError, Result, TensorMismatch, WeightMismatch};
use crate::finite::check_finite;
use crate::heads::AUX_PREFIX;
use crate::model::Model;
use crate::state::{Slot, StatField};

/// How forgiving [`Model::load`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// `true` (the default): every model tensor must be in the checkpoint with the same shape,
    /// and the checkpoint must hold nothing else. `false`: the same for the backbone, but heads
    /// whose tensors are missing or differ in shape are re-initialised, and auxiliary heads the
    /// model lacks (`heads.*`) are ignored; the [`LoadReport`] lists both.
    pub strict: bool,
}

impl LoadOptions {
    /// Everything must match.
    pub fn strict() -> Self {
        Self { strict: true }
    }

    /// Heads may differ: mismatching or missing ones are re-initialised, extra ones ignored.
    pub fn non_strict() -> Self {
        Self { strict: false }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::strict()
    }
}

/// A head that a non-strict load re-initialised instead of loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReinitialisedHead {
    /// Head name (from the model configuration).
    pub head: String,
    /// Why, e.g. `classifier.weight: model [5, 23], checkpoint [14, 23]`.
    pub reason: String,
}

/// What a load did besides copying tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of tensors copied from the checkpoint.
    pub loaded: usize,
    /// Set when every checkpoint key started with DataParallel's `module.`, which was removed.
    pub stripped_module_prefix: bool,
    /// Keys renamed from torchvision's legacy DenseNet names (`...norm.1.weight`).
    pub renamed_legacy_keys: usize,
    /// The first convolution's weight, when a three-channel one was summed over RGB to fit a
    /// one-channel model.
    pub summed_rgb: Option<String>,
    /// Heads re-initialised by a non-strict load.
    pub reinitialised_heads: Vec<ReinitialisedHead>,
    /// Checkpoint tensors of auxiliary heads the model does not have (non-strict load).
    pub ignored: Vec<String>,
    /// `num_batches_tracked` buffers absent from an old checkpoint, set to 0 as PyTorch does.
    pub defaulted: Vec<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if self.stripped_module_prefix {
            write!(f, "; removed the 'module.' prefix")?;
        }
        if self.renamed_legacy_keys > 0 {
            write!(
                f,
                "; renamed {} legacy DenseNet keys",
                self.renamed_legacy_keys
            )?;
        }
        if let Some(name) = &self.summed_rgb {
            write!(f, "; summed {name} over RGB for one input channel")?;
        }
        for head in &self.reinitialised_heads {
            write!(f, "; re-initialised head {:?} ({})", head.head, head.reason)?;
        }
        if !self.ignored.is_empty() {
            write!(f, "; ignored {}", self.ignored.join(", "))?;
        }
        if !self.defaulted.is_empty() {
            write!(
                f,
                "; set {} missing num_batches_tracked to 0",
                self.defaulted.len()
            )?;
        }
        Ok(())
    }
}

/// Write named tensors (moved to the host) as a safetensors file, atomically
/// ([`cxr_core::atomic`]): [`read_weights`]'s counterpart, for checkpoints, optimiser states and
/// projector weights alike.
pub fn write_weights(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let write_err = |source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    };
    let host = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), t.to_device(&Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(host.iter().map(|(n, t)| (*n, t)), metadata)
        .map_err(|e| write_err(std::io::Error::other(e)))?;
    cxr_core::atomic::write_bytes(path, &bytes).map_err(|e| match e {
        cxr_core::Error::Io { source, .. } => write_err(source),
        other => write_err(std::io::Error::other(other)),
    })
}

/// Reads every tensor of a safetensors or zip-format PyTorch file, sorted by name, on `device`.
/// A file holding NaN or infinite values is refused ([`check_finite`]), naming those tensors.
pub fn read_weights(path: impl AsRef<Path>, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let err = |reason: String| ModelError::ReadWeights {
        path: path.to_path_buf(),
        reason,
    };
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| err(e.to_string()))?;
    // Read to the CPU, where the values are checked before they go to `device`.
    let mut tensors: Vec<(String, Tensor)> = if magic == *b"PK\x03\x04" {
        read_pth(path).map_err(|e| err(format!("cannot parse the PyTorch zip file: {e}")))?
    } else {
        match candle_core::safetensors::load(path, &Device::Cpu) {
            Ok(map) => map.into_iter().collect(),
            // Old torch.save files are a bare pickle stream: protocol 2, then the magic number.
            Err(_) if magic[..3] == [0x80, 0x02, 0x8a] => {
                return Err(err(
                    "this is PyTorch's legacy (pre-1.6) format; re-save it with a \
                                current PyTorch (torch.save(torch.load(f), g)) or convert it to \
                                safetensors"
                        .into(),
                ))
            }
            Err(e) => {
                return Err(err(format!(
                    "neither safetensors nor a zip-format PyTorch file ({e})"
                )))
            }
        }
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    check_finite(path, tensors.iter().map(|(name, t)| (name.as_str(), t)))?;
    tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(device)?)))
        .collect()
}

/// A `torch.save`d state dict, bare or under a usual key.
fn read_pth(path: &Path) -> candle_core::Result<Vec<(String, Tensor)>> {
    for key in [None, Some("state_dict"), Some("model")] {
        let tensors = candle_core::pickle::read_all_with_key(path, key)?;
        if !tensors.is_empty() {
            return Ok(tensors);
        }
    }
    candle_core::bail!("no tensors found (neither a state dict nor one under 'state_dict'/'model')")
}

/// torchvision's legacy DenseNet names (`denselayer1.norm.1.weight`) in today's form
/// (`denselayer1.norm1.weight`); the rule torchvision's own loader applies.
fn modern_densenet_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    if n < 4 {
        return None;
    }
    let (layer, module, index, tensor) = (parts[n - 4], parts[n - 3], parts[n - 2], parts[n - 1]);
    let is_layer = layer
        .strip_prefix("denselayer")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    let fits = is_layer
        && ["norm", "relu", "conv"].contains(&module)
        && ["1", "2"].contains(&index)
        && ["weight", "bias", "running_mean", "running_var"].contains(&tensor);
    fits.then(|| format!("{}.{module}{index}.{tensor}", parts[..n - 3].join(".")))
}

/// `[64, 3, 7, 7] f32`.
fn describe(shape: &[usize], dtype: DType) -> String {
    format!("{shape:?} {}", dtype.as_str())
}

impl Model {
    /// Loads a safetensors or PyTorch file (see [`read_weights`]) into this model.
    pub fn load(&mut self, path: impl AsRef<Path>, options: LoadOptions) -> Result<LoadReport> {
        let tensors = read_weights(path, &self.device)?;
        self.load_state_dict(tensors, options)
    }

    /// Loads named tensors (torchvision names) into this model. Nothing changes unless the whole
    /// checkpoint fits; otherwise the error lists every missing, unexpected and mis-shaped tensor.
    pub fn load_state_dict(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        options: LoadOptions,
    ) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut checkpoint = self.normalise_names(tensors, &mut report)?;
        let mut mismatch = WeightMismatch {
            model: self.config.describe(),
            ..WeightMismatch::default()
        };
        let first_conv = self.config.arch.first_conv_weight();
        let mut plan: Vec<(Slot, Tensor, Option<usize>)> = Vec::new();
        let mut counters_to_zero: Vec<Slot> = Vec::new();
        let mut reinit: BTreeMap<usize, String> = BTreeMap::new();
        for (name, slot) in self.state.entries() {
            let head = self.heads.iter().position(|h| h.owns(name));
            let lenient_head = head.filter(|_| !options.strict);
            let expected = slot.shape();
            let Some(mut tensor) = checkpoint.remove(name) else {
                if matches!(slot, Slot::Stat(_, StatField::NumBatchesTracked)) {
                    report.defaulted.push(name.clone());
                    counters_to_zero.push(slot.clone());
                } else if let Some(h) = lenient_head {
                    reinit.entry(h).or_insert_with(|| format!("{name} missing"));
                } else {
                    mismatch.missing.push(name.clone());
                }
                continue;
            };
            if name == first_conv && is_rgb_version_of(tensor.dims(), &expected) {
                tensor = tensor.to_dtype(DType::F32)?.sum_keepdim(1)?;
                report.summed_rgb = Some(name.clone());
            }
            let kind_ok = match slot.dtype() {
                DType::I64 => tensor.dtype().is_int(),
                _ => tensor.dtype().is_float(),
            };
            if tensor.dims() == expected.as_slice() && kind_ok {
                plan.push((slot.clone(), tensor, head));
                continue;
            }
            let model = describe(&expected, slot.dtype());
            let found = describe(tensor.dims(), tensor.dtype());
            match lenient_head {
                Some(h) => {
                    let reason = format!("{name}: model {model}, checkpoint {found}");
                    reinit.entry(h).or_insert(reason);
                }
                None => mismatch.mismatched.push(TensorMismatch {
                    name: name.clone(),
                    model,
                    checkpoint: found,
                }),
            }
        }
        let aux = format!("{AUX_PREFIX}.");
        for name in checkpoint.into_keys() {
            if !options.strict && name.starts_with(&aux) {
                report.ignored.push(name);
            } else {
                mismatch.unexpected.push(name);
            }
        }
        if !mismatch.is_empty() {
            return Err(ModelError::IncompatibleWeights(Box::new(mismatch)));
        }
        for (slot, tensor, head) in plan {
            if head.is_some_and(|h| reinit.contains_key(&h)) {
                continue;
            }
            slot.set(&tensor, &self.device)?;
            report.loaded += 1;
        }
        let zero = Tensor::new(0i64, &Device::Cpu)?;
        for slot in counters_to_zero {
            slot.set(&zero, &self.device)?;
        }
        for (h, reason) in reinit {
            self.heads[h].reinit(&mut self.rng)?;
            report.reinitialised_heads.push(ReinitialisedHead {
                head: self.heads[h].spec.name.clone(),
                reason,
            });
        }
        Ok(report)
    }

    /// Removes DataParallel's prefix and renames legacy DenseNet keys.
    fn normalise_names(
        &self,
        tensors: Vec<(String, Tensor)>,
        report: &mut LoadReport,
    ) -> Result<BTreeMap<String, Tensor>> {
        const PREFIX: &str = "module.";
        report.stripped_module_prefix =
            !tensors.is_empty() && tensors.iter().all(|(n, _)| n.starts_with(PREFIX));
        let densenet = matches!(self.config.arch, Architecture::DenseNet(_));
        let mut map = BTreeMap::new();
        for (name, tensor) in tensors {
            let mut name = match name.strip_prefix(PREFIX) {
                Some(rest) if report.stripped_module_prefix => rest.to_string(),
                _ => name,
            };
            if let Some(modern) = modern_densenet_name(&name).filter(|_| densenet) {
                name = modern;
                report.renamed_legacy_keys += 1;
            }
            if map.contains_key(&name) {
                return Err(ModelError::InvalidInput(format!(
                    "the checkpoint holds {name} twice (after removing 'module.' and renaming \
                     legacy keys); clean it up in PyTorch first"
                )));
            }
            map.insert(name, tensor);
        }
        Ok(map)
    }

    /// Writes a safetensors checkpoint with torchvision names and cxr metadata, atomically.
    pub fn save(&self, path: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        let path = path.as_ref();
        let mut config = self.config.clone();
        let aux_heads = if options.drop_aux_heads {
            config.heads.truncate(1);
            &self.heads[1..]
        } else {
            &[]
        };
        let tensors = self
            .state
            .entries()
            .iter()
            .filter(|(name, _)| !aux_heads.iter().any(|h| h.owns(name)))
            .map(|(name, slot)| Ok((name.clone(), slot.value()?.to_device(&Device::Cpu)?)))
            .collect::<Result<Vec<_>>>()?;
        let metadata = CheckpointMetadata {
            config,
            training_config: options.training_config.clone(),
            code_revision: options.code_revision.clone(),
        };
        write_weights(path, &tensors, Some(metadata.to_map()?))
    }

    /// Builds the model a cxr checkpoint describes and loads it strictly.
    pub fn from_checkpoint(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(Self, CheckpointMetadata)> {
        let path = path.as_ref();
        let metadata = read_metadata(path)?;
        let mut model = Self::new(metadata.config.clone(), device, 0)?;
        model.load(path, LoadOptions::strict())?;
        Ok((model, metadata))
    }
}

/// Whether a checkpoint's `[O, 3, k, k]` first convolution can be summed into the model's
/// `[O, 1, k, k]`.
fn is_rgb_version_of(found: &[usize], expected: &[usize]) -> bool {
    found.len() == 4
        && expected.len() == 4
        && found[1] == 3
        && expected[1] == 1
        && found[0] == expected[0]
        && found[2..] == expected[2..]
}

/// What [`Model::save`] records besides the tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Leave out the auxiliary heads (`heads.*`), so the file is a plain torchvision
    /// `state_dict` that `load_state_dict` accepts with `strict=True`.
    pub drop_aux_heads: bool,
    /// Free-form training configuration (learning rate, data split, ...), stored as JSON.
    pub training_config: BTreeMap<String, String>,
    /// Revision of the code that trained the model (e.g. a git commit).
    pub code_revision: Option<String>,
}

/// The metadata of a cxr checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMetadata {
    /// Architecture, input channels and heads (with class names) of the saved model.
    pub config: ModelConfig,
    /// As passed in [`SaveOptions::training_config`].
    pub training_config: BTreeMap<String, String>,
    /// As passed in [`SaveOptions::code_revision`].
    pub code_revision: Option<String>,
}

const FORMAT: &str = "cxr-models/1";

impl CheckpointMetadata {
    /// The safetensors `__metadata__` entries (all strings; structured values as JSON).
    fn to_map(&self) -> Result<HashMap<String, String>> {
        let json = |value: serde_json::Result<String>| {
            value.map_err(|e| ModelError::InvalidInput(format!("cannot encode metadata: {e}")))
        };
        let mut map = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("architecture".to_string(), self.config.arch.to_string()),
            (
                "architecture_config".to_string(),
                json(serde_json::to_string(&self.config.arch))?,
            ),
            (
                "in_channels".to_string(),
                self.config.in_channels.to_string(),
            ),
            (
                "heads".to_string(),
                json(serde_json::to_string(&self.config.heads))?,
            ),
            (
                "training_config".to_string(),
                json(serde_json::to_string(&self.training_config))?,
            ),
        ]);
        if let Some(revision) = &self.code_revision {
            map.insert("code_revision".to_string(), revision.clone());
        }
        Ok(map)
    }

    fn from_map(map: &HashMap<String, String>) -> std::result::Result<Self, String> {
        let get = |key: &str| map.get(key).ok_or_else(|| format!("no {key:?} entry"));
        match map.get("format") {
            Some(format) if format == FORMAT => {}
            Some(other) => return Err(format!("format {other:?}, expected {FORMAT:?}")),
            None => {
                return Err(
                    "it was not written by cxr-models (a plain torchvision state_dict?); \
                            build the model from its configuration and use Model::load"
                        .into(),
                )
            }
        }
        let arch: Architecture = serde_json::from_str(get("architecture_config")?)
            .map_err(|e| format!("architecture_config: {e}"))?;
        let in_channels = get("in_channels")?
            .parse()
            .map_err(|e| format!("in_channels: {e}"))?;
        let heads: Vec<HeadSpec> =
            serde_json::from_str(get("heads")?).map_err(|e| format!("heads: {e}"))?;
        let training_config = serde_json::from_str(get("training_config")?)
            .map_err(|e| format!("training_config: {e}"))?;
        Ok(Self {
            config: ModelConfig {
                arch,
                in_channels,
                heads,
            },
            training_config,
            code_revision: map.get("code_revision").cloned(),
        })
    }
}

/// Reads the metadata [`Model::save`] wrote, from the file's header only.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<CheckpointMetadata> {
    let path = path.as_ref();
    let err = |reason: String| ModelError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    // A file that is not there, or not readable, is that, not a checkpoint without metadata.
    if let Err(e) = File::open(path) {
        return Err(ModelError::ReadWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        });
    }
    let header = read_safetensors_header(path).map_err(|e| err(e.to_string()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| err(format!("the safetensors header is not JSON: {e}")))?;
    let map: HashMap<String, String> = match header.get("__metadata__") {
        Some(meta) => serde_json::from_value(meta.clone())
            .map_err(|e| err(format!("__metadata__ is not a string map: {e}")))?,
        None => HashMap::new(),
    };
    CheckpointMetadata::from_map(&map).map_err(err)
}

/// The JSON header of a safetensors file: an u64 little-endian length, then that many bytes.
fn read_safetensors_header(path: &Path) -> std::io::Result<Vec<u8>> {
    const MAX_HEADER: u64 = 100 << 20;
    let mut file = File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(std::io::Error::other(
            "not a safetensors file (implausible header length)",
        ));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_legacy_densenet_keys_only() {
        assert_eq!(
            modern_densenet_name("features.denseblock1.denselayer12.norm.2.running_var").as_deref(),
            Some("features.denseblock1.denselayer12.norm2.running_var")
        );
        assert_eq!(
            modern_densenet_name("features.denseblock4.denselayer1.conv.1.weight").as_deref(),
            Some("features.denseblock4.denselayer1.conv1.weight")
        );
        assert_eq!(
            modern_densenet_name("features.denseblock1.denselayer1.norm1.weight"),
            None
        );
        assert_eq!(
            modern_densenet_name("features.transition1.norm.weight"),
            None
        );
        assert_eq!(modern_densenet_name("layer1.0.conv1.weight"), None);
    }

    #[test]
    fn a_missing_checkpoint_is_named_missing() {
        let e = read_metadata("no/such/checkpoint.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read weights from no/such/checkpoint.safetensors")
                && e.contains("No such file")
                && !e.contains("metadata"),
            "{e}"
        );
    }

    #[test]
    fn metadata_without_format_explains_itself() {
        let err = CheckpointMetadata::from_map(&HashMap::new()).unwrap_err();
        assert!(err.contains("Model::load"), "{err}");
    }
}
