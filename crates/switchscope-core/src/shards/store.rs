//! On-demand experts: a sparse layer asks the [`ExpertStore`] for an expert only after its
//! router has sent a token to it; the store fetches the shard from an [`ExpertSource`]
//! (files natively, HTTP in the browser), checks its size and SHA-256, decodes it onto the
//! device and keeps it resident.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use sha2::{Digest, Sha256};

use super::manifest::{FileEntry, Manifest};
use super::quant::{Quantized, Scheme};
use super::safetensors::parse_bytes;
use crate::CoreError;
use crate::model::StackKind;
use crate::model::layers::DenseActDense;
use crate::model::weights::decode_floats_named;

/// A future returning a shard's bytes.
pub type ShardFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, CoreError>> + 'a>>;

/// Where shard bytes come from.
pub trait ExpertSource: fmt::Debug + Send + Sync {
    /// The bytes of `file` (checked by the caller against the manifest).
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a>;
}

/// Shards in a local directory.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub dir: PathBuf,
}

impl ExpertSource for FileSource {
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a> {
        Box::pin(async move {
            std::fs::read(self.dir.join(&file.name)).map_err(|e| CoreError::Shard {
                file: file.name.clone(),
                reason: format!("cannot be read: {e}"),
            })
        })
    }
}

/// Checks shard bytes against their manifest entry.
///
/// # Errors
/// [`CoreError::Shard`]: wrong size (truncated) or wrong SHA-256 (corrupt).
pub fn verify(entry: &FileEntry, bytes: &[u8]) -> Result<(), CoreError> {
    if bytes.len() as u64 != entry.bytes {
        return Err(CoreError::Shard {
            file: entry.name.clone(),
            reason: format!(
                "has {} bytes; the manifest says {} (truncated?)",
                bytes.len(),
                entry.bytes
            ),
        });
    }
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != entry.sha256 {
        return Err(CoreError::Shard {
            file: entry.name.clone(),
            reason: "does not match its sha256 (corrupt)".into(),
        });
    }
    Ok(())
}

/// Decodes one matrix (`wi` or `wo`) of an expert shard to f32, `[rows, cols]`.
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or malformed.
pub fn decode_matrix(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    matrix: &str,
) -> Result<(Vec<f32>, [usize; 2]), CoreError> {
    let shard = |what: String| CoreError::Shard {
        file: file.to_owned(),
        reason: what,
    };
    let tensors = parse_bytes(bytes).map_err(shard)?;
    let get = |name: String| {
        tensors
            .get(&name)
            .ok_or_else(|| shard(format!("has no {name}")))
    };
    let c = &manifest.config;
    let (rows, cols) = if matrix == "wi" {
        (c.d_ff, c.d_model)
    } else {
        (c.d_model, c.d_ff)
    };
    let q = &manifest.quantization;
    let data = match q.experts {
        Scheme::F32 | Scheme::F16 => {
            let (info, raw) = get(format!("{matrix}.weight"))?;
            if info.shape != [rows, cols] {
                return Err(shard(format!(
                    "{matrix}.weight has shape {:?}, expected {:?}",
                    info.shape,
                    [rows, cols]
                )));
            }
            decode_floats_named(&info.dtype, raw, matrix)?
        }
        scheme => {
            let (_, qraw) = get(format!("{matrix}.qweight"))?;
            let (sinfo, sraw) = get(format!("{matrix}.scales"))?;
            let padded = super::quant::padded_cols(cols, q.group_size);
            let per_row = if scheme == Scheme::Int4 {
                padded / 2
            } else {
                padded
            };
            let scales = decode_floats_named(&sinfo.dtype, sraw, matrix)?;
            if qraw.len() != rows * per_row || scales.len() != rows * (padded / q.group_size) {
                return Err(shard(format!(
                    "{matrix} has the wrong size for {} with group {}",
                    scheme.as_str(),
                    q.group_size
                )));
            }
            Quantized {
                rows,
                cols,
                group_size: q.group_size,
                scheme,
                data: qraw.to_vec(),
                scales,
            }
            .dequantize()
        }
    };
    Ok((data, [rows, cols]))
}

