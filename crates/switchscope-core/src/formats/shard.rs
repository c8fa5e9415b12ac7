//! The layout of a converted model's tensors: the names of the dense tensors and expert
//! matrices in checkpoint order, and how a stored matrix (f32, f16, or int8/int4 with block
//! scales) is read back.

use super::manifest::Manifest;
use super::quant::{Quantized, Scheme};
use super::safetensors::{TensorInfo, parse_bytes};
use super::tensor::decode_floats_named;
use crate::CoreError;
use crate::config::{Stack, SwitchConfig};

/// Every dense (non-expert) tensor's name and shape, in a fixed order.
pub fn dense_tensors(config: &SwitchConfig) -> Vec<(String, Vec<usize>)> {
    let (d, inner) = (config.d_model, config.num_heads * config.d_kv);
    let mut out = vec![("shared.weight".to_owned(), vec![config.vocab_size, d])];
    for stack in [Stack::Encoder, Stack::Decoder] {
        let s = stack.as_str();
        for i in 0..config.layers(stack) {
            let p = format!("{s}.block.{i}.layer");
            let attention = |prefix: String, bias: bool, out: &mut Vec<(String, Vec<usize>)>| {
                for m in ["q", "k", "v"] {
                    out.push((format!("{prefix}.{m}.weight"), vec![inner, d]));
                }
                out.push((format!("{prefix}.o.weight"), vec![d, inner]));
                if bias {
                    out.push((
                        format!("{prefix}.relative_attention_bias.weight"),
                        vec![config.relative_attention_num_buckets, config.num_heads],
                    ));
                }
            };
            attention(format!("{p}.0.SelfAttention"), i == 0, &mut out);
            out.push((format!("{p}.0.layer_norm.weight"), vec![d]));
            let ff = if stack == Stack::Decoder {
                attention(format!("{p}.1.EncDecAttention"), false, &mut out);
                out.push((format!("{p}.1.layer_norm.weight"), vec![d]));
                2
            } else {
                1
            };
            if config.is_sparse(stack, i) {
                out.push((
                    format!("{p}.{ff}.mlp.router.classifier.weight"),
                    vec![config.num_experts, d],
                ));
                if config.router_bias {
                    out.push((
                        format!("{p}.{ff}.mlp.router.classifier.bias"),
                        vec![config.num_experts],
                    ));
                }
            } else {
                out.push((format!("{p}.{ff}.mlp.wi.weight"), vec![config.d_ff, d]));
                out.push((format!("{p}.{ff}.mlp.wo.weight"), vec![d, config.d_ff]));
            }
            out.push((format!("{p}.{ff}.layer_norm.weight"), vec![d]));
        }
        out.push((format!("{s}.final_layer_norm.weight"), vec![d]));
    }
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_owned(), vec![config.vocab_size, d]));
    }
    out
}

/// Whether dense tensor `name` of `shape` is stored in int8 when the dense scheme is int8: every
/// matrix but the routers (routing decisions are sensitive to them, and they are small) and the
/// relative position biases.
pub fn int8_dense(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && !name.contains(".router.") && !name.contains("relative_attention_bias")
}

/// The checkpoint name prefix of expert `e` of a sparse block.
pub fn expert_prefix(stack: Stack, block: usize, expert: usize) -> String {
    let ff = if stack == Stack::Decoder { 2 } else { 1 };
    format!(
        "{}.block.{block}.layer.{ff}.mlp.experts.expert_{expert}",
        stack.as_str()
    )
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
    with_matrix(
        manifest,
        file,
        bytes,
        matrix,
        |shape, scheme, group, get| {
            Ok((
                decode_stored(file, matrix, shape, scheme, group, get)?,
                shape,
            ))
        },
    )
}

/// Reads one quantized matrix (`wi` or `wo`) of an expert shard as stored, `[rows, cols]`.
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or malformed.
pub fn quantized_matrix(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    matrix: &str,
) -> Result<Quantized, CoreError> {
    with_matrix(
        manifest,
        file,
        bytes,
        matrix,
        |shape, scheme, group, get| stored_quantized(file, matrix, shape, scheme, group, get),
    )
}

