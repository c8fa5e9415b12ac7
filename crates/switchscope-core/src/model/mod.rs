//! The Switch Transformer: T5's encoder-decoder whose feed-forward layer is, every
//! `sparse_step` blocks, a top-1 routed mixture of experts.
//!
//! Module and field names mirror the checkpoint keys (`shared`, `encoder.block.{i}`,
//! `layer.{j}.SelfAttention.q`, `mlp.router.classifier`, `mlp.experts.expert_{e}.wi`, ...),
//! so loading is nearly the identity (see [`load`]). One code path serves every backend.
//!
//! Pure computation over the weights it is given: where they come from (a checkpoint, a
//! converted directory, shards fetched on demand) is the runtime's business, behind
//! [`experts::Experts`] for the experts and a [`crate::formats::tensor::TensorSource`] for the
//! rest.

pub mod attention;
pub mod experts;
pub mod layers;
pub mod load;
pub mod routing;
pub mod stack;
pub mod step;

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use routing::{LayerRouting, PendingRoute};
use stack::{DecoderCache, Stack, StackRun};

use crate::CoreError;
use crate::backend::read_f32;
pub use crate::config::{Stack as StackKind, SwitchConfig};
use layers::linear;

/// The whole model (`SwitchTransformersForConditionalGeneration`).
#[derive(Module, Debug)]
pub struct SwitchModel {
    /// `shared.weight`: `[vocab, d_model]`, the embeddings of both stacks (and the LM head when
    /// tied).
    pub shared: Param<Tensor<2>>,
    pub encoder: Stack,
    pub decoder: Stack,
    /// `lm_head.weight` when the embeddings are not tied.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// `d_model^-0.5` when tied (applied before the LM head), else 1.
    pub output_scale: f64,
}

/// A batch of token sequences padded to one length.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Row-major `[batch, len]`.
    pub ids: Vec<u32>,
    /// Row-major `[batch, len]`; false at padding.
    pub mask: Vec<bool>,
    pub batch: usize,
    pub len: usize,
}

impl TokenBatch {
    /// Pads `rows` with `pad` to the longest.
    ///
    /// # Errors
    /// [`CoreError::Input`] for an empty batch or an empty sequence.
    pub fn new(rows: &[Vec<u32>], pad: u32) -> Result<Self, CoreError> {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        if rows.is_empty() || rows.iter().any(Vec::is_empty) {
            return Err(CoreError::Input(
                "a sequence of tokens must not be empty".into(),
            ));
        }
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for row in rows {
            ids.extend(
                row.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, len - row.len())),
            );
            mask.extend((0..len).map(|i| i < row.len()));
        }
        Ok(Self {
            ids,
            mask,
            batch: rows.len(),
            len,
        })
    }

    /// Sets the mask explicitly (e.g. from a reference `attention_mask`).
    ///
    /// # Errors
    /// [`CoreError::Input`] when the mask has the wrong length.
    pub fn with_mask(mut self, mask: Vec<bool>) -> Result<Self, CoreError> {
        if mask.len() != self.ids.len() {
            return Err(CoreError::Input(
                "attention mask and ids differ in length".into(),
            ));
        }
        self.mask = mask;
        Ok(self)
    }
}

/// Settings of one run that do not change the weights.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct RunOptions {
    /// Replaces `expert_capacity` with `ceil(tokens / experts × factor)` per sequence.
    pub capacity_factor: Option<f64>,
    /// Time every block: after each one the device is synchronised (a one-value read-back)
    /// and this clock (milliseconds) read. Slower; off when `None`.
    #[serde(skip)]
    pub block_clock: Option<fn() -> f64>,
}

impl PartialEq for RunOptions {
    /// Runs are alike when they compute alike (the clock only observes).
    fn eq(&self, other: &Self) -> bool {
        self.capacity_factor == other.capacity_factor
    }
}

