//! Loading weights by checkpoint name, from Hugging Face checkpoint directories.
//!
//! The model's structure mirrors the keys, so loading walks the config and asks a
//! [`TensorSource`] for each name; shapes are checked and errors name the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::SwitchModel;
use super::attention::Attention;
use super::config::{Stack as StackKind, SwitchConfig};
use super::layers::{DenseActDense, LayerNorm};
use super::routing::{Router, SparseMlp};
use super::stack::{Block, Stack};
use crate::CoreError;
use crate::shards::files::ConvertedDir;
use crate::shards::manifest::Manifest;
use crate::shards::safetensors::SafetensorsFile;
use crate::shards::store::{
    ExpertSource, ExpertStore, FileSource, LazyExperts, StoreOptions, verify,
};

/// A tensor on the host in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Where named tensors come from.
pub trait TensorSource {
    /// The tensor called `name`, or `None` when the source has no such name.
    ///
    /// # Errors
    /// I/O or format errors, naming the tensor and the file.
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError>;
}

/// Decodes little-endian floats of safetensors dtype `dtype` (`F32`, `F16`, `BF16`) to f32.
///
/// # Errors
/// [`CoreError::Weights`] naming the tensor for other dtypes.
pub fn decode_floats_named(dtype: &str, bytes: &[u8], name: &str) -> Result<Vec<f32>, CoreError> {
    Ok(match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(CoreError::Weights(format!(
                "tensor {name} has dtype {other}; expected F32, F16 or BF16"
            )));
        }
    })
}

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

/// Builds the model from `source` on `device`.
///
/// # Errors
/// [`CoreError::Weights`] naming a missing tensor or one whose shape is not what the config
/// implies.
pub fn load_model(
    config: &SwitchConfig,
    source: &mut dyn TensorSource,
    device: &Device,
) -> Result<SwitchModel, CoreError> {
    load_model_with(config, source, device, None)
}

/// Builds the model with its dense weights from `source` and, when `lazy` is given, its experts
/// left to the store (fetched when first routed to).
///
/// # Errors
/// As [`load_model`].
pub fn load_model_with(
    config: &SwitchConfig,
    source: &mut dyn TensorSource,
    device: &Device,
    lazy: Option<Arc<ExpertStore>>,
) -> Result<SwitchModel, CoreError> {
    let mut loader = Loader {
        source,
        device,
        lazy,
    };
    let d = config.d_model;
    let shared = match loader.try_param::<2>("shared.weight", [config.vocab_size, d])? {
        Some(p) => p,
        None => loader.param("encoder.embed_tokens.weight", [config.vocab_size, d])?,
    };
    let encoder = loader.stack(config, StackKind::Encoder)?;
    let decoder = loader.stack(config, StackKind::Decoder)?;
    let (lm_head, output_scale) = if config.tie_word_embeddings {
        (None, (d as f64).powf(-0.5))
    } else {
        (
            Some(loader.param("lm_head.weight", [config.vocab_size, d])?),
            1.0,
        )
    };
    Ok(SwitchModel {
        shared,
        encoder,
        decoder,
        lm_head,
        output_scale,
    })
}

struct Loader<'a> {
    source: &'a mut dyn TensorSource,
    device: &'a Device,
    lazy: Option<Arc<ExpertStore>>,
}

