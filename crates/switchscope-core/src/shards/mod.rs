//! The converted model format (`docs/FORMAT.md`): a manifest, one dense-weights file and one
//! quantized shard per expert, so that experts can be fetched only when routed to.

pub mod convert;
pub mod files;
pub mod manifest;
pub mod quant;
pub mod report;
pub mod safetensors;
pub mod source;
pub mod store;
