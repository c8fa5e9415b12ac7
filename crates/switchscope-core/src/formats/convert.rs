//! Converting a Hugging Face checkpoint into a Switchscope model directory (see
//! `docs/FORMAT.md`), tensor by tensor, into a temporary directory renamed at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checkpoint::open_hf_source;
use super::manifest::{
    ExpertEntry, FORMAT_NAME, FORMAT_VERSION, FileEntry, Manifest, Quantization, expert_file,
};
use super::quant::{Scheme, quantize};
use super::safetensors::{OutTensor, serialize, write_file};
use super::shard::{dense_tensors, expert_prefix, int8_dense};
use super::tensor::{HostTensor, TensorSource};
use crate::CoreError;
use crate::config::{Stack as StackKind, SwitchConfig};

/// What to produce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvertOptions {
    pub experts: Scheme,
    pub group_size: usize,
    /// Scales in f16 (`true`) or f32.
    pub f16_scales: bool,
    /// How the dense weights are stored: `F32`, `F16`, or `Int8` (the 2-D matrices, block-wise
    /// like the experts, except the routers and the relative position biases, kept in f32).
    pub dense: Scheme,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            experts: Scheme::Int8,
            group_size: 32,
            f16_scales: true,
            dense: Scheme::F32,
        }
    }
}

/// Conversion phases, for progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Dense,
    Experts,
    Checksums,
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertSummary {
    pub manifest: Manifest,
    /// Bytes of the source weights read (as f32 would be: `4 × parameters`).
    pub source_f32_bytes: u64,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect()
}

fn fetch(
    source: &mut dyn TensorSource,
    name: &str,
    shape: &[usize],
) -> Result<HostTensor, CoreError> {
    let t = source.get(name)?;
    checked(name, shape, t)
}

/// `t`, if present and of `shape`; otherwise an error naming the tensor.
fn checked(name: &str, shape: &[usize], t: Option<HostTensor>) -> Result<HostTensor, CoreError> {
    let t = t.ok_or_else(|| {
        CoreError::Weights(format!("tensor {name} is missing from the checkpoint"))
    })?;
    if t.shape != shape {
        return Err(CoreError::Weights(format!(
            "tensor {name} has shape {:?}; the config implies {shape:?}",
            t.shape
        )));
    }
    Ok(t)
}

/// The tensors of one expert matrix (`wi` or `wo`) in the chosen scheme.
pub(crate) fn expert_tensors(
    prefix: &str,
    t: &HostTensor,
    options: &ConvertOptions,
) -> Result<Vec<OutTensor>, CoreError> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    Ok(match options.experts {
        Scheme::F32 => vec![OutTensor {
            name: format!("{prefix}.weight"),
            dtype: "F32",
            shape: t.shape.clone(),
            bytes: f32_bytes(&t.data),
        }],
        Scheme::F16 => vec![OutTensor {
            name: format!("{prefix}.weight"),
            dtype: "F16",
            shape: t.shape.clone(),
            bytes: f16_bytes(&t.data),
        }],
        scheme => {
            let q = quantize(&t.data, rows, cols, scheme, options.group_size)?;
            let padded = super::quant::padded_cols(cols, options.group_size);
            let (dtype, qshape) = if scheme == Scheme::Int8 {
                ("I8", vec![rows, padded])
            } else {
                ("U32", vec![rows, padded / 8])
            };
            let scale_shape = vec![rows, padded / options.group_size];
            let (sdtype, sbytes) = if options.f16_scales {
                ("F16", f16_bytes(&q.scales))
            } else {
                ("F32", f32_bytes(&q.scales))
            };
            vec![
                OutTensor {
                    name: format!("{prefix}.qweight"),
                    dtype,
                    shape: qshape,
                    bytes: q.data,
                },
                OutTensor {
                    name: format!("{prefix}.scales"),
                    dtype: sdtype,
                    shape: scale_shape,
                    bytes: sbytes,
                },
            ]
        }
    })
}

