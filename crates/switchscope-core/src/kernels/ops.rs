//! Launching the kernels from burn tensors: the device-resident quantized experts, the sparse
//! layer's feed-forward on them, and the router's decision.
//!
//! burn's wgpu and WebGPU backends are CubeCL underneath: a [`Tensor`] on such a device
//! converts to its `CubeTensor` primitive (a buffer handle and a shape), our kernels run on
//! the same client and queue as burn's own, and their output is handed back to burn as a
//! tensor. On any other device (Flex on the CPU) [`Gpu::of`] is `None` and callers keep
//! burn's generic path.

// Buffers are bound to kernels with their lengths (CubeCL's `BufferArg::from_raw_parts`, an
// `unsafe` function: a wrong length could let a kernel read or write out of bounds). Every
// length below is the length of the buffer the handle was created with, and every kernel
// bounds its indices by the sizes it is given.
#![allow(unsafe_code)]

use std::fmt;

use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Shape, Tensor, TensorData, activation};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::client::Client;
use cubecl::features::TypeUsage;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use cubecl::server::Handle;

use super::qmatmul::{self, dequantize_kernel, fill_zero_kernel, qmatmul_kernel};
use super::router::{self, route_kernel};
use crate::CoreError;
use crate::shards::quant::{Quantized, Scheme, padded_cols};

/// The largest storage buffer a kernel binds by default: WebGPU's guaranteed
/// `maxStorageBufferBindingSize` (128 MiB), which some phones do not exceed. Larger matrices
/// are split by rows.
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// Up to this many tokens per expert, the fused kernel runs on the packed weights; above it
/// (prefill), the expert is dequantized to a transient f32 copy and burn's tiled matmul runs
/// on it, which was faster for many rows (`switchscope bench kernels`, docs/BENCHMARKS.md).
pub const FUSED_MAX_TOKENS: usize = 8;

/// Runs `$body` with `$S` the scales' element type: `half::f16` when `$half`, else `f32`.
macro_rules! with_scales {
    ($half:expr, $S:ident => $body:expr) => {
        if $half {
            type $S = half::f16;
            $body
        } else {
            type $S = f32;
            $body
        }
    };
}

/// A CubeCL (wgpu / WebGPU) device's compute client, on which our kernels run.
#[derive(Clone)]
pub struct Gpu {
    client: Client,
    device: cubecl::Device,
    /// Whether scales may be kept in f16 (the adapter has `shader-f16`).
    f16: bool,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("client", &self.client.name())
            .finish()
    }
}

impl Gpu {
    /// The kernels' context on `device`, or `None` when the device is not a CubeCL one (Flex).
    pub fn of(device: &Device) -> Option<Self> {
        let probe = Tensor::<1>::zeros([1], device);
        let t = probe.try_into_primitive::<CubeBackend>().ok()?;
        let gpu = Self {
            client: t.client,
            device: t.device,
            f16: false,
        };
        Some(gpu.with_f16(true))
    }

    /// Whether this adapter keeps scales in f16 (`shader-f16`; SwiftShader has not).
    pub fn has_f16(&self) -> bool {
        self.f16
    }

    /// The same device with f16 scales allowed or not (to compare the two paths).
    #[must_use]
    pub fn with_f16(mut self, allowed: bool) -> Self {
        self.f16 = allowed && self.has_f16_support();
        self
    }

    fn has_f16_support(&self) -> bool {
        self.client
            .properties()
            .type_usage(ElemType::Float(FloatKind::F16))
            .is_superset(TypeUsage::Buffer | TypeUsage::Conversion)
    }

    fn upload<T: bytemuck_free::Pod>(&self, values: &[T]) -> Handle {
        self.client.create_from_slice(&bytemuck_free::bytes(values))
    }

    /// A float tensor's buffer, contiguous, with its element count.
    fn buffer(&self, t: Tensor<2>) -> Result<(Handle, usize), CoreError> {
        let t = t
            .try_into_primitive::<CubeBackend>()
            .map_err(|e| CoreError::Execution(format!("not a GPU tensor: {e:?}")))?;
        if t.dtype != DType::F32 {
            return Err(CoreError::Execution(format!(
                "the kernels take f32 activations, got {:?}",
                t.dtype
            )));
        }
        let t = into_contiguous(t);
        let len = t.meta.shape().num_elements();
        Ok((t.handle, len))
    }

    fn tensor(&self, handle: Handle, shape: [usize; 2]) -> Tensor<2> {
        let t = CubeTensor::new_contiguous(
            self.client.clone(),
            self.device.clone(),
            Shape::from(shape),
            handle,
            DType::F32,
        );
        Tensor::from_primitive::<CubeBackend>(t)
    }

    fn zeros(&self, len: usize) -> Handle {
        let handle = self.client.empty(len * 4);
        let cubes = (len as u32).div_ceil(qmatmul::UNITS);
        if len > 0 {
            fill_zero_kernel::launch(
                &self.client,
                CubeCount::Static(cubes, 1, 1),
                CubeDim::new_1d(qmatmul::UNITS),
                // SAFETY: `len` f32 values, the buffer's size.
                unsafe { BufferArg::from_raw_parts(handle.clone(), len) },
                len as u32,
            );
        }
        handle
    }
}

