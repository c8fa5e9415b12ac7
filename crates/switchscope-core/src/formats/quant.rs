//! Block-wise quantization of expert weights, and its exact inverse used at load time.
//!
//! A weight matrix `[rows, cols]` (the checkpoint's `[out, in]`) is quantized along `cols` (the
//! input dimension) in groups of `group_size` values, each group with one scale:
//! - int8: `q = round(w / s)` in `[-127, 127]`, `s = max|w| / 127`, one byte per value;
//! - int4: `q = round(w / s)` in `[-7, 7]`, `s = max|w| / 7`, stored as `q + 8` in 4 bits,
//!   eight values per little-endian `u32` (value `j` of a word in bits `4j..4j+4`).
//!
//! Rows are padded with zeros to a multiple of `group_size` (itself a multiple of 8), so every
//! row starts on a `u32` boundary and WebGPU kernels can read it with `u32` loads.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// How expert weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    F32,
    F16,
    Int8,
    Int4,
}

impl Scheme {
    /// The name used on the command line and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        }
    }

    /// Parses `f32`, `f16`, `int8` or `int4`.
    ///
    /// # Errors
    /// [`CoreError::Input`] naming the value.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" => Ok(Self::Int8),
            "int4" => Ok(Self::Int4),
            other => Err(CoreError::Input(format!(
                "unknown quantization {other:?}: use int8, int4, f16 or f32"
            ))),
        }
    }

    /// Whether values are stored as integers with scales.
    pub fn is_quantized(self) -> bool {
        matches!(self, Self::Int8 | Self::Int4)
    }
}

/// A quantized matrix in the shard layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
    pub scheme: Scheme,
    /// int8: `rows × padded_cols` bytes (two's complement); int4: `rows × padded_cols / 8`
    /// words as little-endian bytes.
    pub data: Vec<u8>,
    /// `rows × padded_cols / group_size` scales, row-major.
    pub scales: Vec<f32>,
}

/// `cols` rounded up to a whole number of groups.
pub fn padded_cols(cols: usize, group_size: usize) -> usize {
    cols.div_ceil(group_size) * group_size
}

/// Checks a group size: a positive multiple of 8 (one `u32` of int4 values).
///
/// # Errors
/// [`CoreError::Input`] otherwise.
pub fn check_group_size(group_size: usize) -> Result<(), CoreError> {
    if group_size == 0 || !group_size.is_multiple_of(8) {
        return Err(CoreError::Input(format!(
            "group size {group_size} must be a positive multiple of 8 (32 or 64 are usual)"
        )));
    }
    Ok(())
}

/// Quantizes a row-major `[rows, cols]` matrix.
///
/// # Errors
/// [`CoreError::Input`] for a bad group size, an unquantized scheme, or a length mismatch.
pub fn quantize(
    values: &[f32],
    rows: usize,
    cols: usize,
    scheme: Scheme,
    group_size: usize,
) -> Result<Quantized, CoreError> {
    check_group_size(group_size)?;
    if values.len() != rows * cols {
        return Err(CoreError::Input(format!(
            "{} values for a {rows}×{cols} matrix",
            values.len()
        )));
    }
    let qmax = match scheme {
        Scheme::Int8 => 127.0f32,
        Scheme::Int4 => 7.0,
        other => {
            return Err(CoreError::Input(format!(
                "{} is not a quantized scheme",
                other.as_str()
            )));
        }
    };
    let padded = padded_cols(cols, group_size);
    let groups = padded / group_size;
    let mut scales = Vec::with_capacity(rows * groups);
    let mut codes = vec![0i8; rows * padded];
    for r in 0..rows {
        let row = &values[r * cols..(r + 1) * cols];
        for g in 0..groups {
            let start = g * group_size;
            let end = (start + group_size).min(cols);
            let max = row
                .get(start..end)
                .unwrap_or(&[])
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / qmax } else { 1.0 };
            scales.push(scale);
            for c in start..end {
                codes[r * padded + c] = (row[c] / scale).round().clamp(-qmax, qmax) as i8;
            }
        }
    }
    let data = match scheme {
        Scheme::Int8 => codes.iter().map(|&q| q as u8).collect(),
        _ => codes
            .chunks_exact(8)
            .flat_map(|eight| {
                let word = eight
                    .iter()
                    .enumerate()
                    .fold(0u32, |w, (j, &q)| w | (u32::from((q + 8) as u8) << (4 * j)));
                word.to_le_bytes()
            })
            .collect(),
    };
    Ok(Quantized {
        rows,
        cols,
        group_size,
        scheme,
        data,
        scales,
    })
}

impl Quantized {
    /// The stored code of element `(r, c)` of the padded matrix, as a signed integer.
    pub fn code(&self, r: usize, c: usize) -> i32 {
        let padded = padded_cols(self.cols, self.group_size);
        let i = r * padded + c;
        match self.scheme {
            Scheme::Int8 => i32::from(self.data[i] as i8),
            _ => {
                let word = u32::from_le_bytes(
                    self.data[(i / 8) * 4..(i / 8) * 4 + 4]
                        .try_into()
                        .expect("4 bytes"),
                );
                ((word >> (4 * (i % 8))) & 0xF) as i32 - 8
            }
        }
    }

    /// The matrix in f32, `[rows, cols]` row-major (padding dropped).
    pub fn dequantize(&self) -> Vec<f32> {
        let padded = padded_cols(self.cols, self.group_size);
        let groups = padded / self.group_size;
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let scale = self.scales[r * groups + c / self.group_size];
                out.push(self.code(r, c) as f32 * scale);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| (((i * 7919) % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 5) as f32))
            .collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        // Odd sizes: 37 columns is not a multiple of the group size.
        let (rows, cols) = (5, 37);
        let w = matrix(rows, cols);
        for (scheme, qmax) in [(Scheme::Int8, 127.0f32), (Scheme::Int4, 7.0)] {
            for group in [8, 32] {
                let q = quantize(&w, rows, cols, scheme, group).unwrap();
                let back = q.dequantize();
                let groups = padded_cols(cols, group) / group;
                for r in 0..rows {
                    for c in 0..cols {
                        let scale = q.scales[r * groups + c / group];
                        let err = (back[r * cols + c] - w[r * cols + c]).abs();
                        assert!(
                            err <= scale / 2.0 + 1e-6,
                            "{scheme:?} g{group} ({r},{c}): {err} > {scale}/2"
                        );
                        assert!(q.code(r, c).abs() <= qmax as i32);
                    }
                }
            }
        }
    }

    #[test]
    fn int4_packs_eight_values_per_word() {
        let w: Vec<f32> = (0..8).map(|i| i as f32 - 7.0).collect(); // -7..0
        let q = quantize(&w, 1, 8, Scheme::Int4, 8).unwrap();
        assert_eq!(q.data.len(), 4);
        assert_eq!(q.scales, vec![1.0]);
        let word = u32::from_le_bytes(q.data[..4].try_into().unwrap());
        for j in 0..8 {
            assert_eq!(((word >> (4 * j)) & 0xF) as i32 - 8, j - 7);
        }
        assert!(quantize(&w, 1, 8, Scheme::Int4, 12).is_err());
        assert!(quantize(&w, 1, 8, Scheme::F16, 8).is_err());
    }
}