impl Loader<'_> {
    fn try_param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Option<Param<Tensor<D>>>, CoreError> {
        let Some(t) = self.source.get(name)? else {
            return Ok(None);
        };
        if t.shape != shape {
            return Err(CoreError::Weights(format!(
                "tensor {name} has shape {:?}; the config implies {shape:?}",
                t.shape
            )));
        }
        let tensor = Tensor::<D>::from_data(TensorData::new(t.data, shape), self.device);
        Ok(Some(Param::from_tensor(tensor)))
    }

    fn param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<D>>, CoreError> {
        self.try_param(name, shape)?.ok_or_else(|| {
            CoreError::Weights(format!("tensor {name} is missing from the checkpoint"))
        })
    }

    fn norm(&mut self, name: &str, config: &SwitchConfig) -> Result<LayerNorm, CoreError> {
        Ok(LayerNorm {
            weight: self.param(name, [config.d_model])?,
            eps: config.layer_norm_epsilon,
        })
    }

    fn attention(
        &mut self,
        prefix: &str,
        config: &SwitchConfig,
        with_bias: bool,
    ) -> Result<Attention, CoreError> {
        let (d, inner) = (config.d_model, config.num_heads * config.d_kv);
        Ok(Attention {
            q: self.param(&format!("{prefix}.q.weight"), [inner, d])?,
            k: self.param(&format!("{prefix}.k.weight"), [inner, d])?,
            v: self.param(&format!("{prefix}.v.weight"), [inner, d])?,
            o: self.param(&format!("{prefix}.o.weight"), [d, inner])?,
            relative_attention_bias: if with_bias {
                Some(self.param(
                    &format!("{prefix}.relative_attention_bias.weight"),
                    [config.relative_attention_num_buckets, config.num_heads],
                )?)
            } else {
                None
            },
            n_heads: config.num_heads,
            d_kv: config.d_kv,
        })
    }

    fn ffn(&mut self, prefix: &str, config: &SwitchConfig) -> Result<DenseActDense, CoreError> {
        Ok(DenseActDense {
            wi: self.param(
                &format!("{prefix}.wi.weight"),
                [config.d_ff, config.d_model],
            )?,
            wo: self.param(
                &format!("{prefix}.wo.weight"),
                [config.d_model, config.d_ff],
            )?,
        })
    }

    fn stack(&mut self, config: &SwitchConfig, kind: StackKind) -> Result<Stack, CoreError> {
        let s = kind.as_str();
        let mut blocks = Vec::new();
        for i in 0..config.layers(kind) {
            let p = format!("{s}.block.{i}.layer");
            let self_attention = self.attention(&format!("{p}.0.SelfAttention"), config, i == 0)?;
            let self_attention_norm = self.norm(&format!("{p}.0.layer_norm.weight"), config)?;
            let (cross_attention, cross_attention_norm, ff) = match kind {
                StackKind::Encoder => (None, None, 1),
                StackKind::Decoder => (
                    Some(self.attention(&format!("{p}.1.EncDecAttention"), config, false)?),
                    Some(self.norm(&format!("{p}.1.layer_norm.weight"), config)?),
                    2,
                ),
            };
            let (dense, sparse) = if config.is_sparse(kind, i) {
                let router = Router {
                    weight: self.param(
                        &format!("{p}.{ff}.mlp.router.classifier.weight"),
                        [config.num_experts, config.d_model],
                    )?,
                    bias: if config.router_bias {
                        Some(self.param(
                            &format!("{p}.{ff}.mlp.router.classifier.bias"),
                            [config.num_experts],
                        )?)
                    } else {
                        None
                    },
                };
                let (experts, lazy) = match &self.lazy {
                    Some(store) => (
                        Vec::new(),
                        Some(LazyExperts {
                            store: store.clone(),
                            stack: kind,
                            block: i,
                        }),
                    ),
                    None => (
                        (0..config.num_experts)
                            .map(|e| self.ffn(&format!("{p}.{ff}.mlp.experts.expert_{e}"), config))
                            .collect::<Result<_, _>>()?,
                        None,
                    ),
                };
                (
                    None,
                    Some(SparseMlp {
                        router,
                        experts,
                        lazy,
                    }),
                )
            } else {
                (Some(self.ffn(&format!("{p}.{ff}.mlp"), config)?), None)
            };
            let ff_norm = self.norm(&format!("{p}.{ff}.layer_norm.weight"), config)?;
            blocks.push(Block {
                self_attention,
                self_attention_norm,
                cross_attention,
                cross_attention_norm,
                dense,
                sparse,
                ff_norm,
            });
        }
        let final_layer_norm = self.norm(&format!("{s}.final_layer_norm.weight"), config)?;
        Ok(Stack {
            block: blocks,
            final_layer_norm,
        })
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
        Box::new(crate::torch_pickle::TorchFile::open(
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

/// Loads a Hugging Face checkpoint directory onto `device`.
///
/// # Errors
/// As [`open_hf_source`], and [`CoreError::Weights`] for weights that do not fit the config.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(SwitchConfig, SwitchModel), CoreError> {
    let (config, mut source) = open_hf_source(dir)?;
    let model = load_model(&config, source.as_mut(), device)?;
    Ok((config, model))
}

/// Loads either kind of model directory: a converted Switchscope model (`manifest.json`, every
/// file checked against its SHA-256) or a Hugging Face checkpoint.
///
/// # Errors
/// As [`load_hf_dir`], plus [`CoreError::Manifest`] and [`CoreError::Shard`].
pub fn load_model_dir(
    dir: &Path,
    device: &Device,
) -> Result<(SwitchConfig, SwitchModel), CoreError> {
    if dir.join("manifest.json").is_file() {
        let mut source = ConvertedDir::open(dir)?;
        let config = source.manifest.config.clone();
        let model = load_model(&config, &mut source, device)?;
        return Ok((config, model));
    }
    load_hf_dir(dir, device)
}

/// Loads a converted model directory with its dense weights now and each expert on demand:
/// a shard is read (and checked) only when the router first sends a token to its expert.
///
/// # Errors
/// [`CoreError::Manifest`], [`CoreError::Shard`] (dense file), [`CoreError::Weights`].
pub fn load_converted_lazy(
    dir: &Path,
    device: &Device,
) -> Result<(SwitchConfig, SwitchModel, Arc<ExpertStore>), CoreError> {
    load_converted_lazy_with(dir, device, StoreOptions::default())
}

/// [`load_converted_lazy`] with the store's budget, prefetch and listener.
///
/// # Errors
/// As [`load_converted_lazy`].
pub fn load_converted_lazy_with(
    dir: &Path,
    device: &Device,
    options: StoreOptions,
) -> Result<(SwitchConfig, SwitchModel, Arc<ExpertStore>), CoreError> {
    let mut dense = ConvertedDir::open(dir)?;
    let config = dense.manifest.config.clone();
    let store = Arc::new(ExpertStore::with_options(
        dense.manifest.clone(),
        Box::new(FileSource::new(dir)),
        device.clone(),
        options,
    ));
    let model = load_model_with(&config, &mut dense, device, Some(store.clone()))?;
    Ok((config, model, store))
}

/// Dense weights held in memory (a converted model's dense file, already verified).
#[derive(Debug)]
pub struct DenseBytes {
    manifest: Manifest,
    bytes: Vec<u8>,
    /// Tensor name → header entry and byte range in `bytes`.
    index: HashMap<
        String,
        (
            crate::shards::safetensors::TensorInfo,
            std::ops::Range<usize>,
        ),
    >,
    shapes: HashMap<String, Vec<usize>>,
}

impl DenseBytes {
    /// Indexes the dense file's safetensors `bytes`.
    ///
    /// # Errors
    /// [`CoreError::Shard`] naming the file when the bytes are not safetensors.
    pub fn new(manifest: &Manifest, bytes: Vec<u8>) -> Result<Self, CoreError> {
        let base = bytes.as_ptr() as usize;
        let index = crate::shards::safetensors::parse_bytes(&bytes)
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
            shapes: crate::shards::files::dense_shapes(manifest),
            manifest: manifest.clone(),
            bytes,
            index,
        })
    }
}

