//! Switchscope's compute core.
//!
//! Everything numeric lives here and is written once against burn's device-dispatched
//! [`Tensor`](burn::Tensor): the same code runs on the browser's WebGPU, on native wgpu
//! (Vulkan, Metal, DX12) and on burn's Flex CPU backend, which is also the fallback in the
//! browser when no WebGPU adapter exists.
//!
//! - [`backend`]: which backend a computation runs on, and how its device is created (once).
//! - [`model`]: the Switch Transformer (config, layers, routing, generation, weight loading).
//! - [`shards`]: the converted model format (manifest, quantized expert shards), the
//!   converter, and reading converted directories.
//! - `tokenizer` (feature `tokenizer`): text ↔ ids with a `tokenizer.json`.
//! - [`torch_pickle`]: reads `pytorch_model.bin` checkpoints without Python.
//! - [`probe`]: a small, fixed computation (matmul → ReLU → softmax) with a plain-Rust
//!   reference, used to prove that a backend computes what the CPU computes.

pub mod backend;
pub mod error;
pub mod kernels;
pub mod model;
pub mod probe;
pub mod shards;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;
pub mod torch_pickle;

pub use backend::BackendKind;
pub use error::CoreError;

/// burn's tensor API, re-exported so that dependants use the same version.
pub use burn::tensor;
