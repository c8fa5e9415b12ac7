//! Hugging Face checkpoint directories: `config.json` with `model.safetensors`, the shards of
//! `model.safetensors.index.json`, or `pytorch_model.bin`, read by checkpoint name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::safetensors::SafetensorsFile;
use super::tensor::{HostTensor, TensorSource, decode_floats_named};
use crate::CoreError;
use crate::config::SwitchConfig;

/// One or more `.safetensors` files (a single `model.safetensors` or the shards named by
/// `model.safetensors.index.json`). Headers are read once; each tensor is read on request, so
/// memory holds one tensor at a time.
#[derive(Debug, Default)]
pub struct SafetensorsFiles {
    /// Tensor name → file.
    index: HashMap<String, PathBuf>,
    /// Single-file mode: every name is looked up in this file.
    single: Option<PathBuf>,
    open: HashMap<PathBuf, SafetensorsFile>,
}

impl SafetensorsFiles {
    /// A single safetensors file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            single: Some(path.into()),
            ..Self::default()
        }
    }

    /// The shards listed by an index file (`weight_map`: name → file name).
    ///
    /// # Errors
    /// [`CoreError::Io`] or [`CoreError::Weights`] when the index is missing or malformed.
    pub fn sharded(index_path: &Path) -> Result<Self, CoreError> {
        let text = std::fs::read_to_string(index_path).map_err(|e| CoreError::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CoreError::Weights(format!("{}: {e}", index_path.display())))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                CoreError::Weights(format!("{}: no weight_map", index_path.display()))
            })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut index = HashMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                CoreError::Weights(format!(
                    "{}: weight_map[{name}] is not a file name",
                    index_path.display()
                ))
            })?;
            index.insert(name.clone(), dir.join(file));
        }
        Ok(Self {
            index,
            ..Self::default()
        })
    }
}

impl TensorSource for SafetensorsFiles {
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError> {
        let Some(path) = self
            .single
            .clone()
            .or_else(|| self.index.get(name).cloned())
        else {
            return Ok(None);
        };
        if !self.open.contains_key(&path) {
            let file = SafetensorsFile::open(&path)?;
            self.open.insert(path.clone(), file);
        }
        let file = self.open.get_mut(&path).expect("just opened");
        let Some((info, bytes)) = file.read(name)? else {
            return Ok(None);
        };
        let data = decode_floats_named(&info.dtype, &bytes, name)?;
        Ok(Some(HostTensor {
            shape: info.shape,
            data,
        }))
    }
}

/// Opens a Hugging Face checkpoint directory's config and weights: `config.json` plus
/// `model.safetensors`, `model.safetensors.index.json` (sharded) or `pytorch_model.bin`.
///
/// # Errors
/// [`CoreError::Io`] for a missing file, [`CoreError::Config`] for a bad config,
/// [`CoreError::Weights`] when no weights file is there.
pub fn open_hf_source(dir: &Path) -> Result<(SwitchConfig, Box<dyn TensorSource>), CoreError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| CoreError::io(&config_path, e))?;
    let config = SwitchConfig::from_json(&text)?;
    let source: Box<dyn TensorSource> = if dir.join("model.safetensors").is_file() {
        Box::new(SafetensorsFiles::file(dir.join("model.safetensors")))
    } else if dir.join("model.safetensors.index.json").is_file() {
        Box::new(SafetensorsFiles::sharded(
            &dir.join("model.safetensors.index.json"),
        )?)
    } else if dir.join("pytorch_model.bin").is_file() {
        Box::new(super::torch_pickle::TorchFile::open(
            &dir.join("pytorch_model.bin"),
        )?)
    } else {
        return Err(CoreError::Weights(format!(
            "{} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
            dir.display()
        )));
    };
    Ok((config, source))
}