/// Parses an expert shard and calls `read` with matrix `matrix`'s shape, the manifest's
/// scheme and group size, and a lookup of the shard's tensors.
fn with_matrix<T>(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    matrix: &str,
    read: impl FnOnce([usize; 2], Scheme, usize, FindTensor<'_, '_>) -> Result<T, CoreError>,
) -> Result<T, CoreError> {
    let tensors = parse_bytes(bytes).map_err(|reason| CoreError::Shard {
        file: file.to_owned(),
        reason,
    })?;
    let c = &manifest.config;
    let shape = if matrix == "wi" {
        [c.d_ff, c.d_model]
    } else {
        [c.d_model, c.d_ff]
    };
    let q = &manifest.quantization;
    let get = |name: &str| tensors.get(name).map(|(info, raw)| (info.clone(), *raw));
    read(shape, q.experts, q.group_size, &get)
}

/// Finds a stored tensor's header entry and bytes by name.
pub type FindTensor<'a, 'b> = &'b dyn Fn(&str) -> Option<(TensorInfo, &'a [u8])>;

/// Decodes tensor `stem` (`wi`, or a dense name without `.weight`) of shape `[rows, cols]`
/// stored as `{stem}.weight` (f32/f16) or `{stem}.qweight` + `{stem}.scales` (int8/int4) in
/// `file`, whose tensors `get` finds.
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or malformed.
pub fn decode_stored<'a>(
    file: &str,
    stem: &str,
    [rows, cols]: [usize; 2],
    scheme: Scheme,
    group_size: usize,
    get: FindTensor<'a, '_>,
) -> Result<Vec<f32>, CoreError> {
    let shard = |what: String| CoreError::Shard {
        file: file.to_owned(),
        reason: what,
    };
    let find = |name: String| get(&name).ok_or_else(|| shard(format!("has no {name}")));
    Ok(match scheme {
        Scheme::F32 | Scheme::F16 => {
            let (info, raw) = find(format!("{stem}.weight"))?;
            if info.shape != [rows, cols] {
                return Err(shard(format!(
                    "{stem}.weight has shape {:?}, expected {:?}",
                    info.shape,
                    [rows, cols]
                )));
            }
            decode_floats_named(&info.dtype, raw, stem)?
        }
        _ => stored_quantized(file, stem, [rows, cols], scheme, group_size, get)?.dequantize(),
    })
}

/// Reads tensor `stem` (`wi`, `wo`) of shape `[rows, cols]` stored as `{stem}.qweight` +
/// `{stem}.scales` (int8/int4) in `file`, as it is stored (nothing dequantized).
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or has the wrong size.
pub fn stored_quantized<'a>(
    file: &str,
    stem: &str,
    [rows, cols]: [usize; 2],
    scheme: Scheme,
    group_size: usize,
    get: FindTensor<'a, '_>,
) -> Result<Quantized, CoreError> {
    let shard = |what: String| CoreError::Shard {
        file: file.to_owned(),
        reason: what,
    };
    let find = |name: String| get(&name).ok_or_else(|| shard(format!("has no {name}")));
    if !scheme.is_quantized() {
        return Err(shard(format!("{stem} is stored as {}", scheme.as_str())));
    }
    let (_, qraw) = find(format!("{stem}.qweight"))?;
    let (sinfo, sraw) = find(format!("{stem}.scales"))?;
    let padded = super::quant::padded_cols(cols, group_size);
    let per_row = if scheme == Scheme::Int4 {
        padded / 2
    } else {
        padded
    };
    let scales = decode_floats_named(&sinfo.dtype, sraw, stem)?;
    if qraw.len() != rows * per_row || scales.len() != rows * (padded / group_size) {
        return Err(shard(format!(
            "{stem} has the wrong size for {} with group {group_size}",
            scheme.as_str(),
        )));
    }
    Ok(Quantized {
        rows,
        cols,
        group_size,
        scheme,
        data: qraw.to_vec(),
        scales,
    })
}
