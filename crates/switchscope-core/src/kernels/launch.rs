//! The sparse layer's feed-forward, the router's decision and greedy decoding's pick, launched
//! on burn tensors ([`super::dense`] launches a decode step's dense work).

// Buffers are bound to kernels with their lengths (CubeCL's `BufferArg::from_raw_parts`, an
// `unsafe` function: a wrong length could let a kernel read or write out of bounds). Every
// length below is the length of the buffer the handle was created with, and every kernel
// bounds its indices by the sizes it is given.
#![allow(unsafe_code)]

use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, activation};
use cubecl::prelude::*;

use super::argmax::{self, argmax_kernel, embed_kernel};
use super::gpu::{FUSED_MAX_TOKENS, Gpu};
use super::quant_matrix::{Io, QuantExpert, QuantMatrix};
use super::router::{self, route_kernel};
use crate::CoreError;

/// The tokens one expert processes: their rows in the layer's input and routing weights.
#[derive(Debug, Clone, Copy)]
pub struct Assignment<'a> {
    pub expert: &'a QuantExpert,
    pub rows: &'a [u32],
    pub weights: &'a [f32],
}

/// The sparse layer's feed-forward on the GPU: for every assignment, its expert's
/// `weight · wo · relu(wi · x)` on its rows, written to those rows of the output; rows no
/// expert took (dropped by capacity) are zero.
///
/// # Shapes
/// - `x`: `[tokens, d_model]` → same
///
/// # Errors
/// [`CoreError::Execution`] when `x` is not an f32 tensor on this GPU,
/// [`CoreError::Input`] when an expert's shapes do not fit `x`.
pub fn sparse_ffn(
    gpu: &Gpu,
    x: Tensor<2>,
    assignments: &[Assignment<'_>],
) -> Result<Tensor<2>, CoreError> {
    let [tokens, d_model] = x.dims();
    for a in assignments {
        let n = a.rows.len();
        let [d_ff, d_in] = a.expert.wi.shape();
        if d_in != d_model || a.expert.wo.shape() != [d_model, d_ff] || a.weights.len() != n {
            return Err(CoreError::Input(format!(
                "expert of shapes {:?} and {:?} for {n} rows of width {d_model}",
                a.expert.wi.shape(),
                a.expert.wo.shape()
            )));
        }
        if let Some(&bad) = a.rows.iter().find(|&&r| r as usize >= tokens) {
            return Err(CoreError::Input(format!(
                "row {bad} of an input with {tokens} rows"
            )));
        }
    }
    let device = x.device();
    let (x_handle, x_len) = gpu.buffer(x.clone())?;
    // rows no expert writes (dropped tokens) must read 0; when every row is written, as in
    // most decode steps, the zero fill is skipped
    let mut written = vec![false; tokens];
    for a in assignments {
        for &r in a.rows {
            written[r as usize] = true;
        }
    }
    let covered = written.iter().all(|&w| w)
        && assignments.iter().map(|a| a.rows.len()).sum::<usize>() == tokens;
    let out = if covered {
        gpu.client.empty(tokens * d_model * 4)
    } else {
        gpu.zeros(tokens * d_model)
    };
    // few tokens: the fused kernel on the packed weights, straight into `out`
    for a in assignments
        .iter()
        .filter(|a| (1..=FUSED_MAX_TOKENS).contains(&a.rows.len()))
    {
        let n = a.rows.len();
        let d_ff = a.expert.wi.shape()[0];
        // rows 0..n need no index list, one row no list of scales (a decode step: no upload)
        let identity = a.rows.iter().zip(0u32..).all(|(&r, i)| r == i);
        let rows = (!identity).then(|| gpu.upload(a.rows));
        let weights = (n > 1).then(|| gpu.upload(a.weights));
        let h = gpu.client.empty(n * d_ff * 4);
        let gather = Io {
            rows_in: rows.as_ref(),
            ..Io::default()
        };
        let scatter = Io {
            row_scale: weights.as_ref(),
            rows_out: rows.as_ref(),
            scale_all: a.weights[0],
            ..Io::default()
        };
        a.expert.wi.launch(
            gpu,
            (&x_handle, x_len),
            n,
            gather,
            (&h, n * d_ff, d_ff),
            true,
        );
        a.expert.wo.launch(
            gpu,
            (&h, n * d_ff),
            n,
            scatter,
            (&out, tokens * d_model, d_model),
            false,
        );
    }
    let mut out = gpu.tensor(out, [tokens, d_model]);
    // many tokens: a transient f32 copy of the expert and burn's matmul, scattered with burn
    for a in assignments
        .iter()
        .filter(|a| a.rows.len() > FUSED_MAX_TOKENS)
    {
        let n = a.rows.len();
        let index: Vec<i64> = a.rows.iter().map(|&r| i64::from(r)).collect();
        crate::counters::upload(n * 8);
        crate::counters::upload(n * 4);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device);
        let scale = Tensor::<2>::from_data(TensorData::new(a.weights.to_vec(), [n, 1]), &device);
        let picked = x.clone().select(0, index.clone());
        let h = activation::relu(picked.matmul(a.expert.wi.dequantize(gpu).transpose()));
        let y = h.matmul(a.expert.wo.dequantize(gpu).transpose()) * scale;
        out = out.select_assign(0, index, y, IndexingUpdateOp::Assign);
    }
    Ok(out)
}

