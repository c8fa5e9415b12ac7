//! A model read over HTTP where it lives. A Hugging Face checkpoint directory
//! (`config.json` with `model.safetensors`, `model.safetensors.index.json` or
//! `pytorch_model.bin`) is read by byte ranges: the files' headers, then the dense tensors, then
//! an expert's ranges only when the router picks it, through the same [`ExpertStore`] as a
//! converted model (budget, eviction, events, shard panel). A converted directory
//! (`manifest.json`) over HTTP is read file by file, each checked against its SHA-256.
//!
//! Integrity of a checkpoint: a hub file has no per-tensor hash, so each file's `ETag` and
//! length are recorded when it is opened and every range response must carry the same `ETag`
//! and a `Content-Range` for exactly the bytes asked, within the same length. This detects a
//! file that changed between requests and a truncated answer; unlike a converted model's
//! SHA-256s it does not prove the bytes are the ones the model's author published.
//!
//! HTTP itself, and the checks on every answer, are in [`super::http`].
//!
//! [`ExpertStore`]: super::store::ExpertStore

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchscope_wire::Origin;
use switchscope_wire::ranges::{dense_name, range_name};

use super::http::{RemoteFile, Traffic, Transport, get_file, http};
use super::source::{ExpertSource, Fetched, ShardFuture};
use crate::CoreError;
use crate::config::{Stack, SwitchConfig};
use crate::formats::convert::{ConvertOptions, expert_tensors};
use crate::formats::manifest::{
    ExpertEntry, FORMAT_NAME, FORMAT_VERSION, FileEntry, Manifest, Quantization,
};
use crate::formats::quant::Scheme;
use crate::formats::ranged::{TensorRange, coalesce, safetensors_ranges, torch_ranges};
use crate::formats::safetensors::serialize;
use crate::formats::shard::expert_prefix;
use crate::formats::tensor::{HostTensor, TensorSource, decode_floats_named};

/// One tensor of an expert in the bytes its source returns.
#[derive(Debug, Clone)]
struct Part {
    /// `wi` or `wo`.
    matrix: &'static str,
    /// Where its bytes start in the concatenation of the expert's ranges.
    offset: usize,
    range: TensorRange,
}

/// An expert's byte ranges, and where its tensors sit in them.
#[derive(Debug, Clone)]
struct ExpertRanges {
    /// (file, start, end), in the order their bytes are concatenated.
    ranges: Vec<(usize, u64, u64)>,
    parts: Vec<Part>,
}

/// A checkpoint's experts, fetched by byte range and turned into the store's shards (int8 on a
/// GPU, f32 on the CPU).
#[derive(Debug)]
pub struct RemoteExperts {
    files: Vec<Arc<RemoteFile>>,
    /// By the name the manifest gives the expert's "file": `{file}/{start}-{end}`.
    experts: HashMap<String, ExpertRanges>,
    options: ConvertOptions,
}

impl RemoteExperts {
    fn ranges_of(&self, file: &FileEntry) -> Result<&ExpertRanges, CoreError> {
        self.experts
            .get(&file.name)
            .ok_or_else(|| CoreError::Shard {
                file: file.name.clone(),
                reason: "is not one of the checkpoint's experts".into(),
            })
    }
}

impl ExpertSource for RemoteExperts {
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a> {
        Box::pin(async move {
            let expert = self.ranges_of(file)?;
            let mut bytes = Vec::with_capacity(file.bytes as usize);
            let mut all_cached = true;
            for &(f, start, end) in &expert.ranges {
                let (part, cached) = self.files[f].range(start, end).await?;
                all_cached &= cached;
                bytes.extend_from_slice(&part);
            }
            Ok(Fetched {
                bytes,
                origin: if all_cached {
                    Origin::Cache
                } else {
                    Origin::Network
                },
                prefetched: false,
            })
        })
    }

    /// Each range was checked against its file's `ETag` and length as it arrived.
    fn verify(&self, file: &FileEntry, bytes: &[u8]) -> Result<(), CoreError> {
        if bytes.len() as u64 == file.bytes {
            Ok(())
        } else {
            Err(CoreError::Shard {
                file: file.name.clone(),
                reason: format!(
                    "has {} bytes; its ranges add up to {}",
                    bytes.len(),
                    file.bytes
                ),
            })
        }
    }

