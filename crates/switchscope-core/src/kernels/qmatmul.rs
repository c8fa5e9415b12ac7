//! The quantized matrix product on the GPU, with the expert's dispatch and combine folded in.
//!
//! `out[rows_out[i], col_offset + j] = post(row_scale[i] · Σₖ x[rows_in[i], k] · W[j, k])`
//! (the index lists and the per-row scale each optional: comptime `gather`, `scatter`,
//! `scaled`; without `scaled`, every row is scaled by `scale_all`, so a decode step's single
//! token needs no upload at all)
//! where `W` is stored as the shards store it (`docs/FORMAT.md`): row-major `[m, padded_k]`,
//! int8 (four values per `u32`, two's complement) or int4 (eight values per `u32`, `q + 8` in
//! each nibble), one f32 scale per `group` values of a row; `post` is ReLU or nothing.
//!
//! One cube computes 8 output features for up to 8 activation rows: 8 units share each packed
//! weight row (adjacent units read adjacent words), each word is dequantized in registers and
//! multiplied with the rows' activations, and each row's 8 partial sums are reduced in shared
//! memory (three barriers). Weights are read once per block of activation rows; nothing
//! dequantized is ever written to memory.
//!
//! Routed (comptime `routed`, one token): `W` is the slot `rows_in[0]` of a table holding every
//! expert of a layer ([`super::expert_table`]), the slot the router kernel chose on the device,
//! and the routing weight is `row_scale[0]`; so a decode step's sparse layer needs nothing from
//! the host.
//!
//! Gathering the tokens routed to one expert (`rows_in`) and scattering its output back to
//! their places with the routing weight (`rows_out`, `row_scale`) happen inside the same
//! kernel, so a sparse layer needs no extra passes and no host round trip per token.
//!
//! Scales are read as `S`: f16 where the adapter has `shader-f16` and every scale is exactly an
//! f16 (the shards store them so), f32 otherwise; arithmetic is f32 either way, so both give the
//! same results.
//!
//! The CPU reference is [`super::reference::qmatmul`].

use cubecl::prelude::*;

