//! Switchscope's compute core.
//!
//! Everything numeric lives here and is written once against burn's device-dispatched
//! [`Tensor`](burn::Tensor): the same code runs on the browser's WebGPU, on native wgpu
//! (Vulkan, Metal, DX12) and on burn's Flex CPU backend, which is also the fallback in the
//! browser when no WebGPU adapter exists.
//!
//! The modules form layers; each imports only from layers below it (an xtask test checks):
//!
//! 1. [`error`], [`config`], [`backend`] (devices, reading tensors back), [`counters`] (what a
//!    run asks of the device), `tokenizer` (feature
//!    `tokenizer`: text ↔ ids with a `tokenizer.json`), and the wire types of
//!    `switchscope-wire` (re-exported as [`wire`]).
//! 2. [`formats`]: weights by checkpoint name from safetensors, `pytorch_model.bin` and
//!    converted model directories; quantization; the manifest; the converter.
//! 3. [`kernels`]: our GPU kernels and their plain-Rust references; [`probe`], a small fixed
//!    computation that proves a backend computes what the CPU computes.
//! 4. [`model`]: the Switch Transformer as pure computation over weights it is given.
//! 5. [`runtime`]: [`Switch`], a model opened for use (config, model, expert store, device),
//!    the expert store and its sources, generation.
//! 6. [`eval`]: what quantization costs.

pub mod backend;
pub mod config;
pub mod counters;
pub mod error;
pub mod eval;
pub mod formats;
pub mod kernels;
pub mod model;
pub mod probe;
pub mod runtime;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;

pub use backend::BackendKind;
pub use error::CoreError;
pub use runtime::{ModelLocation, OpenOptions, Switch};
/// The data the core, the worker and the page exchange.
pub use switchscope_wire as wire;

/// burn's tensor API, re-exported so that dependants use the same version.
pub use burn::tensor;