/// What a decode step starts from.
#[derive(Debug, Clone, Copy)]
pub enum StepInput<'a> {
    /// Token ids from the host, `[batch, new]` row-major, and the batch size.
    Ids(&'a [u32], usize),
    /// One token chosen on the device (greedy decoding's previous pick): it never visits the
    /// host. It is below the vocabulary's size, being an argmax over it.
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    Device(&'a crate::kernels::Gpu, &'a crate::kernels::DeviceToken),
}

/// The encoder's output for a batch, kept for decoding.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[batch, seq, d_model]`, after the final norm.
    pub hidden: Tensor<3>,
    /// `[batch, 1, 1, seq]`, true at padding.
    pub padding: Tensor<4, Bool>,
    /// Per sequence, per sparse encoder layer.
    pub routing: Vec<Vec<LayerRouting>>,
    /// Milliseconds per block, when timed (`RunOptions::block_clock`).
    pub block_ms: Vec<f64>,
}

/// Logits and routing of a teacher-forced pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardOutput {
    /// `[batch][decoder position][vocab]`.
    pub logits: Vec<Vec<Vec<f32>>>,
    /// Per sequence: encoder sparse layers, then decoder sparse layers.
    pub routing: Vec<Vec<LayerRouting>>,
}

impl SwitchModel {
    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.shared.val().device()
    }

    fn run(&self, config: &SwitchConfig, kind: StackKind, options: RunOptions) -> StackRun {
        StackRun {
            kind,
            num_buckets: config.relative_attention_num_buckets,
            max_distance: config.relative_attention_max_distance,
            capacity_factor: options.capacity_factor,
            expert_capacity: config.expert_capacity,
            num_experts: config.num_experts,
            block_clock: options.block_clock,
        }
    }

    fn embed(&self, ids: &[u32], batch: usize, len: usize) -> Tensor<3> {
        let device = self.device();
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        crate::counters::upload(ids.len() * 8);
        let index = Tensor::<1, Int>::from_data(TensorData::new(ids, [batch * len]), &device);
        let table = self.shared.val();
        let [_, d] = table.dims();
        table.select(0, index).reshape([batch, len, d])
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), CoreError> {
        let [vocab, _] = self.shared.val().dims();
        match ids.iter().find(|&&i| i as usize >= vocab) {
            Some(bad) => Err(CoreError::Input(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Runs the encoder.
    ///
    /// # Errors
    /// [`CoreError::Input`] for ids outside the vocabulary; execution errors.
    pub async fn encode(
        &self,
        config: &SwitchConfig,
        input: &TokenBatch,
        options: RunOptions,
    ) -> Result<Encoded, CoreError> {
        self.check_ids(&input.ids)?;
        let device = self.device();
        let h = self.embed(&input.ids, input.batch, input.len);
        let pad: Vec<bool> = input.mask.iter().map(|m| !m).collect();
        crate::counters::upload(pad.len());
        let padding = Tensor::<4, Bool>::from_data(
            TensorData::new(pad, [input.batch, 1, 1, input.len]),
            &device,
        );
        let run = self.run(config, StackKind::Encoder, options);
        let (hidden, routing, block_ms) = self.encoder.encode(h, padding.clone(), &run).await?;
        Ok(Encoded {
            hidden,
            padding,
            routing,
            block_ms,
        })
    }

    /// A fresh decoder cache for `encoded`: what every step reuses (cross-attention keys,
    /// values and padding bias; the self-attention's position biases) computed once.
    pub fn start_decoding(&self, config: &SwitchConfig, encoded: &Encoded) -> DecoderCache {
        let mut cache = DecoderCache::default();
        let buckets = (
            config.relative_attention_num_buckets,
            config.relative_attention_max_distance,
        );
        self.decoder.prepare(
            &encoded.hidden,
            encoded.padding.clone(),
            buckets,
            &mut cache,
        );
        cache
    }

    /// Decodes `ids` (`[batch, new]`, continuing `cache`) to logits.
    ///
    /// # Shapes
    /// - output logits: `[batch, new, vocab]`
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub async fn decode(
        &self,
        config: &SwitchConfig,
        encoded: &Encoded,
        cache: &mut DecoderCache,
        ids: &[u32],
        batch: usize,
        options: RunOptions,
    ) -> Result<(Tensor<3>, Vec<Vec<LayerRouting>>), CoreError> {
        let (logits, mut routing, pending) = self
            .decode_step(config, encoded, cache, StepInput::Ids(ids, batch), options)
            .await?;
        // the routing the device decided, read while the logits compute
        if !pending.is_empty() {
            routing[0].extend(routing::resolve(pending).await?);
        }
        Ok((logits, routing))
    }

    /// Whether a one-token decode step chooses every sparse layer's experts on the device (so
    /// it reads nothing back and makes no store request until its routing is read).
    pub fn decodes_on_device(&self) -> bool {
        self.decoder
            .block
            .iter()
            .filter_map(|b| b.sparse.as_ref())
            .all(routing::SparseMlp::on_table)
    }

    /// Queues a decode step: logits, the routing of the layers routed on the host, and the
    /// layers whose routing the device decided, to read later ([`routing::resolve`], or
    /// [`routing::decisions`] and [`routing::finish`]). When every sparse layer chooses its
    /// experts on the device, nothing here waits for the device.
    ///
    /// # Shapes
    /// - output logits: `[batch, new, vocab]`
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub async fn decode_step(
        &self,
        config: &SwitchConfig,
        encoded: &Encoded,
        cache: &mut DecoderCache,
        input: StepInput<'_>,
        options: RunOptions,
    ) -> Result<(Tensor<3>, Vec<Vec<LayerRouting>>, Vec<PendingRoute>), CoreError> {
        let h = match input {
            StepInput::Ids(ids, batch) => {
                self.check_ids(ids)?;
                self.embed(ids, batch, ids.len() / batch)
            }
            #[cfg(any(feature = "wgpu", feature = "webgpu"))]
            StepInput::Device(gpu, token) => {
                let [_, d] = self.shared.val().dims();
                crate::kernels::embed(gpu, self.shared.val(), token)?.reshape([1, 1, d])
            }
        };
        let run = self.run(config, StackKind::Decoder, options);
        let (h, routing, pending, fused) = self
            .decoder
            .decode(h, encoded.padding.clone(), cache, &run)
            .await?;
        let head = match &self.lm_head {
            Some(head) => head,
            None => &self.shared,
        };
        let norm = &self.decoder.final_layer_norm;
        let logits = match fused {
            Some(fused) => fused.logits(norm, self.output_scale, head.val(), h)?,
            None => {
                let h = norm.forward(h);
                let h = if self.output_scale == 1.0 {
                    h
                } else {
                    h.mul_scalar(self.output_scale)
                };
                linear(h, head)
            }
        };
        Ok((logits, routing, pending))
    }

    /// A teacher-forced pass: encoder over `input`, decoder over `decoder_input` (no cache).
    ///
    /// # Errors
    /// As [`Self::encode`]; [`CoreError::Input`] when the batch sizes differ.
    pub async fn forward(
        &self,
        config: &SwitchConfig,
        input: &TokenBatch,
        decoder_input: &TokenBatch,
        options: RunOptions,
    ) -> Result<ForwardOutput, CoreError> {
        if input.batch != decoder_input.batch {
            return Err(CoreError::Input(
                "encoder and decoder batches differ in size".into(),
            ));
        }
        let encoded = self.encode(config, input, options).await?;
        let mut cache = self.start_decoding(config, &encoded);
        let (logits, decoder_routing) = self
            .decode(
                config,
                &encoded,
                &mut cache,
                &decoder_input.ids,
                decoder_input.batch,
                options,
            )
            .await?;
        let [b, t, v] = logits.dims();
        let flat = read_f32(logits).await?;
        let logits = (0..b)
            .map(|i| {
                (0..t)
                    .map(|j| flat[(i * t + j) * v..(i * t + j + 1) * v].to_vec())
                    .collect()
            })
            .collect();
        let routing = encoded
            .routing
            .into_iter()
            .zip(decoder_routing)
            .map(|(mut enc, dec)| {
                enc.extend(dec);
                enc
            })
            .collect();
        Ok(ForwardOutput { logits, routing })
    }
}