/// A single product `x · Wᵀ` on the GPU (the kernel alone, for tests and benchmarks).
///
/// # Shapes
/// - `x`: `[n, cols]` → `[n, rows]`
///
/// # Errors
/// As [`sparse_ffn`].
pub fn quant_matmul(
    gpu: &Gpu,
    x: Tensor<2>,
    w: &QuantMatrix,
    relu: bool,
) -> Result<Tensor<2>, CoreError> {
    let [n, k] = x.dims();
    if k != w.cols {
        return Err(CoreError::Input(format!(
            "{n}×{k} input for a {}×{} matrix",
            w.rows, w.cols
        )));
    }
    let (x, x_len) = gpu.buffer(x)?;
    let out = gpu.client.empty((n * w.rows).max(1) * 4);
    if n > 0 {
        w.launch(
            gpu,
            (&x, x_len),
            n,
            Io::default(),
            (&out, n * w.rows, w.rows),
            relu,
        );
    }
    Ok(gpu.tensor(out, [n, w.rows]))
}

/// The router's decision (see [`router`](super::router)) for `logits` `[batch · seq, experts]`:
/// `[batch · seq, experts + 2]` (probabilities, chosen expert, position in that expert).
///
/// # Errors
/// As [`route_on_device`].
pub fn route(gpu: &Gpu, logits: Tensor<2>, seq: usize) -> Result<Tensor<2>, CoreError> {
    Ok(route_on_device(gpu, logits, seq, usize::MAX)?.decision)
}

/// The router's decision on the device, with what the experts' kernels read there.
#[derive(Debug)]
pub struct DeviceRoute {
    /// `[batch · seq, experts + 2]`: probabilities, chosen expert, position in that expert.
    pub decision: Tensor<2>,
    /// Per token, the chosen expert (`u32`).
    pub slot: cubecl::server::Handle,
    /// Per token, its routing weight, 0 when dropped by the capacity (`f32`).
    pub scale: cubecl::server::Handle,
}

/// The router's decision for `logits` `[batch · seq, experts]` with expert capacity
/// `capacity`, kept on the device.
///
/// # Errors
/// [`CoreError::Input`] for sequences longer than [`router::MAX_SEQ`];
/// [`CoreError::Execution`] when `logits` is not an f32 tensor on this GPU.
pub fn route_on_device(
    gpu: &Gpu,
    logits: Tensor<2>,
    seq: usize,
    capacity: usize,
) -> Result<DeviceRoute, CoreError> {
    let [rows, experts] = logits.dims();
    if seq == 0 || seq > router::MAX_SEQ as usize || rows % seq != 0 {
        return Err(CoreError::Input(format!(
            "the router kernel takes sequences of 1 to {} tokens ({rows} rows in sequences of {seq})",
            router::MAX_SEQ
        )));
    }
    let (l, l_len) = gpu.buffer(logits)?;
    let out_len = rows * (experts + 2);
    let out = gpu.client.empty(out_len * 4);
    let slot = gpu.client.empty(rows * 4);
    let scale = gpu.client.empty(rows * 4);
    route_kernel::launch(
        &gpu.client,
        CubeCount::Static((rows / seq) as u32, 1, 1),
        CubeDim::new_1d(router::UNITS),
        // SAFETY: the lengths are the buffers' element counts.
        unsafe { BufferArg::from_raw_parts(l, l_len) },
        unsafe { BufferArg::from_raw_parts(out.clone(), out_len) },
        unsafe { BufferArg::from_raw_parts(slot.clone(), rows) },
        unsafe { BufferArg::from_raw_parts(scale.clone(), rows) },
        seq as u32,
        experts as u32,
        u32::try_from(capacity).unwrap_or(u32::MAX),
    );
    Ok(DeviceRoute {
        decision: gpu.tensor(out, [rows, experts + 2]),
        slot,
        scale,
    })
}

/// A token id chosen on the device (one `u32` in a device buffer): the next step's embedding
/// reads it there, and the host reads it back when it needs it.
#[derive(Clone)]
pub struct DeviceToken(cubecl::server::Handle);

impl std::fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceToken")
    }
}

