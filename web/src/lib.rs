//! Switchscope in the browser.
//!
//! - [`protocol`]: the messages between the page and the worker (JSON over `postMessage`).
//! - `worker` (feature `compute`): runs in a dedicated Web Worker; picks WebGPU or the CPU,
//!   loads the model over HTTP (Cache API first), generates and streams the routing. Only the
//!   worker's binary links burn.
//! - [`client`]: the page's side of the worker, as async calls plus a stream listener.
//! - `app` (the root component), `ctx` (state, worker, tokenizer and the actions on them),
//!   `url` (what the URL asks for), `state`, `text`, `spans`, `components` (the panels, by
//!   feature), `embed` (the embedded view's postMessage API) and `pwa` (service worker,
//!   storage) (feature `text`): the Leptos UI and the tokenizer, in the page's binary.
//! - [`gpu`]: WebGPU adapter discovery through `navigator.gpu` (page or worker).
//! - [`page`]: the page's own logic without the DOM (trace, exports, URL parameters,
//!   permalink), tested as it is; [`presets`]: the prompt menu's tasks.

#[cfg(feature = "text")]
pub mod app;
pub mod client;
#[cfg(feature = "text")]
pub mod components;
#[cfg(feature = "text")]
pub mod ctx;
#[cfg(feature = "text")]
pub mod embed;
pub mod error;
pub mod gpu;
pub mod js;
pub mod page;
pub mod presets;
pub mod protocol;
#[cfg(feature = "text")]
pub mod pwa;
/// Masked spans: where an answer ends, the prompt filled in.
#[cfg(feature = "text")]
pub use switchscope_wire::spans;
#[cfg(feature = "text")]
pub mod state;
#[cfg(feature = "text")]
pub mod text;
#[cfg(feature = "text")]
pub mod url;
#[cfg(feature = "compute")]
pub mod worker;

pub use error::WebError;
