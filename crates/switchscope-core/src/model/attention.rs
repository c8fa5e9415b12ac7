//! T5 attention with relative position bias (`SelfAttention`, `EncDecAttention`).

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData, activation};

use super::layers::linear;

/// Multi-head attention without scaling of the scores and without biases.
/// Mirrors `SwitchTransformersAttention` (`*.SelfAttention.{q,k,v,o}.weight`).
#[derive(Module, Debug)]
pub struct Attention {
    /// `[heads × d_kv, d_model]`
    pub q: Param<Tensor<2>>,
    pub k: Param<Tensor<2>>,
    pub v: Param<Tensor<2>>,
    /// `[d_model, heads × d_kv]`
    pub o: Param<Tensor<2>>,
    /// `[num_buckets, heads]`; only block 0 of each stack has it, shared by the others.
    pub relative_attention_bias: Option<Param<Tensor<2>>>,
    pub n_heads: usize,
    pub d_kv: usize,
}

/// Keys and values of one attention layer, `[batch, heads, keys, d_kv]` each.
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub k: Tensor<4>,
    pub v: Tensor<4>,
}

impl Attention {
    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, s, _] = x.dims();
        x.reshape([b, s, self.n_heads, self.d_kv]).swap_dims(1, 2)
    }

    /// Projects `source` (the attended sequence) to keys and values.
    ///
    /// # Shapes
    /// - `source`: `[batch, keys, d_model]`
    pub fn key_value(&self, source: Tensor<3>) -> KeyValue {
        KeyValue {
            k: self.split_heads(linear(source.clone(), &self.k)),
            v: self.split_heads(linear(source, &self.v)),
        }
    }

    /// Attends from `x` to `kv`, adding `bias` (relative positions and masks) to the scores.
    ///
    /// # Shapes
    /// - `x`: `[batch, queries, d_model]`
    /// - `bias`: `[batch or 1, heads or 1, queries, keys]`
    /// - output: `[batch, queries, d_model]`
    pub fn forward(&self, x: Tensor<3>, kv: &KeyValue, bias: Tensor<4>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        // One query per sequence (a decode step) on a GPU: one launch of our kernel instead of
        // a dozen of burn's (the same arithmetic, summed in other orders).
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        if s == 1
            && let Some(gpu) = crate::kernels::Gpu::of_tensor(&x)
            && let Some(out) = self.attend_one(&gpu, x.clone(), kv, bias.clone())
        {
            return out;
        }
        let q = self.split_heads(linear(x, &self.q));
        let scores = q.matmul(kv.k.clone().swap_dims(2, 3)) + bias;
        let weights = activation::softmax(scores, 3);
        let out =
            weights
                .matmul(kv.v.clone())
                .swap_dims(1, 2)
                .reshape([b, s, self.n_heads * self.d_kv]);
        linear(out, &self.o)
    }

    /// [`Self::forward`] for one query per sequence, on our kernel; `None` for sizes it does
    /// not take (or, never for this model's tensors, a failed launch), where burn's ops run.
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    fn attend_one(
        &self,
        gpu: &crate::kernels::Gpu,
        x: Tensor<3>,
        kv: &KeyValue,
        bias: Tensor<4>,
    ) -> Option<Tensor<3>> {
        let [b, _, _] = x.dims();
        let width = self.n_heads * self.d_kv;
        let q = linear(x, &self.q).reshape([b, width]);
        let out = self.attend_query(gpu, q, kv, bias).ok()??;
        Some(linear(out.reshape([b, 1, width]), &self.o))
    }

    /// Whether [`Self::attend_query`] takes `keys` keys.
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    pub fn attends_on_kernel(&self, keys: usize) -> bool {
        use crate::kernels::attend;
        keys <= attend::MAX_KEYS as usize && self.d_kv <= attend::UNITS as usize
    }

    /// One projected query per sequence attending to the first `keys` positions of `kv`
    /// (`keys` is the bias's last dimension; the cache may hold more rows), on our kernel:
    /// the heads' outputs side by side, before the output projection. `None` for sizes the
    /// kernel does not take ([`Self::attends_on_kernel`]).
    ///
    /// # Shapes
    /// - `q`: `[batch, heads × d_kv]`; `kv`: `[batch, heads, rows ≥ keys, d_kv]`
    /// - `bias`: `[batch or 1, heads or 1, 1, keys]`
    /// - output: `[batch, heads × d_kv]`
    ///
    /// # Errors
    /// As [`crate::kernels::attend_one`].
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    pub fn attend_query(
        &self,
        gpu: &crate::kernels::Gpu,
        q: Tensor<2>,
        kv: &KeyValue,
        bias: Tensor<4>,
    ) -> Result<Option<Tensor<2>>, crate::CoreError> {
        use crate::kernels::BiasLayout;
        let [bias_b, bias_h, _, keys] = bias.dims();
        if !self.attends_on_kernel(keys) {
            return Ok(None);
        }
        let layout = BiasLayout {
            batch: if bias_b == 1 { 0 } else { bias_h * keys },
            head: if bias_h == 1 { 0 } else { keys },
            offset: 0,
        };
        let bias = bias.reshape([bias_b * bias_h * keys]);
        let kv = (kv.k.clone(), kv.v.clone());
        crate::kernels::attend_one(gpu, q, kv, keys, bias, layout)
    }

    /// The relative position bias for queries at positions `query_start..query_start+queries`
    /// attending to keys `0..keys`.
    ///
    /// # Shapes
    /// - output: `[1, heads, queries, keys]`
    pub fn position_bias(
        &self,
        query_start: usize,
        queries: usize,
        keys: usize,
        bidirectional: bool,
        buckets: (usize, usize),
        device: &Device,
    ) -> Tensor<4> {
        let Some(table) = &self.relative_attention_bias else {
            return Tensor::zeros([1, self.n_heads, queries, keys], device);
        };
        let (num_buckets, max_distance) = buckets;
        let mut index = Vec::with_capacity(queries * keys);
        for qi in query_start..query_start + queries {
            for kj in 0..keys {
                let relative = kj as i64 - qi as i64;
                let bucket =
                    relative_position_bucket(relative, bidirectional, num_buckets, max_distance);
                index.push(bucket as i64);
            }
        }
        crate::counters::upload(index.len() * 8);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [queries * keys]), device);
        table
            .val()
            .select(0, index)
            .reshape([queries, keys, self.n_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }
}

