//! A sparse layer's experts side by side in one buffer per matrix, so that the expert a token
//! runs can be chosen on the device: the router kernel writes the chosen slot, and the
//! quantized product reads its weights at that slot ([`super::qmatmul`], comptime `routed`).
//! A decode step's sparse layer then needs no read-back before its experts run.
//!
//! A table is built from experts already on the device (a copy kernel per buffer, once); it
//! needs every expert of the layer, each matrix in one buffer, all of one shape and format.

// Buffers are bound to kernels with their lengths (CubeCL's `BufferArg::from_raw_parts`, an
// `unsafe` function: a wrong length could let a kernel read or write out of bounds). Every
// length below is the length of the buffer the handle was created with, and every kernel
// bounds its indices by the sizes it is given.
#![allow(unsafe_code)]

use burn::tensor::Tensor;
use cubecl::prelude::*;
use cubecl::server::Handle;

use super::gpu::{Gpu, MAX_BINDING_BYTES};
use super::qmatmul::{self, qmatmul_kernel};
use super::quant_matrix::{QuantExpert, QuantMatrix};
use crate::CoreError;
use crate::formats::quant::padded_cols;

/// Copies `len` values of `src` to `dst` from `offset` on.
#[cube(launch)]
pub fn copy_kernel<T: Numeric>(src: &[T], dst: &mut [T], offset: u32, len: u32) {
    let i = ABSOLUTE_POS_X;
    if i < len {
        dst[(offset + i) as usize] = src[i as usize];
    }
}

/// One matrix of every expert: slot `e` holds expert `e`'s rows.
#[derive(Debug)]
struct TableMatrix {
    /// Experts side by side.
    slots: usize,
    rows: usize,
    cols: usize,
    group: usize,
    bits: u32,
    half: bool,
    /// `u32` words per row; the table holds `experts · rows · words`.
    words: usize,
    weight: Handle,
    /// Scales per row; the table holds `experts · rows · groups`.
    groups: usize,
    scales: Handle,
}

/// A sparse layer's experts, on the device side by side.
#[derive(Debug)]
pub struct ExpertTable {
    experts: usize,
    wi: TableMatrix,
    wo: TableMatrix,
}

impl ExpertTable {
    /// The table of `experts` (expert `e` in slot `e`), or `None` when they cannot share one:
    /// a matrix split in several buffers, experts of different shapes or formats, or a table
    /// past the binding limit.
    pub fn build(gpu: &Gpu, experts: &[&QuantExpert]) -> Option<Self> {
        let table = |pick: fn(&QuantExpert) -> &QuantMatrix| {
            let matrices: Vec<&QuantMatrix> = experts.iter().map(|e| pick(e)).collect();
            TableMatrix::build(gpu, &matrices)
        };
        Some(Self {
            experts: experts.len(),
            wi: table(|e| &e.wi)?,
            wo: table(|e| &e.wo)?,
        })
    }

    /// How many experts (slots) it holds.
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Bytes it holds on the device.
    pub fn device_bytes(&self) -> u64 {
        [&self.wi, &self.wo]
            .iter()
            .map(|m| (m.slots * m.rows * (m.words * 4 + m.groups * m.scale_bytes())) as u64)
            .sum()
    }

    /// One token's feed-forward through the expert in slot `slot[0]`, scaled by `scale[0]`
    /// (exactly 0 when that is 0: a dropped token passes on only its residual).
    ///
    /// # Shapes
    /// - `x`: `[1, d_model]` → same
    ///
    /// # Errors
    /// [`CoreError::Input`] for more than one token or a width other than the experts';
    /// [`CoreError::Execution`] when `x` is not an f32 tensor on this GPU.
    pub fn run(
        &self,
        gpu: &Gpu,
        x: Tensor<2>,
        slot: &Handle,
        scale: &Handle,
    ) -> Result<Tensor<2>, CoreError> {
        let [tokens, d_model] = x.dims();
        if tokens != 1 || d_model != self.wi.cols {
            return Err(CoreError::Input(format!(
                "a table of experts of width {} runs one token, got [{tokens}, {d_model}]",
                self.wi.cols
            )));
        }
        let d_ff = self.wi.rows;
        let (x, x_len) = gpu.buffer(x)?;
        let h = gpu.client.empty(d_ff * 4);
        self.wi
            .launch(gpu, (&x, x_len), slot, None, (&h, d_ff), true);
        let out = gpu.client.empty(d_model * 4);
        self.wo
            .launch(gpu, (&h, d_ff), slot, Some(scale), (&out, d_model), false);
        Ok(gpu.tensor(out, [1, d_model]))
    }
}