    fn shard<'b>(&self, file: &FileEntry, bytes: &'b [u8]) -> Result<Cow<'b, [u8]>, CoreError> {
        let expert = self.ranges_of(file)?;
        let mut tensors = Vec::new();
        for part in &expert.parts {
            let r = &part.range;
            let raw = &bytes[part.offset..part.offset + r.bytes as usize];
            let t = HostTensor {
                shape: r.shape.clone(),
                data: decode_floats_named(&r.dtype, raw, part.matrix)?,
            };
            tensors.extend(expert_tensors(part.matrix, &t, &self.options)?);
        }
        let mut meta = BTreeMap::new();
        meta.insert(
            "scheme".to_owned(),
            self.options.experts.as_str().to_owned(),
        );
        meta.insert("group_size".to_owned(), self.options.group_size.to_string());
        Ok(Cow::Owned(serialize(&tensors, &meta)))
    }
}

/// The dense tensors of a checkpoint, fetched when it was opened.
#[derive(Debug, Default)]
pub struct RemoteDense(HashMap<String, HostTensor>);

impl TensorSource for RemoteDense {
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError> {
        Ok(self.0.get(name).cloned())
    }
}

/// A Hugging Face checkpoint opened over HTTP: what [`super::Switch::open`] needs.
#[derive(Debug)]
pub struct RemoteCheckpoint {
    /// Describes the experts as the store sees them: one entry per expert named by its file
    /// and byte range, sized by the bytes fetched for it, with no SHA-256 (see the module).
    pub manifest: Manifest,
    pub dense: RemoteDense,
    pub experts: RemoteExperts,
    /// `tokenizer.json`, when the directory has one.
    pub tokenizer: Option<Vec<u8>>,
    /// Bytes of the dense tensors (fetched at open).
    pub dense_bytes: u64,
    /// What crossed the network so far (headers, dense tensors, then experts as fetched).
    pub traffic: Arc<Traffic>,
}

impl RemoteCheckpoint {
    /// The checkpoint's weight files: name and length in bytes, as recorded at open.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64)> {
        self.experts.files.iter().map(|f| (f.name.as_str(), f.len))
    }
}

/// Which weights a checkpoint directory has, found by asking for each in turn.
async fn open_weights(
    base: &str,
    transport: &Arc<dyn Transport>,
    traffic: &Arc<Traffic>,
) -> Result<(Vec<Arc<RemoteFile>>, BTreeMap<String, TensorRange>), CoreError> {
    let open = |name: String| {
        let transport = transport.clone();
        let traffic = traffic.clone();
        async move {
            let url = format!("{base}{name}");
            RemoteFile::open(&url, &name, transport, traffic).await
        }
    };
    if let Some(file) = open("model.safetensors".into()).await? {
        let ranges = safetensors_ranges(0, &file).await?;
        return Ok((vec![Arc::new(file)], ranges));
    }
    let index_url = format!("{base}model.safetensors.index.json");
    if let Some(index) = get_file(transport.as_ref(), &index_url).await? {
        traffic.requests.fetch_add(1, Ordering::Relaxed);
        traffic
            .bytes
            .fetch_add(index.len() as u64, Ordering::Relaxed);
        let json: serde_json::Value = serde_json::from_slice(&index)
            .map_err(|e| http(&index_url, format!("not JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| http(&index_url, "has no weight_map"))?;
        let mut names: Vec<String> = Vec::new();
        for file in map.values() {
            let file = file.as_str().ok_or_else(|| {
                http(&index_url, "weight_map has a value that is not a file name")
            })?;
            crate::formats::manifest::check_name(file)
                .map_err(|e| http(&index_url, e.to_string()))?;
            if !names.iter().any(|n| n == file) {
                names.push(file.to_owned());
            }
        }
        names.sort();
        let mut files = Vec::new();
        let mut ranges = BTreeMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let url = format!("{base}{name}");
            let file = open(name)
                .await?
                .ok_or_else(|| http(&url, "is named by the index but not found (HTTP 404)"))?;
            ranges.extend(safetensors_ranges(i, &file).await?);
            files.push(Arc::new(file));
        }
        return Ok((files, ranges));
    }
    if let Some(file) = open("pytorch_model.bin".into()).await? {
        let ranges = torch_ranges(0, &file).await?;
        return Ok((vec![Arc::new(file)], ranges));
    }
    Err(http(
        base,
        "has none of model.safetensors, model.safetensors.index.json, pytorch_model.bin",
    ))
}

/// A tensor of `ranges`, checked against the shape the config implies.
fn tensor<'r>(
    ranges: &'r BTreeMap<String, TensorRange>,
    name: &str,
    shape: &[usize],
) -> Result<&'r TensorRange, CoreError> {
    let r = ranges.get(name).ok_or_else(|| {
        CoreError::Weights(format!("tensor {name} is missing from the checkpoint"))
    })?;
    if r.shape != shape {
        return Err(CoreError::Weights(format!(
            "tensor {name} has shape {:?}; the config implies {shape:?}",
            r.shape
        )));
    }
    Ok(r)
}

