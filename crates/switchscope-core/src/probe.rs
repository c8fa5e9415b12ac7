//! The backend probe: a small computation with known inputs and a plain-Rust reference.
//!
//! `softmax(relu(x · w), dim = 1)` exercises the three kinds of kernel the model is made of
//! (a matmul, an element-wise activation, a row reduction). Inputs are fixed functions of the
//! index, so every backend (and the reference) sees the same numbers, and the result is read back
//! asynchronously, which is the only read-back the browser allows.

use burn::tensor::{Device, Tensor, TensorData, activation};

use crate::CoreError;

/// Rows of `x` (tokens).
pub const ROWS: usize = 4;
/// Columns of `x`, rows of `w` (model width).
pub const INNER: usize = 16;
/// Columns of `w` (outputs per row).
pub const COLS: usize = 8;

/// The absolute tolerance within which two backends must agree on the probe (f32 on every
/// backend; softmax outputs lie in [0, 1]).
pub const TOLERANCE: f32 = 1e-5;

/// The probe's left input, `ROWS × INNER`, row-major.
pub fn input_x() -> Vec<f32> {
    (0..ROWS * INNER)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) / 10.0)
        .collect()
}

/// The probe's right input, `INNER × COLS`, row-major.
pub fn input_w() -> Vec<f32> {
    (0..INNER * COLS)
        .map(|i| ((i * 5 % 17) as f32 - 8.0) / 20.0)
        .collect()
}

/// The probe computed in plain Rust (f64 accumulation), `ROWS × COLS`, row-major.
pub fn reference() -> Vec<f32> {
    let (x, w) = (input_x(), input_w());
    let mut out = vec![0.0f32; ROWS * COLS];
    for r in 0..ROWS {
        let logits: Vec<f64> = (0..COLS)
            .map(|c| {
                let dot: f64 = (0..INNER)
                    .map(|k| f64::from(x[r * INNER + k]) * f64::from(w[k * COLS + c]))
                    .sum();
                dot.max(0.0)
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|v| (v - max).exp()).sum();
        for c in 0..COLS {
            out[r * COLS + c] = ((logits[c] - max).exp() / sum) as f32;
        }
    }
    out
}

/// Runs the probe on `device` and reads the `ROWS × COLS` result back.
///
/// # Errors
/// [`CoreError::Execution`] if the device fails to execute or read back (e.g. a lost device).
pub async fn run(device: &Device) -> Result<Vec<f32>, CoreError> {
    let x = Tensor::<2>::from_data(TensorData::new(input_x(), [ROWS, INNER]), device);
    let w = Tensor::<2>::from_data(TensorData::new(input_w(), [INNER, COLS]), device);
    let y = activation::softmax(activation::relu(x.matmul(w)), 1);
    let data = y
        .into_data_async()
        .await
        .map_err(|e| CoreError::Execution(e.to_string()))?;
    data.try_into_vec::<f32>()
        .map_err(|e| CoreError::Execution(format!("{e:?}")))
}

/// The largest absolute element-wise difference between two results of equal length.
///
/// # Panics
/// If the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "results of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_rows_are_distributions() {
        let r = reference();
        for row in r.chunks(COLS) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "row sums to {sum}");
        }
        // The inputs were chosen so that rows differ and ReLU clips some logits.
        assert!(max_abs_diff(&r[..COLS], &r[COLS..2 * COLS]) > 1e-3);
    }

    #[test]
    fn cpu_matches_reference() {
        let got = pollster::block_on(run(&crate::backend::cpu_device())).unwrap();
        let diff = max_abs_diff(&got, &reference());
        assert!(
            diff <= TOLERANCE,
            "Flex differs from the reference by {diff}"
        );
    }
}
