//! The data that Switchscope's parts exchange, defined once: the core produces it, the compute
//! worker sends it to the page as JSON, the page and the CLI show and export it.
//!
//! Serde only (no burn, no tokenizer): the page's wasm links this crate and nothing of the
//! core's numerics.
//!
//! - [`routing`]: which stack a layer is in, what a router did with a sequence.
//! - [`store`]: what happened to expert shards, and the expert store's counters.
//! - [`sampling`]: how the next token is picked.
//! - [`spans`]: masked spans (`<extra_id_N>`) and the answer that fills them in.
//! - [`ranges`]: the names of a checkpoint's byte ranges read in place.
//! - [`limits`]: the longest input the front ends pass to the model.
//! - [`device`]: what a run asked of the device (dispatches, uploads, host waits).

pub mod device;
pub mod limits;
pub mod ranges;
pub mod routing;
pub mod sampling;
pub mod spans;
pub mod store;

pub use device::{DeviceCounts, PerStep};
pub use limits::{MAX_INPUT_TOKENS, fit_input};
pub use routing::{ExpertId, LayerRouting, Stack};
pub use sampling::Sampling;
pub use store::{Origin, ShardEvent, ShardEventKind, StoreStats};