/// Reinterpreting plain numbers as bytes, without a dependency (and its features).
mod bytemuck_free {
    /// Numbers whose little-endian bytes are what a kernel reads.
    pub trait Pod: Copy {
        fn le(self) -> [u8; 4];
    }
    impl Pod for f32 {
        fn le(self) -> [u8; 4] {
            self.to_le_bytes()
        }
    }
    impl Pod for u32 {
        fn le(self) -> [u8; 4] {
            self.to_le_bytes()
        }
    }
    pub fn bytes<T: Pod>(values: &[T]) -> Vec<u8> {
        values.iter().flat_map(|v| v.le()).collect()
    }
}

/// Part of a quantized matrix: output rows `first..first + rows`, in one buffer each.
struct Part {
    /// Scales stored as f16 (else f32).
    half: bool,
    first: usize,
    rows: usize,
    weight: Handle,
    words: usize,
    scales: Handle,
    groups: usize,
}

/// A block-wise int8/int4 matrix `[rows, cols]` resident on the GPU as the shard stores it
/// (never dequantized in memory), split by rows where one buffer would pass the binding limit.
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    group: usize,
    bits: u32,
    parts: Vec<Part>,
}

impl fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("group", &self.group)
            .field("bits", &self.bits)
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl QuantMatrix {
    /// Puts `q` on the GPU, in buffers of at most [`MAX_BINDING_BYTES`].
    ///
    /// # Errors
    /// As [`Self::upload_split`].
    pub fn upload(gpu: &Gpu, q: &Quantized) -> Result<Self, CoreError> {
        Self::upload_split(gpu, q, MAX_BINDING_BYTES)
    }

    /// Puts `q` on the GPU, splitting its rows so that no buffer passes `max_binding_bytes`.
    ///
    /// # Errors
    /// [`CoreError::Input`] for an unquantized scheme or a row wider than one buffer.
    pub fn upload_split(
        gpu: &Gpu,
        q: &Quantized,
        max_binding_bytes: usize,
    ) -> Result<Self, CoreError> {
        let bits: u32 = match q.scheme {
            Scheme::Int8 => 8,
            Scheme::Int4 => 4,
            other => {
                return Err(CoreError::Input(format!(
                    "the quantized kernels take int8 or int4, not {}",
                    other.as_str()
                )));
            }
        };
        let padded = padded_cols(q.cols, q.group_size);
        let words = padded * bits as usize / 32;
        let groups = padded / q.group_size;
        let row_bytes = words * 4;
        if row_bytes > max_binding_bytes {
            return Err(CoreError::Input(format!(
                "a row of {} values does not fit a {max_binding_bytes}-byte storage buffer",
                q.cols
            )));
        }
        // a dispatch counts at most 65 535 cubes of ROWS rows
        let rows_per_part =
            (max_binding_bytes / row_bytes).clamp(1, 65_535 * qmatmul::ROWS as usize);
        let word_values: Vec<u32> = q
            .data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // f16 scales only where that loses nothing: every scale is exactly an f16
        let half = gpu.f16
            && q.scales
                .iter()
                .all(|&s| half::f16::from_f32(s).to_f32().to_bits() == s.to_bits());
        let mut parts = Vec::new();
        let mut first = 0;
        while first < q.rows {
            let rows = rows_per_part.min(q.rows - first);
            let scales = &q.scales[first * groups..(first + rows) * groups];
            parts.push(Part {
                half,
                first,
                rows,
                weight: gpu.upload(&word_values[first * words..(first + rows) * words]),
                words,
                scales: if half {
                    let bytes: Vec<u8> = scales
                        .iter()
                        .flat_map(|&s| half::f16::from_f32(s).to_le_bytes())
                        .collect();
                    gpu.client.create_from_slice(&bytes)
                } else {
                    gpu.upload(scales)
                },
                groups,
            });
            first += rows;
        }
        Ok(Self {
            rows: q.rows,
            cols: q.cols,
            group: q.group_size,
            bits,
            parts,
        })
    }

    /// Bytes it holds on the device.
    pub fn device_bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| (p.rows * (p.words * 4 + p.groups * if p.half { 2 } else { 4 })) as u64)
            .sum()
    }

    /// Whether its scales are kept in f16.
    pub fn half_scales(&self) -> bool {
        self.parts.iter().all(|p| p.half)
    }

    /// How many buffers it is split into.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// `[rows, cols]`: the checkpoint's `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The matrix dequantized to a new f32 tensor `[rows, cols]` (our kernel, on the device).
    pub fn dequantize(&self, gpu: &Gpu) -> Tensor<2> {
        let padded = padded_cols(self.cols, self.group);
        let parts: Vec<Tensor<2>> = self
            .parts
            .iter()
            .map(|part| {
                let len = part.rows * self.cols;
                let out = gpu.client.empty(len.max(1) * 4);
                if len > 0 {
                    with_scales!(part.half, S => dequantize_kernel::launch::<S>(
                        &gpu.client,
                        CubeCount::Static((len as u32).div_ceil(qmatmul::UNITS), 1, 1),
                        CubeDim::new_1d(qmatmul::UNITS),
                        // SAFETY: the part's buffers and the new output, with their element counts.
                        unsafe {
                            BufferArg::from_raw_parts(part.weight.clone(), part.rows * part.words)
                        },
                        unsafe {
                            BufferArg::from_raw_parts(part.scales.clone(), part.rows * part.groups)
                        },
                        unsafe { BufferArg::from_raw_parts(out.clone(), len) },
                        part.rows as u32,
                        self.cols as u32,
                        self.bits,
                        self.group as u32,
                        padded as u32,
                    ));
                }
                gpu.tensor(out, [part.rows, self.cols])
            })
            .collect();
        Tensor::cat(parts, 0)
    }

    /// Launches the product (see [`qmatmul`](super::qmatmul)) on `n` rows of `x`: rows
    /// `rows_in` (else `0..n`), written to rows `rows_out` of `out` (else `0..n`), scaled by
    /// `row_scale` (else 1).
    fn launch(
        &self,
        gpu: &Gpu,
        (x, x_len): (&Handle, usize),
        n: usize,
        io: Io<'_>,
        (out, out_len, out_stride): (&Handle, usize, usize),
        relu: bool,
    ) {
        let padded = padded_cols(self.cols, self.group);
        let tokens = (n as u32).min(qmatmul::LANES);
        let blocks = (n as u32).div_ceil(tokens);
        // unused bindings still need a buffer: `x` stands in (never read)
        let index = |h: Option<&Handle>| h.map_or((x.clone(), x_len), |h| (h.clone(), n));
        let (rows_in, rows_in_len) = index(io.rows_in);
        let (rows_out, rows_out_len) = index(io.rows_out);
        let (scale, scale_len) = index(io.row_scale);
        for part in &self.parts {
            with_scales!(part.half, S => qmatmul_kernel::launch::<S>(
                &gpu.client,
                CubeCount::Static((part.rows as u32).div_ceil(qmatmul::ROWS), blocks, 1),
                CubeDim::new_1d(qmatmul::UNITS),
                // SAFETY: each length is the element count of the buffer the handle was created
                // with (`x_len` and `out_len` by the caller, the index lists hold `n` values).
                unsafe { BufferArg::from_raw_parts(x.clone(), x_len) },
                unsafe { BufferArg::from_raw_parts(rows_in.clone(), rows_in_len) },
                unsafe { BufferArg::from_raw_parts(part.weight.clone(), part.rows * part.words) },
                unsafe { BufferArg::from_raw_parts(part.scales.clone(), part.rows * part.groups) },
                unsafe { BufferArg::from_raw_parts(scale.clone(), scale_len) },
                unsafe { BufferArg::from_raw_parts(rows_out.clone(), rows_out_len) },
                unsafe { BufferArg::from_raw_parts(out.clone(), out_len) },
                n as u32,
                self.cols as u32,
                part.rows as u32,
                out_stride as u32,
                part.first as u32,
                io.scale_all,
                self.bits,
                self.group as u32,
                padded as u32,
                tokens,
                self.cols.is_multiple_of(32 / self.bits as usize),
                relu,
                io.rows_in.is_some(),
                io.rows_out.is_some(),
                io.row_scale.is_some(),
            ));
        }
    }
}

