//! T5's layer norm in one launch: `out = x · (mean(x²) + ε)^-½ · weight`, row by row.
//!
//! burn's tensor ops make it six kernels (square, mean, add ε, square root, reciprocal, two
//! products); a decode step runs one norm per sub-layer and one per stack, so fusing them is
//! a large share of a step's dispatches ([`super::reference::rms_norm`] is the definition).
//!
//! [`rms_norm_kernel`]: one cube of [`UNITS`] units per row. Each unit sums the squares of a
//! stride of the row, the sums are reduced in shared memory, and every unit then writes its
//! stride scaled. The sum is f32, in another order than a sequential one (results agree to
//! rounding).

use cubecl::prelude::*;

pub use super::reduce::UNITS;
use super::reduce::sum_groups;

#[cube(launch)]
pub fn rms_norm_kernel(x: &[f32], weight: &[f32], out: &mut [f32], width: u32, eps: f32) {
    let row = CUBE_POS_X;
    let unit = UNIT_POS;
    let base = row * width;
    let mut sums = Shared::new_slice(comptime!(UNITS as usize));
    let inv = inverse_rms(x, base, width, eps, &mut sums, unit, UNITS);
    let mut j = unit;
    while j < width {
        let at = (base + j) as usize;
        out[at] = x[at] * inv * weight[j as usize];
        j += UNITS;
    }
}

/// `(mean(x²) + ε)^-½` over the row `x[base..base + width]`, the factor of T5's layer norm:
/// each of the cube's `units` units sums the squares of a stride of the row, the sums are
/// reduced in `scratch` (`units` long, free again on return). Every unit of the cube calls it
/// (it holds barriers) and gets the factor.
#[cube]
pub fn inverse_rms(
    x: &[f32],
    base: u32,
    width: u32,
    eps: f32,
    scratch: &mut Shared<[f32]>,
    unit: u32,
    #[comptime] units: u32,
) -> f32 {
    let mut acc = 0.0f32.runtime();
    let mut i = unit;
    while i < width {
        let v = x[(base + i) as usize];
        acc += v * v;
        i += units;
    }
    scratch[unit as usize] = acc;
    sync_cube();
    sum_groups(scratch, unit, units);
    let inv = 1.0f32 / f32::sqrt(scratch[0] / f32::cast_from(width) + eps);
    // everyone has read the sum before the caller reuses the memory
    sync_cube();
    inv
}
