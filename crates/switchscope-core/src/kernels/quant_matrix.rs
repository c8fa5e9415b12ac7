//! Quantized experts resident on the GPU as the shards store them, and the launches of the
//! dequantizing matrix product on them.

// Buffers are bound to kernels with their lengths (CubeCL's `BufferArg::from_raw_parts`, an
// `unsafe` function: a wrong length could let a kernel read or write out of bounds). Every
// length below is the length of the buffer the handle was created with, and every kernel
// bounds its indices by the sizes it is given.
#![allow(unsafe_code)]

use std::fmt;

use burn::tensor::Tensor;
use cubecl::prelude::*;
use cubecl::server::Handle;

use super::gpu::{Gpu, MAX_BINDING_BYTES};
use super::qmatmul::{self, dequantize_kernel, qmatmul_kernel};
use crate::CoreError;
use crate::formats::quant::{Quantized, Scheme, padded_cols};

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

/// Part of a quantized matrix: output rows `first..first + rows`, in one buffer each.
pub(super) struct Part {
    /// Scales stored as f16 (else f32).
    pub(super) half: bool,
    first: usize,
    rows: usize,
    pub(super) weight: Handle,
    pub(super) words: usize,
    pub(super) scales: Handle,
    pub(super) groups: usize,
}

/// A block-wise int8/int4 matrix `[rows, cols]` resident on the GPU as the shard stores it
/// (never dequantized in memory), split by rows where one buffer would pass the binding limit.
pub struct QuantMatrix {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) group: usize,
    pub(super) bits: u32,
    pub(super) parts: Vec<Part>,
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
                    crate::counters::upload(bytes.len());
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
    pub(super) fn launch(
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
                false,
            ));
        }
    }
}

/// The optional index lists and scales of a product.
#[derive(Clone, Copy)]
pub(super) struct Io<'a> {
    pub(super) rows_in: Option<&'a Handle>,
    pub(super) row_scale: Option<&'a Handle>,
    pub(super) rows_out: Option<&'a Handle>,
    /// The scale of every row when `row_scale` is `None`.
    pub(super) scale_all: f32,
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
