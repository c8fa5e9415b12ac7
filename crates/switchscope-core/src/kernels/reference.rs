//! Plain-Rust references of the GPU kernels, written for clarity: the parity tests compare
//! each kernel with its reference on random inputs.

use crate::formats::quant::Quantized;

/// [`super::qmatmul`]'s definition: for every `i < rows_in.len()` and output feature `j`,
/// `out[rows_out[i] · out_stride + col_offset + j] = post(row_scale[i] · Σₖ x[rows_in[i] · k + kk] · W[j, kk])`
/// with `W` the dequantized matrix `q` (`[m, k]`) and `post` ReLU when `relu`.
#[allow(clippy::too_many_arguments)]
pub fn qmatmul(
    x: &[f32],
    rows_in: &[u32],
    q: &Quantized,
    row_scale: &[f32],
    rows_out: &[u32],
    out: &mut [f32],
    out_stride: usize,
    col_offset: usize,
    relu: bool,
) {
    let (m, k) = (q.rows, q.cols);
    let w = q.dequantize();
    for (i, (&r_in, &r_out)) in rows_in.iter().zip(rows_out).enumerate() {
        let x_row = &x[r_in as usize * k..(r_in as usize + 1) * k];
        for j in 0..m {
            let dot: f32 = x_row
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
            let mut y = dot * row_scale[i];
            if relu {
                y = y.max(0.0);
            }
            out[r_out as usize * out_stride + col_offset + j] = y;
        }
    }
}

/// `x · Wᵀ` (then ReLU when `relu`) on all `n` rows of `x`: [`qmatmul`] without index lists.
pub fn matmul(x: &[f32], n: usize, q: &Quantized, relu: bool) -> Vec<f32> {
    let identity: Vec<u32> = (0..n as u32).collect();
    let mut out = vec![0.0; n * q.rows];
    qmatmul(
        x,
        &identity,
        q,
        &vec![1.0; n],
        &identity,
        &mut out,
        q.rows,
        0,
        relu,
    );
    out
}

/// One expert's contribution to a sparse layer's output `[tokens, d_model]` (`out`, added
/// in place): `weights[i] · wo · relu(wi · x[rows[i]])` written to row `rows[i]`.
pub fn expert(
    x: &[f32],
    rows: &[u32],
    weights: &[f32],
    wi: &Quantized,
    wo: &Quantized,
    out: &mut [f32],
) {
    let n = rows.len();
    let identity: Vec<u32> = (0..n as u32).collect();
    let mut h = vec![0.0; n * wi.rows];
    qmatmul(
        x,
        rows,
        wi,
        &vec![1.0; n],
        &identity,
        &mut h,
        wi.rows,
        0,
        true,
    );
    qmatmul(&h, &identity, wo, weights, rows, out, wo.rows, 0, false);
}

/// The router's decision for every sequence of `logits` (`[batch · seq, experts]`): per token
/// `experts + 2` values, as [`super::route`] returns them: the softmax probabilities, the
/// chosen expert and its 1-based position among the sequence's tokens that chose it.
pub fn route(logits: &[f32], seq: usize, experts: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len() / experts * (experts + 2));
    for sequence in logits.chunks_exact(seq * experts) {
        let probs: Vec<f32> = sequence
            .chunks_exact(experts)
            .flat_map(|row| {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
                row.iter().map(move |&v| (v - max).exp() / sum)
            })
            .collect();
        // capacity ∞: the position is what matters here, dropping is the caller's comparison
        let (_, chosen, _) = route_sequence(&probs, experts, usize::MAX);
        let mut load = vec![0usize; experts];
        for (row, &c) in probs.chunks_exact(experts).zip(&chosen) {
            load[c as usize] += 1;
            out.extend_from_slice(row);
            out.push(c as f32);
            out.push(load[c as usize] as f32);
        }
    }
    out
}

