//! Named tensors on the host: what every weights format is read into.

use crate::CoreError;

/// A tensor on the host in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Where named tensors come from.
pub trait TensorSource {
    /// The tensor called `name`, or `None` when the source has no such name.
    ///
    /// # Errors
    /// I/O or format errors, naming the tensor and the file.
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError>;
}

/// Decodes little-endian floats of safetensors dtype `dtype` (`F32`, `F16`, `BF16`) to f32.
///
/// # Errors
/// [`CoreError::Weights`] naming the tensor for other dtypes.
pub fn decode_floats_named(dtype: &str, bytes: &[u8], name: &str) -> Result<Vec<f32>, CoreError> {
    Ok(match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(CoreError::Weights(format!(
                "tensor {name} has dtype {other}; expected F32, F16 or BF16"
            )));
        }
    })
}
