//! Switchscope in the browser.
//!
//! - [`protocol`]: the messages between the page and the worker (JSON over `postMessage`).
//! - `worker` (feature `compute`): runs in a dedicated Web Worker; picks WebGPU or the CPU,
//!   loads the model over HTTP (Cache API first), generates and streams the routing. Only the
//!   worker's binary links burn.
//! - [`client`]: the page's side of the worker, as async calls plus a stream listener.
//! - `app`, `state`, `text`, `spans` and `components` (feature `text`): the Leptos UI and the
//!   tokenizer, in the page's binary.
//! - [`gpu`]: WebGPU adapter discovery through `navigator.gpu` (page or worker).
//! - [`page`]: the page's own logic without the DOM (trace, exports, URL parameters,
//!   permalink), tested as it is.

#[cfg(feature = "text")]
pub mod app;
pub mod client;
#[cfg(feature = "text")]
pub mod components;
pub mod error;
pub mod gpu;
pub mod js;
pub mod page;
pub mod protocol;
/// Masked spans: where an answer ends, the prompt filled in. The page does not link
/// `switchscope-core`, so it compiles the core's dependency-free module as its own.
#[cfg(feature = "text")]
#[path = "../../crates/switchscope-core/src/model/spans.rs"]
pub mod spans;
#[cfg(feature = "text")]
pub mod state;
#[cfg(feature = "text")]
pub mod text;
#[cfg(feature = "compute")]
pub mod worker;

pub use error::WebError;
