//! A dense projection of one row per sequence in one launch, with what surrounds it in a decode
//! step: `out = post(scale · pre(x) · Wᵀ) (+ residual)`, where `pre` is T5's layer norm or
//! nothing and `post` a ReLU or nothing, written densely or into one position of the
//! self-attention's key/value cache.
//!
//! With burn's ops a decoder sub-layer in a decode step is the norm, a tiled matrix product per
//! projection, the cache grown by concatenation and the residual added: about eleven launches
//! for the self-attention, five for the cross-attention, six for a dense feed-forward. With this
//! kernel they are three, two and two (the attention itself is [`super::attend`]).
//! [`super::reference::project`] is the definition.
//!
//! [`project_kernel`]: a cube of [`UNITS`] units computes [`ROWS`] output features of one
//! sequence's row, [`LANES`] units per feature, each over a stride of the input (adjacent units
//! read adjacent weights); the lanes' partial sums are reduced in shared memory. With the norm,
//! the cube first reduces the row's sum of squares (every cube of the row does, the row being
//! short), and each input is scaled as it is read, so no normed row is ever written. Sums are
//! f32, in another order than a sequential one (results agree to rounding).
//!
//! Where `W`'s row `j` lands: `((row · n / group + j / group) · slots + slot) · group + j % group`.
//! A dense output is `group = n, slots = 1, slot = 0` (`row · n + j`); the keys of a cache laid
//! out `[batch, heads, slots, d_kv]` are `group = d_kv` and `slot` the decoded position.

use cubecl::prelude::*;

use super::reduce::sum_groups;
use super::rms_norm::inverse_rms;

/// Units per cube: [`ROWS`] output features × [`LANES`] units each.
pub const UNITS: u32 = 64;
/// Output features per cube.
pub const ROWS: u32 = 8;
/// Units sharing one output feature.
pub const LANES: u32 = 8;

#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn project_kernel(
    x: &[f32],
    norm: &[f32],
    weight: &[f32],
    residual: &[f32],
    out: &mut [f32],
    d_in: u32,
    n: u32,
    eps: f32,
    scale: f32,
    group: u32,
    slots: u32,
    slot: u32,
    #[comptime] normed: bool,
    #[comptime] relu: bool,
    #[comptime] add: bool,
) {
    let unit = UNIT_POS;
    let lane = unit % LANES;
    let j = CUBE_POS_X * ROWS + unit / LANES;
    let row = CUBE_POS_Y;
    let x_at = row * d_in;
    let mut partial = Shared::new_slice(comptime!(UNITS as usize));

    // T5's layer norm of the row: 1 / sqrt(mean of its squares + ε)
    let mut inv = 1.0f32.runtime();
    if comptime!(normed) {
        inv = inverse_rms(x, x_at, d_in, eps, &mut partial, unit, UNITS);
    }

    let mut acc = 0.0f32.runtime();
    if j < n {
        let w_at = j * d_in;
        let mut k = lane;
        while k < d_in {
            let mut v = x[(x_at + k) as usize];
            if comptime!(normed) {
                v = v * inv * norm[k as usize];
            }
            acc += v * scale * weight[(w_at + k) as usize];
            k += LANES;
        }
    }
    partial[unit as usize] = acc;
    sync_cube();
    sum_groups(&mut partial, unit, LANES);

    if lane == 0 && j < n {
        let mut y = partial[unit as usize];
        if comptime!(relu) {
            y = f32::max(y, 0.0f32);
        }
        if comptime!(add) {
            y += residual[(row * n + j) as usize];
        }
        let at = ((row * (n / group) + j / group) * slots + slot) * group + j % group;
        out[at as usize] = y;
    }
}
