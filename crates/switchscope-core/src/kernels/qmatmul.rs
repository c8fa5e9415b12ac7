//! The quantized matrix product on the GPU, with the expert's dispatch and combine folded in.
//!
//! `out[rows_out[i], col_offset + j] = post(row_scale[i] · Σₖ x[rows_in[i], k] · W[j, k])`
//! where `W` is stored as the shards store it (`docs/FORMAT.md`): row-major `[m, padded_k]`,
//! int8 (four values per `u32`, two's complement) or int4 (eight values per `u32`, `q + 8` in
//! each nibble), one f32 scale per `group` values of a row; `post` is ReLU or nothing.
//!
//! One cube computes one output feature `j` for up to `TOKENS` rows: its 64 units walk the
//! packed row together (adjacent units read adjacent words, so loads coalesce), each word is
//! dequantized in registers and multiplied with the rows' activations, and the 64 partial sums
//! of each row are reduced in shared memory. Weights are read once per block of rows; nothing
//! dequantized is ever written to memory.
//!
//! Gathering the tokens routed to one expert (`rows_in`) and scattering its output back to
//! their places with the routing weight (`rows_out`, `row_scale`) happen inside the same
//! kernel, so a sparse layer needs no extra passes and no host round trip per token.
//!
//! The CPU reference is [`super::reference::qmatmul`].

use cubecl::prelude::*;

/// Units per cube. The reduction below is unrolled for this size.
pub const UNITS: u32 = 64;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn qmatmul_kernel(
    x: &[f32],
    rows_in: &[u32],
    weight: &[u32],
    scales: &[f32],
    row_scale: &[f32],
    rows_out: &[u32],
    out: &mut [f32],
    n: u32,
    k: u32,
    out_stride: u32,
    col_offset: u32,
    #[comptime] bits: u32,
    #[comptime] group: u32,
    #[comptime] padded_k: u32,
    #[comptime] tokens: u32,
    #[comptime] relu: bool,
) {
    let unit = UNIT_POS;
    let j = CUBE_POS_X;
    let first = CUBE_POS_Y * tokens;
    let per_word = comptime!(32 / bits);
    let words = comptime!(padded_k / (32 / bits));
    let groups = comptime!(padded_k / group);
    let mut partial = Shared::new_slice(comptime!((tokens * UNITS) as usize));

    #[unroll]
    for t in 0..tokens {
        partial[(t * UNITS + unit) as usize] = 0.0f32;
    }

    let row_words = j * words;
    let mut w = unit;
    while w < words {
        let word = weight[(row_words + w) as usize];
        let base = w * per_word;
        let scale = scales[(j * groups + base / group) as usize];
        #[unroll]
        for t in 0..tokens {
            let i = first + t;
            if i < n {
                let x_row = rows_in[i as usize] * k;
                let mut acc = 0.0f32;
                #[unroll]
                for v in 0..per_word {
                    let kk = base + v;
                    if kk < k {
                        let code = (word >> (v * bits)) & comptime!((1u32 << bits) - 1);
                        let mut q = f32::cast_from(code);
                        if comptime!(bits == 8) {
                            if code >= 128u32 {
                                q -= 256.0f32;
                            }
                        } else {
                            q -= 8.0f32;
                        }
                        acc += x[(x_row + kk) as usize] * q;
                    }
                }
                partial[(t * UNITS + unit) as usize] += acc * scale;
            }
        }
        w += UNITS;
    }
    sync_cube();

    // Tree reduction of the 64 partial sums of each row.
    #[unroll]
    for step in 0..6u32 {
        let stride = comptime!(UNITS >> (step + 1));
        if unit < stride {
            #[unroll]
            for t in 0..tokens {
                let at = (t * UNITS + unit) as usize;
                partial[at] += partial[at + stride as usize];
            }
        }
        sync_cube();
    }

    if unit < tokens {
        let i = first + unit;
        if i < n {
            let mut y = partial[(unit * UNITS) as usize] * row_scale[i as usize];
            if comptime!(relu) {
                y = f32::max(y, 0.0f32);
            }
            out[(rows_out[i as usize] * out_stride + col_offset + j) as usize] = y;
        }
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
pub fn dequantize_kernel(
    weight: &[u32],
    scales: &[f32],
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
        out[i as usize] = q * scales[(r * comptime!(padded_k / group) + c / group) as usize];
    }
}