impl Attention {
    /// The decoder's causal position bias by distance, for one query attending to up to `len`
    /// keys (entry `len − 1 − d` is the bias of a key `d` positions before the query), built
    /// once per generation so that a decode step only narrows it (no upload per step).
    /// Zeros for an attention without a bias table, as [`Self::position_bias`].
    ///
    /// # Shapes
    /// - output: `[1, heads, len]`
    pub fn causal_bias_by_distance(
        &self,
        len: usize,
        buckets: (usize, usize),
        device: &Device,
    ) -> Tensor<3> {
        // Query `len − 1` attending to keys `0..len`: key `k` is `len − 1 − k` positions back.
        self.position_bias(len - 1, 1, len, false, buckets, device)
            .reshape([1, self.n_heads, len])
    }
}

/// T5's bucketing of a relative position (`key − query`): exact buckets for small distances,
/// logarithmic ones up to `max_distance`, and, when bidirectional, half the buckets for
/// positive distances. The logarithm is taken in f32, as the reference does.
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative > 0 {
            bucket += num_buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let log_ratio = (distance as f32 / max_exact as f32).ln();
        let scale = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
        let large = max_exact + (log_ratio / scale * (num_buckets - max_exact) as f32) as i64;
        bucket += large.min(num_buckets - 1);
    }
    bucket as usize
}

/// The additive mask value for positions that must not be attended to (`finfo(float32).min`).
pub const MASKED: f32 = f32::MIN;

/// Masks `bias` where `masked` is true (padding keys, future positions).
///
/// # Shapes
/// - `bias`: `[1 or batch, heads, queries, keys]`, `masked`: `[batch, 1, queries or 1, keys]`
/// - output: `[batch, heads, queries, keys]`
pub fn apply_mask(bias: Tensor<4>, masked: Tensor<4, Bool>) -> Tensor<4> {
    let [_, h, q, k] = bias.dims();
    let b = masked.dims()[0];
    bias.expand([b, h, q, k])
        .mask_fill(masked.expand([b, h, q, k]), MASKED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_t5() {
        // Values from T5's reference bucketing with 32 buckets and max distance 128.
        let enc = |r| relative_position_bucket(r, true, 32, 128);
        assert_eq!(enc(0), 0);
        assert_eq!(enc(-1), 1);
        assert_eq!(enc(1), 17);
        assert_eq!(enc(-7), 7);
        assert_eq!(enc(-8), 8);
        assert_eq!(enc(-12), 9);
        assert_eq!(enc(-1000), 15);
        assert_eq!(enc(1000), 31);
        let dec = |r| relative_position_bucket(r, false, 32, 128);
        assert_eq!(dec(3), 0);
        assert_eq!(dec(-3), 3);
        assert_eq!(dec(-15), 15);
        assert_eq!(dec(-16), 16);
        assert_eq!(dec(-1000), 31);
    }
}
