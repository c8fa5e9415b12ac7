//! Generation: greedy or sampled decoding with (or without) the KV cache, recording the
//! routing of every step.

use serde::{Deserialize, Serialize};
use switchscope_wire::{LayerRouting, Sampling};

use super::Switch;
use crate::CoreError;
use crate::backend::read_f32;
use crate::counters::{Counts, Tally};
use crate::kernels::reference::argmax;
use crate::model::stack::DecoderCache;
use crate::model::{RunOptions, TokenBatch};

/// Generation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Decode incrementally with the KV cache (each step routes one token) or recompute the
    /// whole prefix every step.
    pub use_cache: bool,
    pub run: RunOptions,
    /// A token that ends the generation like `</s>` (and is kept, like it): the sentinel after
    /// the input's last masked span ([`switchscope_wire::spans::end_of_answer`]), so that the model stops
    /// once it has filled in every span. `None` generates like transformers: up to `</s>`.
    #[serde(default)]
    pub stop_at: Option<u32>,
    /// Decode exactly `max_new_tokens` tokens, past `</s>` and `stop_at` (a benchmark's fixed
    /// work).
    #[serde(default)]
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            sampling: Sampling::Greedy,
            use_cache: true,
            run: RunOptions::default(),
            stop_at: None,
            ignore_eos: false,
        }
    }
}

/// One generated token and what the decoder's routers did for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub token: u32,
    /// One entry per sparse decoder layer; with the cache, each routes the one new token.
    pub routing: Vec<LayerRouting>,
    /// Milliseconds per decoder block, when timed (`RunOptions::block_clock`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_ms: Vec<f64>,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// `decoder_start_token_id` followed by the generated tokens (as transformers returns).
    pub output_ids: Vec<u32>,
    pub encoder_routing: Vec<LayerRouting>,
    pub steps: Vec<Step>,
    /// What the decode steps asked of the device, from the first step's start to the last
    /// step's token ([`crate::counters`]); divide by `steps.len()` for per-token figures.
    #[serde(default)]
    pub decode_counts: Counts,
}

/// What [`Switch::generate`] reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The encoder has run: its routing (one entry per sparse encoder layer) and, when timed,
    /// milliseconds per block.
    Encoded {
        routing: &'a [LayerRouting],
        block_ms: &'a [f64],
    },
    /// A token was chosen.
    Step(&'a Step),
}

impl Switch {
    /// Generates up to `options.max_new_tokens` tokens after `input_ids`, stopping at EOS (or at
    /// `options.stop_at`).
    /// `on_progress` sees the encoder's routing, then each token as soon as it is chosen; it
    /// is awaited (a caller can yield to its event loop there), and `false` stops early.
    ///
    /// # Errors
    /// [`CoreError::Input`] for an empty input; execution errors.
    pub async fn generate<F, Fut>(
        &self,
        input_ids: &[u32],
        options: &GenerateOptions,
        mut on_progress: F,
    ) -> Result<Generation, CoreError>
    where
        F: FnMut(Progress<'_>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let (config, model) = (&self.config, &self.model);
        let input = TokenBatch::new(&[input_ids.to_vec()], config.pad_token_id)?;
        let encoded = model.encode(config, &input, options.run).await?;
        let first = encoded.routing.first().map_or(&[][..], Vec::as_slice);
        let encoded_progress = Progress::Encoded {
            routing: first,
            block_ms: &encoded.block_ms,
        };
        if !on_progress(encoded_progress).await {
            return Ok(Generation {
                output_ids: vec![config.decoder_start()],
                encoder_routing: first.to_vec(),
                steps: Vec::new(),
                decode_counts: Counts::default(),
            });
        }
        let mut output = vec![config.decoder_start()];
        let mut steps = Vec::new();
        let mut cache = model.start_decoding(config, &encoded);
        let mut rng = SplitMix64::new(match options.sampling {
            Sampling::Sample { seed, .. } => seed,
            Sampling::Greedy => 0,
        });
        let tally = Tally::start();
        let mut decode_counts = Counts::default();
        // greedy on a GPU: pipelined on the device (runtime/decode.rs)
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        let pipelined = match self.pipelines(options) {
            Some(gpu) => {
                let at = Decoding {
                    output: &mut output,
                    steps: &mut steps,
                    tally: &tally,
                    counts: &mut decode_counts,
                };
                self.decode_pipelined(gpu, &encoded, &mut cache, options, &mut on_progress, at)
                    .await?;
                true
            }
            None => false,
        };
        #[cfg(not(any(feature = "wgpu", feature = "webgpu")))]
        let pipelined = false;
        for _ in 0..if pipelined { 0 } else { options.max_new_tokens } {
            let (logits, mut routing, block_ms) = if options.use_cache {
                let last = [*output.last().expect("starts with the start token")];
                let (logits, routing) = model
                    .decode(config, &encoded, &mut cache, &last, 1, options.run)
                    .await?;
                (logits, routing, std::mem::take(&mut cache.block_ms))
            } else {
                // The whole prefix again, reusing the cross-attention keys and values.
                let mut fresh = DecoderCache {
                    cross_kv: cache.cross_kv.clone(),
                    cross_bias: cache.cross_bias.clone(),
                    step_bias: cache.step_bias.clone(),
                    ..DecoderCache::default()
                };
                let (logits, routing) = model
                    .decode(config, &encoded, &mut fresh, &output, 1, options.run)
                    .await?;
                (logits, routing, fresh.block_ms)
            };
            let [_, t, v] = logits.dims();
            let last = logits.narrow(1, t - 1, 1).reshape([1, v]);
            let token = match self.device_pick(&last, options.sampling).await? {
                Some(token) => token,
                None => pick(&read_f32(last).await?, options.sampling, &mut rng),
            };
            let step = Step {
                token,
                routing: routing.pop().unwrap_or_default(),
                block_ms,
            };
            output.push(token);
            // Up to the token: what the caller does with it is not the decoder's work.
            decode_counts = tally.peek();
            let go_on = on_progress(Progress::Step(&step)).await;
            steps.push(step);
            let ends = token == config.eos_token_id || Some(token) == options.stop_at;
            if (ends && !options.ignore_eos) || !go_on {
                break;
            }
        }
        drop(tally);
        let encoder_routing = encoded.routing.into_iter().next().unwrap_or_default();
        Ok(Generation {
            output_ids: output,
            encoder_routing,
            steps,
            decode_counts,
        })
    }
}