impl TensorSource for DenseBytes {
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError> {
        let (index, bytes) = (&self.index, &self.bytes);
        crate::shards::files::read_dense(
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

/// Loads a converted model from any [`ExpertSource`] (e.g. HTTP in the browser): the dense
/// file is fetched and checked now; experts are fetched when first routed to.
///
/// # Errors
/// [`CoreError::Manifest`] for an invalid manifest, [`CoreError::Shard`] for the dense file,
/// [`CoreError::Weights`].
pub async fn load_converted(
    manifest: Manifest,
    source: Box<dyn ExpertSource>,
    device: &Device,
    options: StoreOptions,
) -> Result<(SwitchConfig, SwitchModel, Arc<ExpertStore>), CoreError> {
    manifest.validate()?;
    let entry = manifest
        .file(&manifest.dense)
        .ok_or_else(|| CoreError::Manifest(format!("dense file {} is not listed", manifest.dense)))?
        .clone();
    let fetched = source.fetch(&entry).await?;
    verify(&entry, &fetched.bytes)?;
    let mut dense = DenseBytes::new(&manifest, fetched.bytes)?;
    let config = manifest.config.clone();
    let store = Arc::new(ExpertStore::with_options(
        manifest,
        source,
        device.clone(),
        options,
    ));
    let model = load_model_with(&config, &mut dense, device, Some(store.clone()))?;
    Ok((config, model, store))
}