/// Opens the Hugging Face checkpoint directory at `base` (ending in `/`): its config, the
/// weights files' headers, every dense tensor; experts are described, not fetched. On a GPU
/// (`experts` int8 or int4) each expert is quantized when it arrives, as `switchscope convert`
/// would; on the CPU (`F32`) it stays f32.
///
/// # Errors
/// [`CoreError::Http`] for what the server answers; [`CoreError::Config`] for a bad config;
/// [`CoreError::Weights`] for weights that do not parse or fit the config.
pub async fn open_checkpoint(
    base: &str,
    transport: Arc<dyn Transport>,
    experts: Scheme,
) -> Result<RemoteCheckpoint, CoreError> {
    let traffic = Arc::new(Traffic::default());
    let count = |bytes: &[u8]| {
        traffic.requests.fetch_add(1, Ordering::Relaxed);
        traffic
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    };
    let config_url = format!("{base}config.json");
    let config_bytes = get_file(transport.as_ref(), &config_url)
        .await?
        .ok_or_else(|| {
            http(
                &config_url,
                "not found (HTTP 404): not a checkpoint directory",
            )
        })?;
    count(&config_bytes);
    let text =
        String::from_utf8(config_bytes).map_err(|_| http(&config_url, "is not UTF-8 text"))?;
    let config = SwitchConfig::from_json(&text)?;
    let tokenizer = get_file(transport.as_ref(), &format!("{base}tokenizer.json")).await?;
    if let Some(t) = &tokenizer {
        count(t);
    }
    let (files, ranges) = open_weights(base, &transport, &traffic).await?;

    // Experts: their ranges, coalesced, named by file and range.
    let (d, ff) = (config.d_model, config.d_ff);
    let mut expert_entries = Vec::new();
    let mut file_entries = Vec::new();
    let mut expert_ranges = HashMap::new();
    for stack in [Stack::Encoder, Stack::Decoder] {
        for block in config.sparse_blocks(stack) {
            for e in 0..config.num_experts {
                let prefix = expert_prefix(stack, block, e);
                let wi = tensor(&ranges, &format!("{prefix}.wi.weight"), &[ff, d])?;
                let wo = tensor(&ranges, &format!("{prefix}.wo.weight"), &[d, ff])?;
                let mut spans: Vec<(usize, u64, u64)> = Vec::new();
                for f in [wi.file, wo.file] {
                    if spans.iter().any(|s| s.0 == f) {
                        continue;
                    }
                    let own: Vec<(u64, u64)> = [wi, wo]
                        .iter()
                        .filter(|r| r.file == f)
                        .map(|r| (r.start, r.end()))
                        .collect();
                    spans.extend(coalesce(own).into_iter().map(|(a, b)| (f, a, b)));
                }
                let mut parts = Vec::new();
                for (matrix, r) in [("wi", wi), ("wo", wo)] {
                    let mut offset = 0u64;
                    for &(f, a, b) in &spans {
                        if f == r.file && a <= r.start && r.end() <= b {
                            offset += r.start - a;
                            break;
                        }
                        offset += b - a;
                    }
                    parts.push(Part {
                        matrix,
                        offset: offset as usize,
                        range: r.clone(),
                    });
                }
                let name = range_name(
                    spans
                        .iter()
                        .map(|&(f, a, b)| (files[f].name.as_str(), a, b)),
                );
                let bytes = spans.iter().map(|&(_, a, b)| b - a).sum();
                file_entries.push(FileEntry {
                    name: name.clone(),
                    bytes,
                    sha256: String::new(),
                });
                expert_entries.push(ExpertEntry {
                    stack,
                    block,
                    expert: e,
                    file: name.clone(),
                });
                expert_ranges.insert(
                    name,
                    ExpertRanges {
                        ranges: spans,
                        parts,
                    },
                );
            }
        }
    }

    // Dense tensors: everything else, fetched now, in coalesced ranges.
    let is_expert = |name: &str| name.contains(".mlp.experts.expert_");
    let dense_names: Vec<&String> = ranges.keys().filter(|n| !is_expert(n)).collect();
    let mut dense = HashMap::new();
    let mut dense_bytes = 0;
    for (f, file) in files.iter().enumerate() {
        let own: Vec<&String> = dense_names
            .iter()
            .copied()
            .filter(|n| ranges[*n].file == f)
            .collect();
        let spans = coalesce(
            own.iter()
                .map(|n| (ranges[*n].start, ranges[*n].end()))
                .collect(),
        );
        for (a, b) in spans {
            let (bytes, _) = file.range(a, b).await?;
            dense_bytes += b - a;
            for name in &own {
                let r = &ranges[*name];
                if a <= r.start && r.end() <= b {
                    let raw = &bytes[(r.start - a) as usize..(r.end() - a) as usize];
                    dense.insert(
                        (*name).clone(),
                        HostTensor {
                            shape: r.shape.clone(),
                            data: decode_floats_named(&r.dtype, raw, name)?,
                        },
                    );
                }
            }
        }
    }
    let dense_file = dense_name(&files[0].name);
    file_entries.push(FileEntry {
        name: dense_file.clone(),
        bytes: dense_bytes,
        sha256: String::new(),
    });
    let options = ConvertOptions {
        experts,
        dense: Scheme::F32,
        ..ConvertOptions::default()
    };
    let manifest = Manifest {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        config,
        tokenizer: None,
        quantization: Quantization {
            experts,
            group_size: options.group_size,
            scale_dtype: if options.f16_scales { "f16" } else { "f32" }.to_owned(),
            dense: Scheme::F32,
        },
        dense: dense_file,
        experts: expert_entries,
        files: file_entries,
    };
    manifest.validate_structure()?;
    Ok(RemoteCheckpoint {
        manifest,
        dense: RemoteDense(dense),
        experts: RemoteExperts {
            files,
            experts: expert_ranges,
            options,
        },
        tokenizer,
        dense_bytes,
        traffic,
    })
}

