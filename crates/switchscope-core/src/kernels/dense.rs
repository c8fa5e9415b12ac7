//! A decode step's dense work launched on burn tensors: the layer norm, projections with their
//! norm, ReLU and residual folded in (one row per sequence, written densely or into the
//! self-attention's cache), and one query's attention.

// Buffers are bound to kernels with their lengths (CubeCL's `BufferArg::from_raw_parts`, an
// `unsafe` function: a wrong length could let a kernel read or write out of bounds). Every
// length below is the length of the buffer the handle was created with, and every kernel
// bounds its indices by the sizes it is given.
#![allow(unsafe_code)]

use burn::tensor::Tensor;
use cubecl::prelude::*;
use cubecl::server::Handle;

use super::attend::{self, attend_kernel};
use super::gpu::Gpu;
use super::project::{self, project_kernel};
use super::rms_norm::{self, rms_norm_kernel};
use crate::CoreError;

/// T5's layer norm of every row of `x` with `weight` (see [`rms_norm`](super::rms_norm)), in
/// one launch.
///
/// # Shapes
/// - `x`: `[rows, width]`, `weight`: `[width]` → `[rows, width]`
///
/// # Errors
/// [`CoreError::Execution`] when `x` or `weight` is not an f32 tensor on this GPU;
/// [`CoreError::Input`] when their widths differ.
pub fn layer_norm(
    gpu: &Gpu,
    x: Tensor<2>,
    weight: Tensor<1>,
    eps: f64,
) -> Result<Tensor<2>, CoreError> {
    let [rows, width] = x.dims();
    let [w_width] = weight.dims();
    if w_width != width {
        return Err(CoreError::Input(format!(
            "a layer norm of width {w_width} for rows of width {width}"
        )));
    }
    let (x, x_len) = gpu.buffer(x)?;
    let (w, w_len) = gpu.buffer(weight.reshape([1, width]))?;
    let out = gpu.client.empty((rows * width).max(1) * 4);
    if rows > 0 && width > 0 {
        rms_norm_kernel::launch(
            &gpu.client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(rms_norm::UNITS),
            // SAFETY: the lengths are the buffers' element counts.
            unsafe { BufferArg::from_raw_parts(x, x_len) },
            unsafe { BufferArg::from_raw_parts(w, w_len) },
            unsafe { BufferArg::from_raw_parts(out.clone(), rows * width) },
            width as u32,
            eps as f32,
        );
    }
    Ok(gpu.tensor(out, [rows, width]))
}

/// Where the bias of sequence `b`, head `h`, key `j` sits in a flat bias buffer:
/// `b · batch + h · head + offset + j` (a stride of 0 shares one row).
#[derive(Debug, Clone, Copy, Default)]
pub struct BiasLayout {
    pub batch: usize,
    pub head: usize,
    pub offset: usize,
}

