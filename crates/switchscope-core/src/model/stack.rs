//! Blocks and stacks: `encoder.block.{i}` and `decoder.block.{i}`.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::attention::{Attention, KeyValue, apply_mask};
use super::layers::{DenseActDense, LayerNorm};
use super::routing::{LayerRouting, PendingRoute, SparseMlp};
use super::step::{self, Fused};
use crate::CoreError;
use crate::backend::read_f32;
use crate::config::Stack as StackKind;

/// One transformer block. Encoder: `layer.0` self-attention, `layer.1` feed-forward. Decoder:
/// `layer.0` self-attention, `layer.1` cross-attention (`EncDecAttention`), `layer.2` FF.
#[derive(Module, Debug)]
pub struct Block {
    pub self_attention: Attention,
    pub self_attention_norm: LayerNorm,
    pub cross_attention: Option<Attention>,
    pub cross_attention_norm: Option<LayerNorm>,
    /// A dense block's FFN (`layer.N.mlp`).
    pub dense: Option<DenseActDense>,
    /// A sparse block's experts and router (`layer.N.mlp`).
    pub sparse: Option<SparseMlp>,
    pub ff_norm: LayerNorm,
}

/// A stack of blocks and its final norm.
#[derive(Module, Debug)]
pub struct Stack {
    pub block: Vec<Block>,
    pub final_layer_norm: LayerNorm,
}

/// The self-attention position biases [`Stack::prepare`] makes before the first step: enough
/// for this many decoded positions (the table doubles when a longer generation needs it).
const FIRST_STEP_BIAS: usize = 256;

/// Cached keys and values of one decoder: self-attention grows by one position per step,
/// cross-attention is computed once from the encoder output.
#[derive(Debug, Clone, Default)]
pub struct DecoderCache {
    pub self_kv: Vec<KeyValue>,
    pub cross_kv: Vec<KeyValue>,
    /// Positions already decoded.
    pub len: usize,
    /// The cross-attention's padding bias, `[batch, 1, 1, seq]` (made once per prompt).
    pub cross_bias: Option<Tensor<4>>,
    /// The self-attention's causal position bias by distance (one query), `[1, heads, len]`
    /// ([`Attention::causal_bias_by_distance`]); made once, longer when a step needs it.
    pub step_bias: Option<Tensor<3>>,
    /// Milliseconds per block of the last step, when timed (`RunOptions::block_clock`).
    pub block_ms: Vec<f64>,
}

/// Per-call settings of a stack's forward pass.
#[derive(Debug, Clone, Copy)]
pub struct StackRun {
    pub kind: StackKind,
    pub num_buckets: usize,
    pub max_distance: usize,
    /// Capacity factor override (see [`super::SwitchConfig::capacity`]).
    pub capacity_factor: Option<f64>,
    /// The configured expert capacity.
    pub expert_capacity: usize,
    pub num_experts: usize,
    /// When set, every block is timed (the device synchronised after each).
    pub block_clock: Option<fn() -> f64>,
}

/// Times blocks when a clock is given: each lap waits for the device to finish `h`.
struct Laps {
    clock: Option<fn() -> f64>,
    last: f64,
    ms: Vec<f64>,
}

impl Laps {
    fn new(clock: Option<fn() -> f64>) -> Self {
        Self {
            clock,
            last: clock.map_or(0.0, |c| c()),
            ms: Vec::new(),
        }
    }

    async fn lap(&mut self, h: &Tensor<3>) -> Result<(), CoreError> {
        let Some(clock) = self.clock else {
            return Ok(());
        };
        // A one-value read-back: the device has finished everything `h` depends on.
        read_f32(h.clone().slice([0..1, 0..1, 0..1])).await?;
        let now = clock();
        self.ms.push(now - self.last);
        self.last = now;
        Ok(())
    }
}

impl StackRun {
    fn capacity(&self, tokens: usize) -> usize {
        crate::config::expert_capacity(
            tokens,
            self.num_experts,
            self.expert_capacity,
            self.capacity_factor,
        )
    }
}

