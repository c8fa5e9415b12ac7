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
    sum_groups(values, unit, UNITS);
}

/// Adds each run of `group` adjacent values of `values` into the run's first, pairwise
/// (`group` a power of two, the cube's units a multiple of it). Every unit of the cube calls
/// it (it holds barriers).
#[cube]
pub fn sum_groups(values: &mut Shared<[f32]>, unit: u32, #[comptime] group: u32) {
    let lane = unit % group;
    #[unroll]
    for step in 0..comptime!(group.trailing_zeros()) {
        let stride = comptime!(group >> (step + 1));
        if lane < stride {
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
