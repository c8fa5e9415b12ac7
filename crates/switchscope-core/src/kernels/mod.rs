//! Our own GPU compute kernels (CubeCL, compiled to WGSL for WebGPU and wgpu), each in its own
//! file beside a plain-Rust reference ([`reference`]):
//!
//! - [`qmatmul`](qmatmul/index.html): the product of activations with a block-wise int8/int4
//!   matrix read straight from the shard layout and dequantized in registers, with ReLU and
//!   the routing weight applied on the way out, and the expert's gather/scatter of its tokens
//!   folded into the same launch; two launches make an expert's feed-forward.
//! - [`router`](router/index.html): softmax, top-1 and expert capacity for whole sequences.
//! - [`expert_table`](expert_table/index.html): a layer's experts side by side, so that the
//!   router kernel's choice selects the expert on the device.
//! - [`argmax`](argmax/index.html): greedy decoding's pick and the next step's embedding, so
//!   that the next token stays on the device.
//! - [`rms_norm`](rms_norm/index.html): T5's layer norm in one launch instead of six.
//! - [`attend`](attend/index.html): one query's attention, every head, in one launch.
//! - [`project`](project/index.html): a decode step's dense projection with its layer norm, ReLU
//!   and residual folded in, written densely or into the self-attention's cache.
//!
//! [`gpu`](gpu/index.html) is the device they run on, [`quant_matrix`](quant_matrix/index.html)
//! the experts' matrices resident on it, [`launch`](launch/index.html) runs the sparse layer's
//! feed-forward and the router on burn tensors, and [`dense`](dense/index.html) the dense work.
//! Arithmetic is f32 on every adapter (SwiftShader and many devices have no `shader-f16`, and the
//! model's activations are f32). Where the adapter has `shader-f16` (lavapipe does), the scales
//! stay f16 on the device as the shards store them (exact f16 values only, so results are bit
//! for bit those of f32 scales); elsewhere f32.

pub mod reference;

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod argmax;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod attend;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod dense;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod expert_table;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod gpu;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod launch;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod project;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod qmatmul;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod quant_matrix;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
mod reduce;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod rms_norm;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub mod router;

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub use dense::{Around, BiasLayout, attend_one, layer_norm, project, project_into_cache};
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub use expert_table::ExpertTable;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub use gpu::{FUSED_MAX_TOKENS, Gpu, MAX_BINDING_BYTES};
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub use launch::{
    Assignment, DeviceRoute, DeviceToken, ReadLater, argmax, embed, quant_matmul, read_token,
    route, route_on_device, sparse_ffn,
};
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub use quant_matrix::{QuantExpert, QuantMatrix};