/// The index of the largest value, ties to the lowest index (the router's top-1, and greedy
/// decoding's pick).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// [`super::rms_norm`]'s definition, T5's layer norm: each row of `x` (`rows × width`,
/// row-major) times `1 / sqrt(mean of its squares + eps)`, then times `weight` element-wise.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let width = weight.len();
    x.chunks(width)
        .flat_map(|row| {
            let mean = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
            let inv = 1.0 / (mean + eps).sqrt();
            row.iter().zip(weight).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

/// [`super::attend`]'s definition for one sequence and head: `q` `[d_kv]`, `k` and `v`
/// `[keys, d_kv]` (row-major), `bias` `[keys]`; `softmax(q · kᵀ + bias) · v`, `[d_kv]`.
pub fn attend(q: &[f32], k: &[f32], v: &[f32], bias: &[f32]) -> Vec<f32> {
    let d_kv = q.len();
    let scores: Vec<f32> = k
        .chunks(d_kv)
        .zip(bias)
        .map(|(row, b)| row.iter().zip(q).map(|(a, c)| a * c).sum::<f32>() + b)
        .collect();
    let largest = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scores.iter().map(|s| (s - largest).exp()).collect();
    let total: f32 = weights.iter().sum();
    (0..d_kv)
        .map(|c| {
            let weighted: f32 = weights
                .iter()
                .zip(v.chunks(d_kv))
                .map(|(w, row)| w * row[c])
                .sum();
            weighted / total
        })
        .collect()
}

/// Top-1 routing of one sequence from its probabilities (`tokens × experts`, row-major):
/// argmax with ties to the lowest index, then capacity counted in position order.
pub fn route_sequence(
    probs: &[f32],
    experts: usize,
    capacity: usize,
) -> (Vec<i32>, Vec<u32>, Vec<f32>) {
    let tokens = probs.len() / experts;
    let mut load = vec![0usize; experts];
    let (mut expert, mut chosen, mut weight) = (
        Vec::with_capacity(tokens),
        Vec::with_capacity(tokens),
        Vec::with_capacity(tokens),
    );
    for row in probs.chunks_exact(experts) {
        let best = argmax(row);
        load[best] += 1;
        chosen.push(best as u32);
        weight.push(row[best]);
        expert.push(if load[best] <= capacity {
            best as i32
        } else {
            -1
        });
    }
    (expert, chosen, weight)
}

/// [`super::project`]'s definition: for each row of `x` (`rows × d_in`, row-major) and output
/// feature `j < n`, `post(Σₖ (scale · norm(x)ₖ) · W[j, k]) + residual[row, j]`, where `norm` is
/// [`rms_norm`] with `norm`'s weight and ε when given, `post` ReLU when `relu`; `[rows, n]`.
pub fn project(
    x: &[f32],
    weight: &[f32],
    n: usize,
    norm: Option<(&[f32], f32)>,
    scale: f32,
    relu: bool,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let d_in = weight.len() / n;
    let x = match norm {
        Some((w, eps)) => rms_norm(x, w, eps),
        None => x.to_vec(),
    };
    let rows = x.len() / d_in;
    let mut out = Vec::with_capacity(rows * n);
    for (r, row) in x.chunks(d_in).enumerate() {
        for j in 0..n {
            let dot: f32 = row
                .iter()
                .zip(&weight[j * d_in..(j + 1) * d_in])
                .map(|(a, w)| a * scale * w)
                .sum();
            let y = if relu { dot.max(0.0) } else { dot };
            out.push(y + residual.map_or(0.0, |res| res[r * n + j]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_drops_in_position_order_and_ties_go_low() {
        let probs = [
            0.5, 0.5, 0.0, // tie → expert 0
            0.7, 0.2, 0.1, // 0
            0.6, 0.3, 0.1, // 0, over capacity 2 → dropped
            0.1, 0.1, 0.8, // 2
        ];
        let (expert, chosen, weight) = route_sequence(&probs, 3, 2);
        assert_eq!(expert, vec![0, 0, -1, 2]);
        assert_eq!(chosen, vec![0, 0, 0, 2]);
        assert_eq!(weight, vec![0.5, 0.7, 0.6, 0.8]);
    }
}
