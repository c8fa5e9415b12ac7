//! One query's attention in one launch: `softmax(q · Kᵀ + bias) · V` for every head, the
//! decode step's case (one new position per sequence).
//!
//! With burn's ops a head's attention is a dozen kernels (the query's and the keys' layouts
//! made contiguous, two matrix products, the bias, a softmax of five, the heads put back side
//! by side); a decode step runs two attentions per decoder block. [`super::reference::attend`]
//! is the definition.
//!
//! [`attend_kernel`]: one cube of [`UNITS`] units per (sequence, head). The units score the
//! keys (a stride each) into shared memory, reduce the largest score and then the sum of the
//! exponentials, and finally split the values' columns among them: `UNITS / d_kv` groups of
//! `d_kv` units, each group over a stride of the keys, the groups' sums added at the end. Up
//! to [`MAX_KEYS`] keys (the scores live in shared memory); longer sequences take burn's path.
//! Scores and sums are f32, as the reference computes them, in another order.

use cubecl::prelude::*;

pub use super::reduce::UNITS;
use super::reduce::{max_units, sum_units};

/// The most keys one launch attends to: 8 KiB of scores, within WebGPU's guaranteed 16 KiB of
/// workgroup memory beside the reductions' 2 KiB.
pub const MAX_KEYS: u32 = 2048;

#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn attend_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    out: &mut [f32],
    keys: u32,
    d_kv: u32,
    heads: u32,
    key_rows: u32,
    bias_batch: u32,
    bias_head: u32,
    bias_offset: u32,
) {
    let unit = UNIT_POS;
    let cube = CUBE_POS_X;
    let batch = cube / heads;
    let head = cube % heads;
    // q and out: [batch, heads · d_kv]; k and v: [batch, heads, key_rows, d_kv], `key_rows`
    // being `keys` or more (a cache with room to grow); the bias of key j of this head at
    // bias_at + j (strides of 0 share a row)
    let q_at = cube * d_kv;
    let kv_at = cube * key_rows * d_kv;
    let bias_at = batch * bias_batch + head * bias_head + bias_offset;

    let mut scores = Shared::new_slice(comptime!(MAX_KEYS as usize));
    let mut reduce = Shared::new_slice(comptime!(UNITS as usize));

    // Scores, and each unit's largest (WGSL has no infinity literal: the first score starts it).
    let mut best = 0.0f32.runtime();
    let mut j = unit;
    while j < keys {
        let row = kv_at + j * d_kv;
        let mut dot = 0.0f32.runtime();
        for d in 0..d_kv {
            dot += q[(q_at + d) as usize] * k[(row + d) as usize];
        }
        let s = dot + bias[(bias_at + j) as usize];
        scores[j as usize] = s;
        if j == unit || s > best {
            best = s;
        }
        j += UNITS;
    }
    sync_cube();
    // a unit without keys holds the first score (unit 0's), no larger than the maximum
    if unit >= keys {
        best = scores[0];
    }
    reduce[unit as usize] = best;
    sync_cube();
    max_units(&mut reduce, unit);
    let largest = reduce[0];
    sync_cube();

    // Exponentials and their sum.
    let mut sum = 0.0f32.runtime();
    let mut j = unit;
    while j < keys {
        let e = f32::exp(scores[j as usize] - largest);
        scores[j as usize] = e;
        sum += e;
        j += UNITS;
    }
    reduce[unit as usize] = sum;
    sync_cube();
    sum_units(&mut reduce, unit);
    let total = reduce[0];
    sync_cube();

    // Weighted values: group `g` of `d_kv` units over keys g, g + groups, ...
    let groups = UNITS / d_kv;
    let column = unit % d_kv;
    let group = unit / d_kv;
    let mut acc = 0.0f32.runtime();
    if group < groups {
        let mut j = group;
        while j < keys {
            acc += scores[j as usize] * v[(kv_at + j * d_kv + column) as usize];
            j += groups;
        }
    }
    reduce[unit as usize] = acc;
    sync_cube();
    if unit < d_kv {
        let mut value = 0.0f32.runtime();
        for g in 0..groups {
            value += reduce[(g * d_kv + unit) as usize];
        }
        out[(q_at + unit) as usize] = value / total;
    }
}
