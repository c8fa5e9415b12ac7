//! Reading a converted model's weights by checkpoint name: a directory on the file system
//! (every file's size and SHA-256 checked against the manifest before its bytes are used), or
//! the dense file's bytes already fetched and checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, verify};
use super::quant::Scheme;
use super::safetensors::{SafetensorsFile, TensorInfo, parse_bytes};
use super::shard::{decode_matrix, decode_stored, dense_tensors, expert_prefix};
use super::tensor::{HostTensor, TensorSource, decode_floats_named};
use crate::CoreError;

/// A converted model directory as a [`TensorSource`] under the checkpoint's names.
#[derive(Debug)]
pub struct ConvertedDir {
    dir: PathBuf,
    pub manifest: Manifest,
    dense: SafetensorsFile,
    /// Expert files read so far (in order), for callers that account for what was loaded.
    pub opened: Vec<String>,
    experts: HashMap<String, (String, String)>,
    shapes: HashMap<String, Vec<usize>>,
}

/// A stored tensor's header entry and bytes.
pub type RawTensor = (TensorInfo, Vec<u8>);

/// Dense tensor shapes by checkpoint name (to decode int8 dense matrices, stored padded).
pub fn dense_shapes(manifest: &Manifest) -> HashMap<String, Vec<usize>> {
    dense_tensors(&manifest.config).into_iter().collect()
}

/// Reads dense tensor `name` from `file` through `read`: as stored (`F32`/`F16`), or, for an
/// int8 dense manifest, from `{stem}.qweight` and `{stem}.scales`.
///
/// # Errors
/// [`CoreError::Shard`] naming the file for malformed tensors.
pub fn read_dense(
    manifest: &Manifest,
    shapes: &HashMap<String, Vec<usize>>,
    file: &str,
    name: &str,
    read: &mut dyn FnMut(&str) -> Result<Option<RawTensor>, CoreError>,
) -> Result<Option<HostTensor>, CoreError> {
    if let Some((info, raw)) = read(name)? {
        return Ok(Some(HostTensor {
            data: decode_floats_named(&info.dtype, &raw, name)?,
            shape: info.shape,
        }));
    }
    let Some(shape) = shapes.get(name) else {
        return Ok(None);
    };
    if manifest.quantization.dense != Scheme::Int8 || shape.len() != 2 {
        return Ok(None);
    }
    let stem = name.strip_suffix(".weight").unwrap_or(name);
    let (qname, sname) = (format!("{stem}.qweight"), format!("{stem}.scales"));
    let (Some(q), Some(scales)) = (read(&qname)?, read(&sname)?) else {
        return Ok(None);
    };
    let get = |n: &str| {
        if n == qname {
            Some((q.0.clone(), q.1.as_slice()))
        } else if n == sname {
            Some((scales.0.clone(), scales.1.as_slice()))
        } else {
            None
        }
    };
    let group = manifest.quantization.group_size;
    let data = decode_stored(file, stem, [shape[0], shape[1]], Scheme::Int8, group, &get)?;
    Ok(Some(HostTensor {
        shape: shape.clone(),
        data,
    }))
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
            let prefix = expert_prefix(e.stack, e.block, e.expert);
            for m in ["wi", "wo"] {
                experts.insert(
                    format!("{prefix}.{m}.weight"),
                    (e.file.clone(), m.to_owned()),
                );
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            shapes: dense_shapes(&manifest),
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
        let file = self.manifest.dense.clone();
        let dense = &mut self.dense;
        read_dense(&self.manifest, &self.shapes, &file, name, &mut |n| {
            dense.read(n)
        })
    }
}

/// Dense weights held in memory (a converted model's dense file, already verified).
#[derive(Debug)]
pub struct DenseBytes {
    manifest: Manifest,
    bytes: Vec<u8>,
    /// Tensor name → header entry and byte range in `bytes`.
    index: HashMap<String, (TensorInfo, std::ops::Range<usize>)>,
    shapes: HashMap<String, Vec<usize>>,
}

impl DenseBytes {
    /// Indexes the dense file's safetensors `bytes`.
    ///
    /// # Errors
    /// [`CoreError::Shard`] naming the file when the bytes are not safetensors.
    pub fn new(manifest: &Manifest, bytes: Vec<u8>) -> Result<Self, CoreError> {
        let base = bytes.as_ptr() as usize;
        let index = parse_bytes(&bytes)
            .map_err(|reason| CoreError::Shard {
                file: manifest.dense.clone(),
                reason,
            })?
            .into_iter()
            .map(|(name, (info, data))| {
                let start = data.as_ptr() as usize - base;
                (name, (info, start..start + data.len()))
            })
            .collect();
        Ok(Self {
            shapes: dense_shapes(manifest),
            manifest: manifest.clone(),
            bytes,
            index,
        })
    }
}

impl TensorSource for DenseBytes {
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError> {
        let (index, bytes) = (&self.index, &self.bytes);
        read_dense(
            &self.manifest,
            &self.shapes,
            &self.manifest.dense,
            name,
            &mut |n| {
                Ok(index
                    .get(n)
                    .map(|(info, range)| (info.clone(), bytes[range.clone()].to_vec())))
            },
        )
    }
}