/// One query per sequence attending to `keys` cached keys, every head in one launch (see
/// [`attend`](super::attend)): `softmax(q · Kᵀ + bias) · V`, the heads side by side.
/// `None` when the kernel does not take these sizes (more than [`attend::MAX_KEYS`] keys, heads
/// wider than its cube): the caller keeps burn's ops.
///
/// # Shapes
/// - `q`: `[batch, heads · d_kv]`; `k`, `v`: `[batch, heads, rows ≥ keys, d_kv]`
/// - `bias`: flat, laid out as `layout` says
/// - output: `[batch, heads · d_kv]`
///
/// # Errors
/// [`CoreError::Execution`] when a tensor is not an f32 tensor on this GPU;
/// [`CoreError::Input`] when the shapes disagree or the bias is too short.
pub fn attend_one(
    gpu: &Gpu,
    q: Tensor<2>,
    (k, v): (Tensor<4>, Tensor<4>),
    keys: usize,
    bias: Tensor<1>,
    layout: BiasLayout,
) -> Result<Option<Tensor<2>>, CoreError> {
    let [batch, heads, rows, d_kv] = k.dims();
    if keys == 0 || keys > attend::MAX_KEYS as usize || d_kv == 0 || d_kv > attend::UNITS as usize {
        return Ok(None);
    }
    let [bias_len] = bias.dims();
    let last_bias = (batch - 1) * layout.batch + (heads - 1) * layout.head + layout.offset + keys;
    if q.dims() != [batch, heads * d_kv]
        || v.dims() != k.dims()
        || rows < keys
        || last_bias > bias_len
    {
        return Err(CoreError::Input(format!(
            "attention of a query {:?} to {keys} keys of {:?} and values of {:?}, with {bias_len} biases",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    let flat = |t: Tensor<4>| t.reshape([batch * heads * rows, d_kv]);
    let (q, q_len) = gpu.buffer(q)?;
    let (k, k_len) = gpu.buffer(flat(k))?;
    let (v, v_len) = gpu.buffer(flat(v))?;
    let (b, b_len) = gpu.buffer(bias.reshape([1, bias_len]))?;
    let out = gpu.client.empty(batch * heads * d_kv * 4);
    let u = |n: usize| n as u32;
    attend_kernel::launch(
        &gpu.client,
        CubeCount::Static(u(batch * heads), 1, 1),
        CubeDim::new_1d(attend::UNITS),
        // SAFETY: the lengths are the buffers' element counts.
        unsafe { BufferArg::from_raw_parts(q, q_len) },
        unsafe { BufferArg::from_raw_parts(k, k_len) },
        unsafe { BufferArg::from_raw_parts(v, v_len) },
        unsafe { BufferArg::from_raw_parts(b, b_len) },
        unsafe { BufferArg::from_raw_parts(out.clone(), batch * heads * d_kv) },
        u(keys),
        u(d_kv),
        u(heads),
        u(rows),
        u(layout.batch),
        u(layout.head),
        u(layout.offset),
    );
    Ok(Some(gpu.tensor(out, [batch, heads * d_kv])))
}

/// What surrounds a projection in a decode step ([`project`]): the input's layer norm
/// (its weight and ε), a scale of the input (the tied output layer's), a ReLU, a residual.
#[derive(Debug, Clone, Default)]
pub struct Around {
    pub norm: Option<(Tensor<1>, f64)>,
    /// The input's scale; 1 when `None`.
    pub scale: Option<f32>,
    pub relu: bool,
    /// `[rows, n]`, added to the output.
    pub residual: Option<Tensor<2>>,
}

/// Where a projection writes ([`project_kernel`]'s layout): its output, `group`, `slots`, `slot`.
struct Target<'a> {
    out: &'a Handle,
    len: usize,
    group: usize,
    slots: usize,
    slot: usize,
}

/// `post(scale · norm(x) · Wᵀ) + residual` for every row of `x`, in one launch (see
/// [`project`](super::project)).
///
/// # Shapes
/// - `x`: `[rows, d_in]`, `weight`: `[n, d_in]` (as checkpoints store it) → `[rows, n]`
///
/// # Errors
/// [`CoreError::Execution`] when a tensor is not an f32 tensor on this GPU;
/// [`CoreError::Input`] when the shapes disagree.
pub fn project(
    gpu: &Gpu,
    x: Tensor<2>,
    weight: Tensor<2>,
    around: &Around,
) -> Result<Tensor<2>, CoreError> {
    let [rows, _] = x.dims();
    let [n, _] = weight.dims();
    let out = gpu.client.empty((rows * n).max(1) * 4);
    let target = Target {
        out: &out,
        len: rows * n,
        group: n,
        slots: 1,
        slot: 0,
    };
    launch_project(gpu, x, weight, around, &target)?;
    Ok(gpu.tensor(out, [rows, n]))
}

/// Projects each row of `x` to the keys (or values) of one new position, written at `slot` of
/// a cache laid out `[rows, heads, slots, d_kv]` (its other positions are left as they are);
/// `norm` is the input's layer norm.
///
/// # Shapes
/// - `x`: `[rows, d_in]`, `weight`: `[heads · d_kv, d_in]`, `cache`: `[rows, heads, slots, d_kv]`
///
/// # Errors
/// As [`project`]; [`CoreError::Input`] also when `slot` is not below `slots`.
pub fn project_into_cache(
    gpu: &Gpu,
    x: Tensor<2>,
    weight: Tensor<2>,
    norm: (Tensor<1>, f64),
    cache: &Tensor<4>,
    slot: usize,
) -> Result<(), CoreError> {
    let [rows, heads, slots, d_kv] = cache.dims();
    let [n, _] = weight.dims();
    if x.dims()[0] != rows || n != heads * d_kv || slot >= slots {
        return Err(CoreError::Input(format!(
            "keys of width {n} for {:?} rows into position {slot} of a cache of {:?}",
            x.dims()[0],
            cache.dims()
        )));
    }
    // the cache's own buffer (contiguous as made), written in place
    let (out, len) = gpu.buffer(cache.clone().reshape([rows * heads * slots, d_kv]))?;
    let target = Target {
        out: &out,
        len,
        group: d_kv,
        slots,
        slot,
    };
    let around = Around {
        norm: Some(norm),
        ..Around::default()
    };
    launch_project(gpu, x, weight, &around, &target)
}

fn launch_project(
    gpu: &Gpu,
    x: Tensor<2>,
    weight: Tensor<2>,
    around: &Around,
    target: &Target<'_>,
) -> Result<(), CoreError> {
    let [rows, d_in] = x.dims();
    let [n, w_in] = weight.dims();
    let norm_width = around.norm.as_ref().map_or(d_in, |(w, _)| w.dims()[0]);
    let residual_dims = around.residual.as_ref().map_or([rows, n], Tensor::dims);
    if w_in != d_in || norm_width != d_in || residual_dims != [rows, n] {
        return Err(CoreError::Input(format!(
            "a projection {:?} of rows {:?} (norm of width {norm_width}, residual {residual_dims:?})",
            weight.dims(),
            x.dims()
        )));
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let (x, x_len) = gpu.buffer(x)?;
    let (w, w_len) = gpu.buffer(weight)?;
    // unused bindings still need a buffer: `x` stands in (never read)
    let (norm, norm_len) = match &around.norm {
        Some((weight, _)) => gpu.buffer(weight.clone().reshape([1, d_in]))?,
        None => (x.clone(), x_len),
    };
    let (residual, residual_len) = match &around.residual {
        Some(r) => gpu.buffer(r.clone())?,
        None => (x.clone(), x_len),
    };
    let eps = around.norm.as_ref().map_or(0.0, |(_, eps)| *eps as f32);
    let u = |n: usize| n as u32;
    project_kernel::launch(
        &gpu.client,
        CubeCount::Static(u(n).div_ceil(project::ROWS), u(rows), 1),
        CubeDim::new_1d(project::UNITS),
        // SAFETY: the lengths are the buffers' element counts.
        unsafe { BufferArg::from_raw_parts(x.clone(), x_len) },
        unsafe { BufferArg::from_raw_parts(norm, norm_len) },
        unsafe { BufferArg::from_raw_parts(w, w_len) },
        unsafe { BufferArg::from_raw_parts(residual, residual_len) },
        unsafe { BufferArg::from_raw_parts(target.out.clone(), target.len) },
        u(d_in),
        u(n),
        eps,
        around.scale.unwrap_or(1.0),
        u(target.group),
        u(target.slots),
        u(target.slot),
        around.norm.is_some(),
        around.relu,
        around.residual.is_some(),
    );
    Ok(())
}
