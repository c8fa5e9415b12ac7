//! Switchscope in the browser.
//!
//! - [`protocol`]: the messages between the page and the worker (JSON over `postMessage`).
//! - `worker` (feature `compute`): runs in a dedicated Web Worker; picks WebGPU or the CPU and
//!   computes. Only the worker's binary links burn.
//! - [`client`]: the page's side of the worker, as async calls.
//! - [`app`] and [`components`]: the Leptos UI.
//! - [`gpu`]: WebGPU adapter discovery through `navigator.gpu` (page or worker).

pub mod app;
pub mod client;
pub mod components;
pub mod error;
pub mod gpu;
pub mod protocol;
#[cfg(feature = "compute")]
pub mod worker;

pub use error::WebError;
