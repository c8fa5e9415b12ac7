//! Greedy decoding's pick and the next step's embedding, on the GPU: the next token never has
//! to visit the host before the next step can be queued.
//!
//! [`argmax_kernel`]: one cube of [`UNITS`] units over one row of logits. Each unit scans a
//! stride of the row keeping its first largest value, then the units' bests are reduced in
//! shared memory, the lower index winning ties. NaN is never larger than anything, and a NaN
//! first value wins (nothing is larger than it), as in the sequential scan of
//! [`super::reference::argmax`], which this reproduces exactly.
//!
//! [`embed_kernel`]: copies row `ids[0]` of the embedding table (`[vocab, d_model]`) to `out`.

use cubecl::prelude::*;

/// Units of the argmax cube (a power of two: the reduction halves it 8 times).
pub const UNITS: u32 = 256;

/// An index no row has: "no value seen yet but NaN".
const NONE: u32 = u32::MAX;

#[cube(launch)]
pub fn argmax_kernel(logits: &[f32], out: &mut [u32], len: u32) {
    let unit = UNIT_POS;
    let mut value = Shared::new_slice(comptime!(UNITS as usize));
    let mut index = Shared::new_slice(comptime!(UNITS as usize));

    // (WGSL has no infinity literal: a unit's first non-NaN value starts its run instead)
    let mut best = 0.0f32.runtime();
    let mut at = NONE.runtime();
    let mut i = unit;
    while i < len {
        let v = logits[i as usize];
        if !is_nan(v) && (at == NONE || v > best) {
            best = v;
            at = i;
        }
        i += UNITS;
    }
    value[unit as usize] = best;
    index[unit as usize] = at;
    sync_cube();

    // Tree reduction over the units (every unit reaches every barrier).
    #[unroll]
    for step in 0..8u32 {
        let stride = comptime!(UNITS >> (step + 1));
        if unit < stride {
            let a = unit as usize;
            let b = (unit + stride) as usize;
            let va = value[a];
            let vb = value[b];
            let ia = index[a];
            let ib = index[b];
            if ib != NONE && (ia == NONE || vb > va || (vb == va && ib < ia)) {
                value[a] = vb;
                index[a] = ib;
            }
        }
        sync_cube();
    }

    if unit == 0 {
        let first = logits[0];
        let mut pick = index[0];
        // Only NaN, or a NaN first value: the sequential scan keeps 0.
        if pick == NONE || is_nan(first) {
            pick = 0u32;
        }
        out[0] = pick;
    }
}

/// Whether `v` is NaN, from its bits (float comparisons with NaN are not reliable on every
/// driver).
#[cube]
fn is_nan(v: f32) -> bool {
    (u32::reinterpret(v) & 0x7fff_ffffu32) > 0x7f80_0000u32
}

#[cube(launch)]
pub fn embed_kernel(table: &[f32], ids: &[u32], out: &mut [f32], width: u32) {
    let c = ABSOLUTE_POS_X;
    if c < width {
        let row = ids[0];
        out[c as usize] = table[(row * width + c) as usize];
    }
}