/// Something that happened to a shard, for the UI and for accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// Fetched, verified and resident: `bytes` from the source.
    Loaded { file: String, bytes: u64 },
    /// The fetch or the check failed.
    Failed { file: String, reason: String },
}

/// Experts of a converted model, loaded on first use and kept on the device.
pub struct ExpertStore {
    manifest: Manifest,
    source: Box<dyn ExpertSource>,
    device: Device,
    resident: Mutex<HashMap<(StackKind, usize, usize), Arc<DenseActDense>>>,
    events: Mutex<Vec<ShardEvent>>,
}

impl fmt::Debug for ExpertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resident = self
            .resident
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("ExpertStore")
            .field("source", &self.source)
            .field("resident", &resident)
            .finish()
    }
}

impl ExpertStore {
    pub fn new(manifest: Manifest, source: Box<dyn ExpertSource>, device: Device) -> Self {
        Self {
            manifest,
            source,
            device,
            resident: Mutex::default(),
            events: Mutex::default(),
        }
    }

    /// The manifest the store serves.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What has happened so far, in order.
    pub fn events(&self) -> Vec<ShardEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The shard files loaded so far, in order.
    pub fn loaded_files(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ShardEvent::Loaded { file, .. } => Some(file),
                ShardEvent::Failed { .. } => None,
            })
            .collect()
    }

    fn record(&self, event: ShardEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// The expert, fetching and decoding its shard the first time it is asked for.
    ///
    /// # Errors
    /// [`CoreError::Shard`] when the shard is missing, truncated or corrupt (nothing is kept),
    /// [`CoreError::Manifest`] when the manifest has no such expert.
    pub async fn expert(
        &self,
        stack: StackKind,
        block: usize,
        expert: usize,
    ) -> Result<Arc<DenseActDense>, CoreError> {
        let key = (stack, block, expert);
        if let Some(e) = self
            .resident
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(e.clone());
        }
        let entry = self.manifest.expert(stack, block, expert).ok_or_else(|| {
            CoreError::Manifest(format!(
                "the manifest has no expert {expert} of {} block {block}",
                stack.as_str()
            ))
        })?;
        let file = self
            .manifest
            .file(&entry.file)
            .ok_or_else(|| {
                CoreError::Manifest(format!("expert file {} is not listed", entry.file))
            })?
            .clone();
        let decoded = async {
            let bytes = self.source.fetch(&file).await?;
            verify(&file, &bytes)?;
            let tensor = |matrix: &str| -> Result<Param<Tensor<2>>, CoreError> {
                let (data, shape) = decode_matrix(&self.manifest, &file.name, &bytes, matrix)?;
                Ok(Param::from_tensor(Tensor::from_data(
                    TensorData::new(data, shape),
                    &self.device,
                )))
            };
            Ok::<_, CoreError>((
                DenseActDense {
                    wi: tensor("wi")?,
                    wo: tensor("wo")?,
                },
                bytes.len() as u64,
            ))
        }
        .await;
        match decoded {
            Ok((module, bytes)) => {
                let module = Arc::new(module);
                self.resident
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, module.clone());
                self.record(ShardEvent::Loaded {
                    file: file.name.clone(),
                    bytes,
                });
                Ok(module)
            }
            Err(e) => {
                self.record(ShardEvent::Failed {
                    file: file.name.clone(),
                    reason: e.to_string(),
                });
                Err(e)
            }
        }
    }
}

/// A sparse layer's handle on the store.
#[derive(Debug, Clone)]
pub struct LazyExperts {
    pub store: Arc<ExpertStore>,
    pub stack: StackKind,
    pub block: usize,
}