/// The optional index lists and scales of a product.
#[derive(Clone, Copy)]
struct Io<'a> {
    rows_in: Option<&'a Handle>,
    row_scale: Option<&'a Handle>,
    rows_out: Option<&'a Handle>,
    /// The scale of every row when `row_scale` is `None`.
    scale_all: f32,
}

impl Default for Io<'_> {
    fn default() -> Self {
        Self {
            rows_in: None,
            row_scale: None,
            rows_out: None,
            scale_all: 1.0,
        }
    }
}

/// One expert's two matrices, on the GPU.
#[derive(Debug)]
pub struct QuantExpert {
    /// `[d_ff, d_model]`
    pub wi: QuantMatrix,
    /// `[d_model, d_ff]`
    pub wo: QuantMatrix,
}

impl QuantExpert {
    /// Bytes it holds on the device.
    pub fn device_bytes(&self) -> u64 {
        self.wi.device_bytes() + self.wo.device_bytes()
    }
}

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
/// [`CoreError::Input`] for sequences longer than [`router::MAX_SEQ`];
/// [`CoreError::Execution`] when `logits` is not an f32 tensor on this GPU.
pub fn route(gpu: &Gpu, logits: Tensor<2>, seq: usize) -> Result<Tensor<2>, CoreError> {
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
    route_kernel::launch(
        &gpu.client,
        CubeCount::Static((rows / seq) as u32, 1, 1),
        CubeDim::new_1d(router::UNITS),
        // SAFETY: the lengths are the buffers' element counts.
        unsafe { BufferArg::from_raw_parts(l, l_len) },
        unsafe { BufferArg::from_raw_parts(out.clone(), out_len) },
        seq as u32,
        experts as u32,
    );
    Ok(gpu.tensor(out, [rows, experts + 2]))
}