impl Block {
    async fn feed_forward(
        &self,
        h: Tensor<3>,
        capacity: usize,
        at: (StackKind, usize),
        routing: &mut [Vec<LayerRouting>],
    ) -> Result<Tensor<3>, CoreError> {
        let normed = self.ff_norm.forward(h.clone());
        let out = if let Some(sparse) = &self.sparse {
            let (out, traces) = sparse.forward(normed, capacity, at).await?;
            for (row, trace) in traces.into_iter().enumerate() {
                routing[row].push(trace);
            }
            out
        } else if let Some(dense) = &self.dense {
            dense.forward(normed)
        } else {
            return Err(CoreError::Weights(format!(
                "{} block {} has no feed-forward layer",
                at.0.as_str(),
                at.1
            )));
        };
        Ok(h + out)
    }
}

impl Stack {
    /// Pre-gating: when block `at` is sparse and the next sparse block's experts want a
    /// prediction ([`super::experts::Experts::wants_prefetch`]: a store that prefetches, pins
    /// predictions or records them),
    /// applies the NEXT sparse block's norm and router to `h` (block `at`'s input to its
    /// feed-forward) and hints the experts it picks, so that their
    /// transfer overlaps with this block's work.
    async fn pregate(&self, at: usize, h: &Tensor<3>) -> Result<(), CoreError> {
        if self.block[at].sparse.is_none() {
            return Ok(());
        }
        let Some((block, sparse)) = self
            .block
            .iter()
            .skip(at + 1)
            .find_map(|b| b.sparse.as_ref().map(|s| (b, s)))
        else {
            return Ok(());
        };
        if !sparse.experts.wants_prefetch() {
            return Ok(());
        }
        let mut picks = sparse.router.top1(block.ff_norm.forward(h.clone())).await?;
        picks.sort_unstable();
        picks.dedup();
        sparse.experts.prefetch(&picks);
        Ok(())
    }

    /// The encoder: embeddings in, normed hidden states out, plus the routing of every sparse
    /// layer per sequence.
    ///
    /// # Shapes
    /// - `h`: `[batch, seq, d_model]` embeddings; `key_padding`: `[batch, 1, 1, seq]` (true = pad)
    pub async fn encode(
        &self,
        mut h: Tensor<3>,
        key_padding: Tensor<4, Bool>,
        run: &StackRun,
    ) -> Result<(Tensor<3>, Vec<Vec<LayerRouting>>, Vec<f64>), CoreError> {
        let [b, s, _] = h.dims();
        let mut laps = Laps::new(run.block_clock);
        let device = h.device();
        let bias = self.block[0].self_attention.position_bias(
            0,
            s,
            s,
            true,
            (run.num_buckets, run.max_distance),
            &device,
        );
        let bias = apply_mask(bias, key_padding);
        let mut routing = vec![Vec::new(); b];
        for (i, block) in self.block.iter().enumerate() {
            let normed = block.self_attention_norm.forward(h.clone());
            let kv = block.self_attention.key_value(normed.clone());
            h = h + block.self_attention.forward(normed, &kv, bias.clone());
            self.pregate(i, &h).await?;
            h = block
                .feed_forward(h, run.capacity(s), (run.kind, i), &mut routing)
                .await?;
            laps.lap(&h).await?;
        }
        Ok((self.final_layer_norm.forward(h), routing, laps.ms))
    }

    /// Fills the cache's per-prompt constants: the cross-attention's keys and values from the
    /// encoder output, its padding bias, and the first self-attention position biases.
    ///
    /// # Shapes
    /// - `encoded`: `[batch, seq, d_model]`; `encoder_padding`: `[batch, 1, 1, seq]`
    pub fn prepare(
        &self,
        encoded: &Tensor<3>,
        encoder_padding: Tensor<4, Bool>,
        buckets: (usize, usize),
        cache: &mut DecoderCache,
    ) {
        let device = encoded.device();
        let [_, _, _, s] = encoder_padding.dims();
        cache.cross_bias = Some(apply_mask(
            Tensor::zeros([1, 1, 1, s], &device),
            encoder_padding,
        ));
        self.step_bias(cache, FIRST_STEP_BIAS - 1, buckets, &device);
        self.prepare_cross(encoded, cache);
    }

