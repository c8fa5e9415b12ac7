//! Formats and I/O: weights by checkpoint name from every file format the model comes in, and
//! the converted model format this project defines (see `docs/FORMAT.md`). Nothing here runs the
//! model; everything above reads weights through [`tensor::TensorSource`].
//!
//! - [`tensor`]: host tensors and the [`tensor::TensorSource`] trait.
//! - [`safetensors`], [`torch_pickle`]: the two checkpoint file formats, read without Python.
//! - [`zip`]: finding a stored zip entry from the archive's directory alone.
//! - [`ranged`]: a checkpoint's tensors as byte ranges, found by reading headers through
//!   [`ranged::RangeRead`] (a local file, or HTTP one range at a time).
//! - [`checkpoint`]: a Hugging Face checkpoint directory (`config.json` and its weights).
//! - [`quant`]: block-wise int8/int4 quantization.
//! - [`manifest`]: `manifest.json`, and the size and SHA-256 check every file goes through.
//! - [`shard`]: tensor names in checkpoint order and how a stored matrix is read back.
//! - [`converted`]: a converted model's weights by checkpoint name.
//! - [`convert`]: the converter (checkpoint → converted model directory).

pub mod checkpoint;
pub mod convert;
pub mod converted;
pub mod manifest;
pub mod quant;
pub mod ranged;
pub mod safetensors;
pub mod shard;
pub mod tensor;
pub mod torch_pickle;
pub mod zip;