impl TableMatrix {
    fn build(gpu: &Gpu, matrices: &[&QuantMatrix]) -> Option<Self> {
        let first = matrices.first()?;
        let same = matrices.iter().all(|m| {
            m.parts.len() == 1
                && m.shape() == first.shape()
                && (m.group, m.bits) == (first.group, first.bits)
                && m.parts[0].half == first.parts[0].half
        });
        if !same {
            return None;
        }
        let part = &first.parts[0];
        let (rows, words, groups, half) = (first.rows, part.words, part.groups, part.half);
        let scale_bytes = if half { 2 } else { 4 };
        let slots = matrices.len();
        let (weight_len, scales_len) = (slots * rows * words, slots * rows * groups);
        if weight_len * 4 > MAX_BINDING_BYTES || scales_len * scale_bytes > MAX_BINDING_BYTES {
            return None;
        }
        let weight = gpu.client.empty(weight_len * 4);
        let scales = gpu.client.empty(scales_len * scale_bytes);
        // `len` values of `src` into `dst` (of `dst_len`) from `offset`, as `T`
        macro_rules! copy {
            ($T:ty, $src:expr, $dst:expr, $offset:expr, $len:expr, $dst_len:expr) => {
                if $len > 0 {
                    copy_kernel::launch::<$T>(
                        &gpu.client,
                        CubeCount::Static(($len as u32).div_ceil(qmatmul::UNITS), 1, 1),
                        CubeDim::new_1d(qmatmul::UNITS),
                        // SAFETY: `src` is one expert's buffer of `len` values, `dst` the
                        // table's of `dst_len`.
                        unsafe { BufferArg::from_raw_parts($src.clone(), $len) },
                        unsafe { BufferArg::from_raw_parts($dst.clone(), $dst_len) },
                        $offset as u32,
                        $len as u32,
                    );
                }
            };
        }
        for (e, m) in matrices.iter().enumerate() {
            let p = &m.parts[0];
            copy!(
                u32,
                p.weight,
                weight,
                e * rows * words,
                rows * words,
                weight_len
            );
            if half {
                copy!(
                    half::f16,
                    p.scales,
                    scales,
                    e * rows * groups,
                    rows * groups,
                    scales_len
                );
            } else {
                copy!(
                    f32,
                    p.scales,
                    scales,
                    e * rows * groups,
                    rows * groups,
                    scales_len
                );
            }
        }
        Some(Self {
            slots,
            rows,
            cols: first.cols,
            group: first.group,
            bits: first.bits,
            half,
            words,
            weight,
            groups,
            scales,
        })
    }

    fn scale_bytes(&self) -> usize {
        if self.half { 2 } else { 4 }
    }

    /// The routed product of one row `x` with slot `slot[0]`, into `out` (`[1, rows]`),
    /// scaled by `scale[0]` when given.
    fn launch(
        &self,
        gpu: &Gpu,
        (x, x_len): (&Handle, usize),
        slot: &Handle,
        scale: Option<&Handle>,
        (out, out_len): (&Handle, usize),
        relu: bool,
    ) {
        let padded = padded_cols(self.cols, self.group);
        let scaled = scale.is_some();
        let (scale, scale_len) = scale.map_or((x.clone(), x_len), |s| (s.clone(), 1));
        let (weight_len, scales_len) = (
            self.slots * self.rows * self.words,
            self.slots * self.rows * self.groups,
        );
        macro_rules! go {
            ($S:ty) => {
                qmatmul_kernel::launch::<$S>(
                    &gpu.client,
                    CubeCount::Static((self.rows as u32).div_ceil(qmatmul::ROWS), 1, 1),
                    CubeDim::new_1d(qmatmul::UNITS),
                    // SAFETY: each length is the element count of the buffer the handle was
                    // created with (`x_len` and `out_len` by the caller; `slot` and `scale` hold
                    // one value; `x` stands in for the unused `rows_out`, never read).
                    unsafe { BufferArg::from_raw_parts(x.clone(), x_len) },
                    unsafe { BufferArg::from_raw_parts(slot.clone(), 1) },
                    unsafe { BufferArg::from_raw_parts(self.weight.clone(), weight_len) },
                    unsafe { BufferArg::from_raw_parts(self.scales.clone(), scales_len) },
                    unsafe { BufferArg::from_raw_parts(scale.clone(), scale_len) },
                    unsafe { BufferArg::from_raw_parts(x.clone(), x_len) },
                    unsafe { BufferArg::from_raw_parts(out.clone(), out_len) },
                    1,
                    self.cols as u32,
                    self.rows as u32,
                    self.rows as u32,
                    0,
                    1.0,
                    self.bits,
                    self.group as u32,
                    padded as u32,
                    1,
                    self.cols.is_multiple_of(32 / self.bits as usize),
                    relu,
                    false,
                    false,
                    scaled,
                    true,
                )
            };
        }
        if self.half {
            go!(half::f16);
        } else {
            go!(f32);
        }
    }
}