    /// One query's self-attention position bias at position `past` (causal: keys
    /// `0..=past`), narrowed from the cache's table (made or lengthened here when needed).
    ///
    /// # Shapes
    /// - output: `[1, heads, 1, past + 1]`
    fn step_bias(
        &self,
        cache: &mut DecoderCache,
        past: usize,
        buckets: (usize, usize),
        device: &Device,
    ) -> Tensor<4> {
        let keys = past + 1;
        let attention = &self.block[0].self_attention;
        let table = match &cache.step_bias {
            Some(table) if table.dims()[2] >= keys => table.clone(),
            _ => {
                let len = keys.next_power_of_two().max(FIRST_STEP_BIAS);
                let table = attention.causal_bias_by_distance(len, buckets, device);
                cache.step_bias = Some(table.clone());
                table
            }
        };
        let [_, heads, len] = table.dims();
        table
            .narrow(2, len - keys, keys)
            .reshape([1, heads, 1, keys])
    }

    /// Fills `cache.cross_kv` from the encoder output (once per prompt).
    fn prepare_cross(&self, encoded: &Tensor<3>, cache: &mut DecoderCache) {
        // Laid out contiguously once, so that no step copies them again.
        let contiguous = |t: Tensor<4>| {
            let dims = t.dims();
            t.reshape([dims.iter().product::<usize>()]).reshape(dims)
        };
        cache.cross_kv = self
            .block
            .iter()
            .map(|b| {
                let kv = b
                    .cross_attention
                    .as_ref()
                    .expect("decoder blocks have cross-attention")
                    .key_value(encoded.clone());
                KeyValue {
                    k: contiguous(kv.k),
                    v: contiguous(kv.v),
                }
            })
            .collect();
    }