/// Converts the checkpoint in `from` into `out`.
///
/// The output is written to a sibling temporary directory and renamed when complete, so an
/// interrupted run leaves no half model. `out` must not exist yet.
///
/// # Errors
/// Any [`CoreError`] naming the tensor or file at fault.
pub fn convert(
    from: &Path,
    out: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<ConvertSummary, CoreError> {
    if options.experts.is_quantized() || options.dense.is_quantized() {
        super::quant::check_group_size(options.group_size)?;
    }
    if options.dense == Scheme::Int4 {
        return Err(CoreError::Input(
            "dense weights can be f32, f16 or int8, not int4".into(),
        ));
    }
    if out.exists() {
        return Err(CoreError::Input(format!(
            "{} already exists; remove it or choose another --out",
            out.display()
        )));
    }
    let (config, mut source) = open_hf_source(from)?;
    let tmp: PathBuf = {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    }
    let result = write_all(&config, source.as_mut(), from, &tmp, options, progress);
    match result {
        Ok(summary) => {
            std::fs::rename(&tmp, out).map_err(|e| CoreError::io(out, e))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn write_all(
    config: &SwitchConfig,
    source: &mut dyn TensorSource,
    from: &Path,
    tmp: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<ConvertSummary, CoreError> {
    let mut files = Vec::new();
    let mut source_values = 0u64;
    let add = |name: &str, bytes: &[u8], files: &mut Vec<FileEntry>| -> Result<(), CoreError> {
        write_file(&tmp.join(name), bytes)?;
        files.push(FileEntry {
            name: name.to_owned(),
            bytes: bytes.len() as u64,
            sha256: super::manifest::sha256_hex(bytes),
        });
        Ok(())
    };

    // The dense part: everything but the experts.
    let names = dense_tensors(config);
    let mut dense = Vec::with_capacity(names.len());
    for (i, (name, shape)) in names.iter().enumerate() {
        progress(Phase::Dense, i, names.len());
        // Checkpoints may keep only `shared.weight` for the tied embeddings, or only the copies.
        let t = match source.get(name)? {
            None if name == "shared.weight" => fetch(source, "encoder.embed_tokens.weight", shape)?,
            t => checked(name, shape, t)?,
        };
        source_values += t.data.len() as u64;
        match options.dense {
            Scheme::Int8 if int8_dense(name, shape) => {
                let stem = name.strip_suffix(".weight").unwrap_or(name);
                let q = ConvertOptions {
                    experts: Scheme::Int8,
                    ..*options
                };
                dense.extend(expert_tensors(stem, &t, &q)?);
            }
            Scheme::F16 => dense.push(OutTensor {
                name: name.clone(),
                dtype: "F16",
                shape: shape.clone(),
                bytes: f16_bytes(&t.data),
            }),
            _ => dense.push(OutTensor {
                name: name.clone(),
                dtype: "F32",
                shape: shape.clone(),
                bytes: f32_bytes(&t.data),
            }),
        }
    }
    progress(Phase::Dense, names.len(), names.len());
    let mut meta = BTreeMap::new();
    meta.insert("format".to_owned(), FORMAT_NAME.to_owned());
    add("dense.safetensors", &serialize(&dense, &meta), &mut files)?;
    drop(dense);

    // One file per expert.
    let mut experts = Vec::new();
    for stack in [StackKind::Encoder, StackKind::Decoder] {
        for block in config.sparse_blocks(stack) {
            for e in 0..config.num_experts {
                experts.push((stack, block, e));
            }
        }
    }
    let (d, ff) = (config.d_model, config.d_ff);
    let mut entries = Vec::with_capacity(experts.len());
    for (i, &(stack, block, e)) in experts.iter().enumerate() {
        progress(Phase::Experts, i, experts.len());
        let prefix = expert_prefix(stack, block, e);
        let wi = fetch(source, &format!("{prefix}.wi.weight"), &[ff, d])?;
        let wo = fetch(source, &format!("{prefix}.wo.weight"), &[d, ff])?;
        source_values += (wi.data.len() + wo.data.len()) as u64;
        let mut tensors = expert_tensors("wi", &wi, options)?;
        tensors.extend(expert_tensors("wo", &wo, options)?);
        let mut meta = BTreeMap::new();
        meta.insert("scheme".to_owned(), options.experts.as_str().to_owned());
        meta.insert("group_size".to_owned(), options.group_size.to_string());
        let file = expert_file(stack, block, e);
        add(&file, &serialize(&tensors, &meta), &mut files)?;
        entries.push(ExpertEntry {
            stack,
            block,
            expert: e,
            file,
        });
    }
    progress(Phase::Experts, experts.len(), experts.len());

    let tokenizer = if from.join("tokenizer.json").is_file() {
        let bytes = std::fs::read(from.join("tokenizer.json"))
            .map_err(|e| CoreError::io(&from.join("tokenizer.json"), e))?;
        add("tokenizer.json", &bytes, &mut files)?;
        Some("tokenizer.json".to_owned())
    } else {
        None
    };
    progress(Phase::Checksums, 1, 1);

    let manifest = Manifest {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        config: config.clone(),
        tokenizer,
        quantization: Quantization {
            experts: options.experts,
            group_size: options.group_size,
            scale_dtype: if options.f16_scales { "f16" } else { "f32" }.to_owned(),
            dense: options.dense,
        },
        dense: "dense.safetensors".to_owned(),
        experts: entries,
        files,
    };
    manifest.validate()?;
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| CoreError::Manifest(e.to_string()))?;
    write_file(&tmp.join("manifest.json"), &json)?;
    Ok(ConvertSummary {
        manifest,
        source_f32_bytes: source_values * 4,
    })
}
