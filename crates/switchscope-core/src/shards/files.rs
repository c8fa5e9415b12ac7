//! Reading a converted model directory from the file system, checking every file's size and
//! SHA-256 against the manifest before its bytes are used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::quant::{Quantized, Scheme};
use super::safetensors::{SafetensorsFile, parse_bytes};
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
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| CoreError::Shard {
        file: name.to_owned(),
        reason: format!("cannot be read: {e}"),
    })?;
    if bytes.len() as u64 != entry.bytes {
        return Err(CoreError::Shard {
            file: name.to_owned(),
            reason: format!(
                "has {} bytes; the manifest says {} (truncated?)",
                bytes.len(),
                entry.bytes
            ),
        });
    }
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != entry.sha256 {
        return Err(CoreError::Shard {
            file: name.to_owned(),
            reason: "does not match its sha256 (corrupt)".into(),
        });
    }
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
        let shard = |what: String| CoreError::Shard {
            file: file.to_owned(),
            reason: what,
        };
        // Parsed from the verified bytes, not from the file again.
        let tensors = parse_bytes(&bytes).map_err(shard)?;
        let get = |name: String| {
            tensors
                .get(&name)
                .ok_or_else(|| shard(format!("has no {name}")))
        };
        let q = &self.manifest.quantization;
        match q.experts {
            Scheme::F32 | Scheme::F16 => {
                let (info, raw) = get(format!("{matrix}.weight"))?;
                Ok(HostTensor {
                    data: decode_floats_named(&info.dtype, raw, matrix)?,
                    shape: info.shape.clone(),
                })
            }
            scheme => {
                let (qinfo, qraw) = get(format!("{matrix}.qweight"))?;
                let (sinfo, sraw) = get(format!("{matrix}.scales"))?;
                let rows = qinfo.shape[0];
                let cols = self.matrix_cols(matrix);
                let quantized = Quantized {
                    rows,
                    cols,
                    group_size: q.group_size,
                    scheme,
                    data: qraw.to_vec(),
                    scales: decode_floats_named(&sinfo.dtype, sraw, matrix)?,
                };
                if quantized.data.len()
                    != rows * super::quant::padded_cols(cols, q.group_size)
                        / if scheme == Scheme::Int4 { 2 } else { 1 }
                {
                    return Err(shard(format!(
                        "{matrix}.qweight has the wrong size for the manifest's scheme"
                    )));
                }
                Ok(HostTensor {
                    data: quantized.dequantize(),
                    shape: vec![rows, cols],
                })
            }
        }
    }

    fn matrix_cols(&self, matrix: &str) -> usize {
        if matrix == "wi" {
            self.manifest.config.d_model
        } else {
            self.manifest.config.d_ff
        }
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