    /// The decoder's blocks over `h` (embeddings of the new positions), continuing `cache`;
    /// the final norm is the caller's (with the output layer, fused when the step was: the
    /// [`Fused`] returned).
    ///
    /// # Shapes
    /// - `h`: `[batch, new, d_model]`; `encoder_padding`: `[batch, 1, 1, seq]`
    /// - output: `[batch, new, d_model]` (before the final norm)
    pub async fn decode(
        &self,
        mut h: Tensor<3>,
        encoder_padding: Tensor<4, Bool>,
        cache: &mut DecoderCache,
        run: &StackRun,
    ) -> Result<
        (
            Tensor<3>,
            Vec<Vec<LayerRouting>>,
            Vec<PendingRoute>,
            Option<Fused>,
        ),
        CoreError,
    > {
        let [b, t, _] = h.dims();
        // One token whose every sparse layer can choose its expert on the device: no read-back
        // until the step is done (pre-gating is skipped: every expert is resident).
        let tabled = b * t == 1
            && self
                .block
                .iter()
                .filter_map(|b| b.sparse.as_ref())
                .all(SparseMlp::on_table);
        let mut pending = Vec::new();
        let device = h.device();
        let past = cache.len;
        let mut laps = Laps::new(run.block_clock);
        let keys = past + t;
        let buckets = (run.num_buckets, run.max_distance);
        let bias = if t == 1 {
            // One query: nothing after it to mask, and the bias is a narrowed constant.
            self.step_bias(cache, past, buckets, &device)
        } else {
            let bias = self.block[0]
                .self_attention
                .position_bias(past, t, keys, false, buckets, &device);
            apply_mask(bias, causal_mask(b, past, t, &device))
        };
        let cross_bias = match &cache.cross_bias {
            Some(bias) => bias.clone(),
            None => {
                let [_, _, _, s] = encoder_padding.dims();
                let bias = apply_mask(Tensor::zeros([1, 1, 1, s], &device), encoder_padding);
                cache.cross_bias = Some(bias.clone());
                bias
            }
        };
        let mut routing = vec![Vec::new(); b];
        // one position on a GPU: the dense sub-layers on our fused kernels
        let fused = Fused::of(&h, keys, &self.block[0].self_attention);
        for (i, block) in self.block.iter().enumerate() {
            h = match &fused {
                Some(fused) => {
                    if cache.self_kv.len() <= i {
                        let attention = &block.self_attention;
                        let (heads, d_kv) = (attention.n_heads, attention.d_kv);
                        cache
                            .self_kv
                            .push(step::empty_cache(b, heads, d_kv, &device));
                    }
                    let kv = &mut cache.self_kv[i];
                    let parts = (&block.self_attention, &block.self_attention_norm);
                    fused.self_attention(parts, h, kv, past, bias.clone())?
                }
                None => {
                    let normed = block.self_attention_norm.forward(h.clone());
                    let new_kv = block.self_attention.key_value(normed.clone());
                    match cache.self_kv.get_mut(i) {
                        // the cache may hold rows past `past` (made by the fused path)
                        Some(old) if past > 0 => {
                            old.k =
                                Tensor::cat(vec![old.k.clone().narrow(2, 0, past), new_kv.k], 2);
                            old.v =
                                Tensor::cat(vec![old.v.clone().narrow(2, 0, past), new_kv.v], 2);
                        }
                        Some(old) => *old = new_kv,
                        None => cache.self_kv.push(new_kv),
                    }
                    h + block
                        .self_attention
                        .forward(normed, &cache.self_kv[i], bias.clone())
                }
            };

            let cross = block.cross_attention.as_ref().ok_or_else(|| {
                CoreError::Weights(format!("decoder block {i} has no cross-attention"))
            })?;
            let norm = block.cross_attention_norm.as_ref().ok_or_else(|| {
                CoreError::Weights(format!("decoder block {i} has no cross-attention norm"))
            })?;
            let cross_kv = &cache.cross_kv[i];
            h = match &fused {
                Some(fused) => {
                    fused.cross_attention((cross, norm), h, cross_kv, cross_bias.clone())?
                }
                None => {
                    let normed = norm.forward(h.clone());
                    h + cross.forward(normed, cross_kv, cross_bias.clone())
                }
            };
            let at = (run.kind, i);
            h = match (&block.sparse, &block.dense, &fused) {
                (Some(sparse), _, _) if tabled => {
                    let normed = block.ff_norm.forward(h.clone());
                    let (out, route) = sparse
                        .forward_on_table(&normed, run.capacity(t), at)
                        .ok_or_else(|| {
                            CoreError::Execution(format!("decoder block {i}: no expert table"))
                        })??;
                    pending.push(route);
                    h + out
                }
                (None, Some(dense), Some(fused)) => fused.dense((dense, &block.ff_norm), h)?,
                _ => {
                    if !tabled {
                        self.pregate(i, &h).await?;
                    }
                    block
                        .feed_forward(h, run.capacity(t), at, &mut routing)
                        .await?
                }
            };
            laps.lap(&h).await?;
        }
        cache.len = keys;
        cache.block_ms = laps.ms;
        Ok((h, routing, pending, fused))
    }
}

/// True where query `past + i` would attend to a later key.
///
/// # Shapes
/// - output: `[batch, 1, queries, past + queries]`
fn causal_mask(batch: usize, past: usize, queries: usize, device: &Device) -> Tensor<4, Bool> {
    let keys = past + queries;
    let data: Vec<bool> = (0..queries)
        .flat_map(|i| (0..keys).map(move |j| j > past + i))
        .collect();
    crate::counters::upload(data.len());
    Tensor::<4, Bool>::from_data(TensorData::new(data, [1, 1, queries, keys]), device)
        .expand([batch, 1, queries, keys])
}
