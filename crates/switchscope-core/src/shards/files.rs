//! Reading a converted model directory from the file system, checking every file's size and
//! SHA-256 against the manifest before its bytes are used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::safetensors::SafetensorsFile;
use super::store::{decode_matrix, verify};
use crate::CoreError;
use crate::model::weights::{HostTensor, TensorSource, decode_floats_named};

/// A converted model directory as a [`TensorSource`] under the checkpoint's names.
#[derive(Debug)]
pub struct ConvertedDir {
    dir: PathBuf,
    pub manifest: Manifest,
    dense: SafetensorsFile,
    /// Expert files read so far (in order), for callers that account for what was loaded.
    pub opened: Vec<String>,
    experts: HashMap<String, (String, String)>,
}

/// Reads `name` from `dir` and checks it against its manifest entry.
///
/// # Errors
/// [`CoreError::Shard`] naming the file: missing, wrong size (truncated), or wrong SHA-256.
pub fn read_verified(dir: &Path, manifest: &Manifest, name: &str) -> Result<Vec<u8>, CoreError> {
    let entry = manifest.file(name).ok_or_else(|| CoreError::Shard {
        file: name.to_owned(),
        reason: "is not listed in the manifest".into(),
    })?;
    let bytes = std::fs::read(dir.join(name)).map_err(|e| CoreError::Shard {
        file: name.to_owned(),
        reason: format!("cannot be read: {e}"),
    })?;
    verify(entry, &bytes)?;
    Ok(bytes)
}

impl ConvertedDir {
    /// Opens `dir/manifest.json` and the dense weights (verified).
    ///
    /// # Errors
    /// [`CoreError::Manifest`] or [`CoreError::Shard`].
    pub fn open(dir: &Path) -> Result<Self, CoreError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
        let manifest = Manifest::from_json(&text)?;
        read_verified(dir, &manifest, &manifest.dense)?;
        let dense = SafetensorsFile::open(&dir.join(&manifest.dense))?;
        let mut experts = HashMap::new();
        for e in &manifest.experts {
            let prefix = super::convert::expert_prefix(e.stack, e.block, e.expert);
            for m in ["wi", "wo"] {
                experts.insert(
                    format!("{prefix}.{m}.weight"),
                    (e.file.clone(), m.to_owned()),
                );
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
            dense,
            opened: Vec::new(),
            experts,
        })
    }

    /// Reads expert matrix `matrix` (`wi` or `wo`) from its verified shard, in f32.
    fn expert(&mut self, file: &str, matrix: &str) -> Result<HostTensor, CoreError> {
        let bytes = read_verified(&self.dir, &self.manifest, file)?;
        self.opened.push(file.to_owned());
        let (data, shape) = decode_matrix(&self.manifest, file, &bytes, matrix)?;
        Ok(HostTensor {
            data,
            shape: shape.to_vec(),
        })
    }
}

impl TensorSource for ConvertedDir {
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError> {
        if let Some((file, matrix)) = self.experts.get(name).cloned() {
            return self.expert(&file, &matrix).map(Some);
        }
        match self.dense.read(name)? {
            Some((info, raw)) => Ok(Some(HostTensor {
                data: decode_floats_named(&info.dtype, &raw, name)?,
                shape: info.shape,
            })),
            None => Ok(None),
        }
    }
}