impl Switch {
    /// Greedy decoding's pick made on the GPU (only the id is read back: a host wait), or
    /// `None` on the CPU and for sampling (which stays on the host: it uses f64 and a 64-bit
    /// generator).
    #[allow(clippy::unused_async)]
    async fn device_pick(
        &self,
        logits: &burn::tensor::Tensor<2>,
        sampling: Sampling,
    ) -> Result<Option<u32>, CoreError> {
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        if let (Some(gpu), Sampling::Greedy) = (&self.gpu, sampling) {
            let token = crate::kernels::argmax(gpu, logits.clone())?;
            crate::counters::host_wait();
            return Ok(Some(crate::kernels::read_token(gpu, &token).await?));
        }
        let _ = (logits, sampling);
        Ok(None)
    }
}

/// A generation's state that a decode loop adds to.
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
pub(super) struct Decoding<'a> {
    pub output: &'a mut Vec<u32>,
    pub steps: &'a mut Vec<Step>,
    pub tally: &'a Tally,
    pub counts: &'a mut Counts,
}

/// Picks the next token from `logits`.
pub fn pick(logits: &[f32], sampling: Sampling, rng: &mut SplitMix64) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits) as u32,
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } => {
            if temperature <= 0.0 {
                return argmax(logits) as u32;
            }
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            if let Some(k) = top_k.filter(|&k| k > 0) {
                order.truncate(k);
            }
            let max = logits[order[0]] / temperature;
            let mut probs: Vec<f64> = order
                .iter()
                .map(|&i| f64::from(logits[i] / temperature - max).exp())
                .collect();
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
            if let Some(p) = top_p.filter(|&p| p > 0.0 && p < 1.0) {
                let mut cumulative = 0.0;
                let keep = probs
                    .iter()
                    .position(|&q| {
                        cumulative += q;
                        cumulative >= f64::from(p)
                    })
                    .map_or(probs.len(), |i| i + 1);
                probs.truncate(keep);
                order.truncate(keep);
            }
            let total: f64 = probs.iter().sum();
            let mut r = rng.next_f64() * total;
            for (i, &q) in probs.iter().enumerate() {
                if r < q {
                    return order[i] as u32;
                }
                r -= q;
            }
            order[probs.len() - 1] as u32
        }
    }
}

/// A small, seedable random number generator (SplitMix64), the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_ties_go_low_and_sampling_is_seeded() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        let logits = [0.0, 2.0, 1.0, -1.0];
        let sample = Sampling::Sample {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
            seed: 7,
        };
        let draw = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..50)
                .map(|_| pick(&logits, sample, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(
            a.iter().all(|&t| t == 1 || t == 2),
            "top-k 2 keeps ids 1 and 2: {a:?}"
        );
        assert!(a.contains(&1) && a.contains(&2));
        let nucleus = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.5),
            seed: 1,
        };
        let mut rng = SplitMix64::new(1);
        assert!((0..20).all(|_| pick(&logits, nucleus, &mut rng) == 1));
    }
}
