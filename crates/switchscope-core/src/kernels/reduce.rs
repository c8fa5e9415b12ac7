//! Reductions over a cube's units in shared memory, shared by the kernels that reduce a row
//! ([`super::rms_norm`], [`super::attend`]).

use cubecl::prelude::*;

/// Units of a reducing cube: a power of two, halved [`HALVINGS`] times.
pub const UNITS: u32 = 256;
const HALVINGS: u32 = 8;

/// Adds `values[0..UNITS]` into `values[0]`, pairwise. Every unit of the cube calls it (it
/// holds barriers); `values[0]` is everyone's to read afterwards.
#[cube]
pub fn sum_units(values: &mut Shared<[f32]>, unit: u32) {
    #[unroll]
    for step in 0..HALVINGS {
        let stride = comptime!(UNITS >> (step + 1));
        if unit < stride {
            let a = unit as usize;
            values[a] += values[a + stride as usize];
        }
        sync_cube();
    }
}

/// The largest of `values[0..UNITS]` into `values[0]`, as [`sum_units`].
#[cube]
pub fn max_units(values: &mut Shared<[f32]>, unit: u32) {
    #[unroll]
    for step in 0..HALVINGS {
        let stride = comptime!(UNITS >> (step + 1));
        if unit < stride {
            let a = unit as usize;
            values[a] = f32::max(values[a], values[a + stride as usize]);
        }
        sync_cube();
    }
}