/// A converted model's files over HTTP, whole, each checked by the store against its SHA-256.
#[derive(Debug)]
pub struct UrlSource {
    /// The directory's URL, ending in `/`.
    pub base: String,
    pub transport: Arc<dyn Transport>,
}

impl ExpertSource for UrlSource {
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a> {
        Box::pin(async move {
            let url = format!("{}{}", self.base, file.name);
            let bytes = get_file(self.transport.as_ref(), &url)
                .await?
                .ok_or_else(|| CoreError::Shard {
                    file: file.name.clone(),
                    reason: format!("is missing ({url}: HTTP 404)"),
                })?;
            Ok(Fetched {
                bytes,
                origin: Origin::Network,
                prefetched: false,
            })
        })
    }
}

/// What a URL names: a converted model (its manifest) or a checkpoint, opened.
#[derive(Debug)]
pub enum RemoteModel {
    Converted {
        manifest: Box<Manifest>,
        source: UrlSource,
        tokenizer: Option<Vec<u8>>,
    },
    Checkpoint(Box<RemoteCheckpoint>),
}

/// Opens the model directory at `url`: a converted model when it has `manifest.json`, else a
/// Hugging Face checkpoint ([`open_checkpoint`], experts as `experts`).
///
/// # Errors
/// As [`open_checkpoint`]; [`CoreError::Manifest`] for an invalid manifest.
pub async fn open_url(
    url: &str,
    transport: Arc<dyn Transport>,
    experts: Scheme,
) -> Result<RemoteModel, CoreError> {
    let base = if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    };
    let manifest_url = format!("{base}manifest.json");
    let Some(text) = get_file(transport.as_ref(), &manifest_url).await? else {
        let checkpoint = open_checkpoint(&base, transport, experts).await?;
        return Ok(RemoteModel::Checkpoint(Box::new(checkpoint)));
    };
    let text = String::from_utf8(text).map_err(|_| http(&manifest_url, "is not UTF-8 text"))?;
    let manifest = Manifest::from_json(&text)?;
    let source = UrlSource { base, transport };
    let tokenizer = match &manifest.tokenizer {
        Some(name) => {
            let entry = manifest
                .file(name)
                .ok_or_else(|| CoreError::Manifest(format!("tokenizer {name} is not listed")))?;
            let fetched = source.fetch(entry).await?;
            crate::formats::manifest::verify(entry, &fetched.bytes)?;
            Some(fetched.bytes)
        }
        None => None,
    };
    Ok(RemoteModel::Converted {
        manifest: Box::new(manifest),
        source,
        tokenizer,
    })
}
