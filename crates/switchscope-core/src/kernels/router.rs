//! The router's decision on the GPU: softmax, top-1 and expert capacity in one pass.
//!
//! Input: the router's logits `[batch · seq, experts]`. Output, per token, one row of
//! `experts + 2` floats: the softmax probabilities, the chosen expert (argmax, ties to the
//! lowest index) and the token's 1-based position among the tokens of its sequence that chose
//! the same expert. A position above the capacity means the token is dropped (it passes on the
//! residual), exactly as transformers' `cumsum` over the one-hot choice decides it. Beside it,
//! for the experts' kernels to read on the device: each token's chosen expert (`slot`) and its
//! routing weight, 0 when the token is dropped by `capacity` (`scale`).
//!
//! One cube per sequence: its units take the tokens in turn, write each token's choice to
//! shared memory, and after a barrier count, for each of their tokens, the earlier tokens with
//! the same choice. Sequences of up to [`MAX_SEQ`] tokens (the model's input limit).
//!
//! The CPU reference is [`super::reference::route`].

use cubecl::prelude::*;

/// Units per cube.
pub const UNITS: u32 = 64;
/// The longest sequence one cube routes (shared memory holds one choice per token).
pub const MAX_SEQ: u32 = 1024;

#[cube(launch)]
pub fn route_kernel(
    logits: &[f32],
    out: &mut [f32],
    slot: &mut [u32],
    scale: &mut [f32],
    seq: u32,
    experts: u32,
    capacity: u32,
) {
    let unit = UNIT_POS;
    let sequence = CUBE_POS_X;
    let width = experts + 2;
    let mut choice = Shared::new_slice(comptime!(MAX_SEQ as usize));

    let mut t = unit;
    while t < seq {
        let row = sequence * seq + t;
        let base = row * experts;
        let mut max = logits[base as usize];
        for e in 1..experts {
            max = f32::max(max, logits[(base + e) as usize]);
        }
        let mut sum = 0.0f32;
        for e in 0..experts {
            sum += f32::exp(logits[(base + e) as usize] - max);
        }
        // argmax over the probabilities (as transformers takes it), ties to the lowest index
        let o = row * width;
        let mut best = 0u32.runtime();
        let mut best_p = (-1.0f32).runtime();
        for e in 0..experts {
            let p = f32::exp(logits[(base + e) as usize] - max) / sum;
            out[(o + e) as usize] = p;
            if p > best_p {
                best_p = p;
                best = e;
            }
        }
        out[(o + experts) as usize] = f32::cast_from(best);
        choice[t as usize] = best;
        t += UNITS;
    }
    sync_cube();

    let mut t = unit;
    while t < seq {
        let mine = choice[t as usize];
        let mut position = 1u32;
        for before in 0..t {
            if choice[before as usize] == mine {
                position += 1;
            }
        }
        let row = sequence * seq + t;
        out[(row * width + experts + 1) as usize] = f32::cast_from(position);
        slot[row as usize] = mine;
        let mut weight = 0.0f32;
        if position <= capacity {
            weight = out[(row * width + mine) as usize];
        }
        scale[row as usize] = weight;
        t += UNITS;
    }
}