/// Units per cube: [`ROWS`] output features × [`LANES`] units each.
pub const UNITS: u32 = 64;
/// Output features (weight rows) per cube.
pub const ROWS: u32 = 8;
/// Units sharing one weight row; also the most activation rows one launch block handles.
pub const LANES: u32 = 8;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn qmatmul_kernel<S: Float>(
    x: &[f32],
    rows_in: &[u32],
    weight: &[u32],
    scales: &[S],
    row_scale: &[f32],
    rows_out: &[u32],
    out: &mut [f32],
    n: u32,
    k: u32,
    m: u32,
    out_stride: u32,
    col_offset: u32,
    scale_all: f32,
    #[comptime] bits: u32,
    #[comptime] group: u32,
    #[comptime] padded_k: u32,
    #[comptime] tokens: u32,
    #[comptime] exact_k: bool,
    #[comptime] relu: bool,
    #[comptime] gather: bool,
    #[comptime] scatter: bool,
    #[comptime] scaled: bool,
    #[comptime] routed: bool,
) {
    let unit = UNIT_POS;
    // routed: the matrix is one slot of a table of a layer's experts, the slot the router
    // kernel chose (`rows_in[0]`), and the routing weight is `row_scale[0]` (0: dropped)
    let mut slot = 0u32.runtime();
    if comptime!(routed) {
        slot = rows_in[0];
    }
    let lane = unit % LANES;
    let j = CUBE_POS_X * ROWS + unit / LANES;
    let first = CUBE_POS_Y * tokens;
    let per_word = comptime!(32 / bits);
    let words = comptime!(padded_k / (32 / bits));
    let groups = comptime!(padded_k / group);
    let mut partial = Shared::new_slice(comptime!((tokens * UNITS) as usize));

    #[unroll]
    for t in 0..tokens {
        partial[(t * UNITS + unit) as usize] = 0.0f32;
    }

    // one activation row (decode) accumulates in a register
    let mut total = 0.0f32;
    if j < m {
        let row_words = (slot * m + j) * words;
        let row_groups = (slot * m + j) * groups;
        let mut w = lane;
        while w < words {
            let word = weight[(row_words + w) as usize];
            let base = w * per_word;
            let scale = f32::cast_from(scales[(row_groups + base / group) as usize]);
            #[unroll]
            for t in 0..tokens {
                let i = first + t;
                if i < n {
                    let mut x_row = i * k;
                    if comptime!(gather && !routed) {
                        x_row = rows_in[i as usize] * k;
                    }
                    let mut acc = 0.0f32;
                    #[unroll]
                    for v in 0..per_word {
                        let kk = base + v;
                        // without `exact_k`, the row's last word may reach past `k`
                        if comptime!(exact_k) || kk < k {
                            let code = (word >> (v * bits)) & comptime!((1u32 << bits) - 1);
                            // int8: two's complement; int4: stored as q + 8
                            let q = if comptime!(bits == 8) {
                                f32::cast_from(code) - f32::cast_from(code >> 7u32) * 256.0f32
                            } else {
                                f32::cast_from(code) - 8.0f32
                            };
                            acc += x[(x_row + kk) as usize] * q;
                        }
                    }
                    if comptime!(tokens == 1) {
                        total += acc * scale;
                    } else {
                        partial[(t * UNITS + unit) as usize] += acc * scale;
                    }
                }
            }
            w += LANES;
        }
    }
    if comptime!(tokens == 1) {
        partial[unit as usize] = total;
    }
    sync_cube();

    // Tree reduction of each row's LANES partial sums (every unit reaches every barrier).
    #[unroll]
    for step in 0..3u32 {
        let stride = comptime!(LANES >> (step + 1));
        if lane < stride {
            #[unroll]
            for t in 0..tokens {
                let at = (t * UNITS + unit) as usize;
                partial[at] += partial[at + stride as usize];
            }
        }
        sync_cube();
    }

    // lane t writes row j's result for activation row t of the block
    let i = first + lane;
    if j < m && lane < tokens && i < n {
        let mut y = partial[(lane * UNITS + unit - lane) as usize];
        if comptime!(routed) {
            if comptime!(scaled) {
                // a dropped token's output is exactly 0, whatever the product
                let s = row_scale[0];
                y = if s == 0.0f32 { 0.0f32 } else { y * s };
            }
        } else if comptime!(scaled) {
            y *= row_scale[i as usize];
        } else {
            y *= scale_all;
        }
        if comptime!(relu) {
            y = f32::max(y, 0.0f32);
        }
        let mut row = i;
        if comptime!(scatter) {
            row = rows_out[i as usize];
        }
        out[(row * out_stride + col_offset + j) as usize] = y;
    }
}

/// Sets `len` values of `out` to zero (the combined output before the experts write into it).
#[cube(launch)]
pub fn fill_zero_kernel(out: &mut [f32], len: u32) {
    let i = ABSOLUTE_POS_X;
    if i < len {
        out[i as usize] = 0.0f32;
    }
}

/// Dequantizes rows of a packed matrix to f32 (`out[r · cols + c]`, padding dropped): for the
/// prefill of many tokens, where burn's tiled f32 matmul on a transient copy beats reading the
/// packed weights once per block of rows.
#[cube(launch)]
pub fn dequantize_kernel<S: Float>(
    weight: &[u32],
    scales: &[S],
    out: &mut [f32],
    rows: u32,
    cols: u32,
    #[comptime] bits: u32,
    #[comptime] group: u32,
    #[comptime] padded_k: u32,
) {
    let i = ABSOLUTE_POS_X;
    if i < rows * cols {
        let r = i / cols;
        let c = i % cols;
        let per_word = comptime!(32 / bits);
        let words = comptime!(padded_k / (32 / bits));
        let word = weight[(r * words + c / per_word) as usize];
        let code = (word >> ((c % per_word) * bits)) & comptime!((1u32 << bits) - 1);
        let mut q = f32::cast_from(code);
        if comptime!(bits == 8) {
            if code >= 128u32 {
                q -= 256.0f32;
            }
        } else {
            q -= 8.0f32;
        }
        out[i as usize] =
            q * f32::cast_from(scales[(r * comptime!(padded_k / group) + c / group) as usize]);
    }
}