/// Greedy decoding's pick on the device: the index of the largest of `logits` (`[1, vocab]`),
/// ties to the lowest, as [`super::reference::argmax`].
///
/// # Errors
/// [`CoreError::Execution`] when `logits` is not an f32 tensor on this GPU;
/// [`CoreError::Input`] for an empty row or more than one.
pub fn argmax(gpu: &Gpu, logits: Tensor<2>) -> Result<DeviceToken, CoreError> {
    let [rows, len] = logits.dims();
    if rows != 1 || len == 0 {
        return Err(CoreError::Input(format!(
            "the argmax kernel takes one non-empty row, got [{rows}, {len}]"
        )));
    }
    let (l, l_len) = gpu.buffer(logits)?;
    let out = gpu.client.empty(4);
    argmax_kernel::launch(
        &gpu.client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(argmax::UNITS),
        // SAFETY: the lengths are the buffers' element counts.
        unsafe { BufferArg::from_raw_parts(l, l_len) },
        unsafe { BufferArg::from_raw_parts(out.clone(), 1) },
        len as u32,
    );
    Ok(DeviceToken(out))
}

/// Row `token` of the embedding `table` (`[vocab, d_model]`), read on the device: `[1, d_model]`.
/// The id must be below `vocab` (an argmax over this model's logits is).
///
/// # Errors
/// [`CoreError::Execution`] when `table` is not an f32 tensor on this GPU.
pub fn embed(gpu: &Gpu, table: Tensor<2>, token: &DeviceToken) -> Result<Tensor<2>, CoreError> {
    let [_, width] = table.dims();
    let (t, t_len) = gpu.buffer(table)?;
    let out = gpu.client.empty(width * 4);
    embed_kernel::launch(
        &gpu.client,
        CubeCount::Static((width as u32).div_ceil(argmax::UNITS), 1, 1),
        CubeDim::new_1d(argmax::UNITS),
        // SAFETY: the lengths are the buffers' element counts.
        unsafe { BufferArg::from_raw_parts(t, t_len) },
        unsafe { BufferArg::from_raw_parts(token.0.clone(), 1) },
        unsafe { BufferArg::from_raw_parts(out.clone(), width) },
        width as u32,
    );
    Ok(gpu.tensor(out, [1, width]))
}

/// The token's id, read back (the caller counts the host wait when it awaits this).
///
/// # Errors
/// [`CoreError::Execution`] when the device fails.
pub async fn read_token(gpu: &Gpu, token: &DeviceToken) -> Result<u32, CoreError> {
    let bytes = gpu
        .client
        .read_async(vec![token.0.clone()])
        .await
        .map_err(|e| CoreError::Execution(format!("reading a token back: {e:?}")))?;
    let word: [u8; 4] = bytes
        .first()
        .and_then(|b| b.get(..4))
        .and_then(|w| w.try_into().ok())
        .ok_or_else(|| CoreError::Execution("a token read back short".into()))?;
    Ok(u32::from_le_bytes(word))
}

/// Reads started now and awaited later: the device's queue is flushed and the copies are
/// recorded when this is made, so the host can queue more work before it awaits them.
pub struct ReadLater<'a> {
    read: Reading<'a>,
}

/// The buffers' bytes, once the device has copied them.
type Reading<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Vec<Vec<u8>>, String>> + 'a>>;

impl std::fmt::Debug for ReadLater<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadLater")
    }
}

impl<'a> ReadLater<'a> {
    /// Starts reading `token` and the f32 tensor `values` (its contiguous copy), in one go.
    ///
    /// # Errors
    /// [`CoreError::Execution`] when `values` is not an f32 tensor on this GPU.
    pub fn start(
        gpu: &'a Gpu,
        token: &DeviceToken,
        values: Option<Tensor<2>>,
    ) -> Result<Self, CoreError> {
        let mut handles = vec![token.0.clone()];
        if let Some(values) = values {
            handles.push(gpu.buffer(values)?.0);
        }
        // called now: the copies are recorded and the queue flushed before this returns
        let read = gpu.client.read_async(handles);
        Ok(Self {
            read: Box::pin(async move {
                read.await
                    .map(|all| all.iter().map(|b| b.to_vec()).collect())
                    .map_err(|e| format!("{e:?}"))
            }),
        })
    }

    /// The token's id and the values.
    ///
    /// # Errors
    /// [`CoreError::Execution`] when the device fails.
    pub async fn finish(self) -> Result<(u32, Vec<f32>), CoreError> {
        let bytes = self
            .read
            .await
            .map_err(|e| CoreError::Execution(format!("reading a step back: {e}")))?;
        let (Some(token), values) = (bytes.first(), bytes.get(1)) else {
            return Err(CoreError::Execution("a step read back incomplete".into()));
        };
        let values = values.map_or(&[][..], Vec::as_slice);
        let word: [u8; 4] = token
            .get(..4)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| CoreError::Execution("a token read back short".into()))?;
        let values = values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((u32::from_le_bytes(word), values))
    }
}
