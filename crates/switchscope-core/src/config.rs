//! The model configuration, read from Hugging Face's `config.json` as it is.

use serde::{Deserialize, Serialize};

/// Which stack a block belongs to (`encoder`, `decoder`).
pub use switchscope_wire::Stack;

use crate::CoreError;

/// `SwitchTransformersConfig`: the keys of google/switch-base-* `config.json`.
///
/// Defaults are those of `SwitchTransformersConfig()`, used for keys a file leaves out. Keys this crate does not
/// use (dropout, initialisers, loss coefficients used only in training) are kept so that a
/// config written back is the config read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub expert_capacity: usize,
    pub num_layers: usize,
    pub num_sparse_encoder_layers: usize,
    /// Defaults to `num_layers` when absent.
    pub num_decoder_layers: Option<usize>,
    pub num_sparse_decoder_layers: usize,
    pub num_heads: usize,
    pub num_experts: usize,
    pub router_bias: bool,
    pub router_jitter_noise: f64,
    pub router_dtype: String,
    pub router_ignore_padding_tokens: bool,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub dropout_rate: f64,
    pub layer_norm_epsilon: f64,
    pub router_z_loss_coef: f64,
    pub router_aux_loss_coef: f64,
    pub initializer_factor: f64,
    pub dense_act_fn: String,
    pub is_encoder_decoder: bool,
    pub add_router_probs: bool,
    pub use_cache: bool,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    /// Absent in some configs; T5 models start decoding with the pad token, 0.
    pub decoder_start_token_id: Option<u32>,
    pub tie_word_embeddings: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 768,
            d_kv: 64,
            d_ff: 2048,
            expert_capacity: 64,
            num_layers: 12,
            num_sparse_encoder_layers: 3,
            num_decoder_layers: Some(12),
            num_sparse_decoder_layers: 3,
            num_heads: 12,
            num_experts: 8,
            router_bias: false,
            router_jitter_noise: 0.01,
            router_dtype: "float32".into(),
            router_ignore_padding_tokens: false,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            dropout_rate: 0.1,
            layer_norm_epsilon: 1e-6,
            router_z_loss_coef: 0.001,
            router_aux_loss_coef: 0.001,
            initializer_factor: 1.0,
            dense_act_fn: "relu".into(),
            is_encoder_decoder: true,
            add_router_probs: false,
            use_cache: true,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: Some(0),
            tie_word_embeddings: true,
        }
    }
}

impl SwitchConfig {
    /// Parses `config.json` text and checks that this implementation can run it.
    ///
    /// # Errors
    /// [`CoreError::Config`] naming the offending key.
    pub fn from_json(text: &str) -> Result<Self, CoreError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CoreError::Config(format!("config.json: {e}")))?;
        let config: Self = serde_json::from_value(value.clone()).map_err(|e| {
            // Name the key: the first one that fails on its own.
            let key = value.as_object().and_then(|map| {
                map.iter()
                    .find(|(k, v)| {
                        let one = serde_json::json!({ (*k).clone(): (*v).clone() });
                        serde_json::from_value::<Self>(one).is_err()
                    })
                    .map(|(k, _)| k.clone())
            });
            match key {
                Some(key) => CoreError::Config(format!("config.json: {key}: {e}")),
                None => CoreError::Config(format!("config.json: {e}")),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values this implementation depends on.
    ///
    /// # Errors
    /// [`CoreError::Config`] naming the key and the value.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |key: &str, why: String| Err(CoreError::Config(format!("{key}: {why}")));
        if self.dense_act_fn != "relu" {
            return bad(
                "dense_act_fn",
                format!("{:?} is not supported (only \"relu\")", self.dense_act_fn),
            );
        }
        if self.router_dtype != "float32" {
            return bad(
                "router_dtype",
                format!(
                    "{:?} is not supported (only \"float32\")",
                    self.router_dtype
                ),
            );
        }
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
            ("num_experts", self.num_experts),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.relative_attention_max_distance < self.relative_attention_num_buckets / 2 {
            return bad(
                "relative_attention_max_distance",
                "must be at least num_buckets / 2".into(),
            );
        }
        if self.num_sparse_encoder_layers > self.num_layers {
            return bad("num_sparse_encoder_layers", "exceeds num_layers".into());
        }
        if self.num_sparse_decoder_layers > self.decoder_layers() {
            return bad(
                "num_sparse_decoder_layers",
                "exceeds num_decoder_layers".into(),
            );
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return bad("layer_norm_epsilon", "must be positive".into());
        }
        Ok(())
    }

    /// Number of decoder blocks.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Number of blocks in `stack`.
    pub fn layers(&self, stack: Stack) -> usize {
        match stack {
            Stack::Encoder => self.num_layers,
            Stack::Decoder => self.decoder_layers(),
        }
    }

    /// The token the decoder starts from.
    pub fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id)
    }

    /// Whether block `block` of `stack` has a sparse (mixture-of-experts) feed-forward layer.
    ///
    /// As in transformers: `step = layers / sparse_layers` (with no sparse layers, `step =
    /// layers`), and block `i` is sparse iff `i % step == 1` or `step == 1`. So a config with no
    /// sparse layers still has a sparse block 1 when it has more than one block, as there.
    pub fn is_sparse(&self, stack: Stack, block: usize) -> bool {
        let (layers, sparse) = match stack {
            Stack::Encoder => (self.num_layers, self.num_sparse_encoder_layers),
            Stack::Decoder => (self.decoder_layers(), self.num_sparse_decoder_layers),
        };
        let step = layers.checked_div(sparse).unwrap_or(layers);
        step == 1 || block % step == 1
    }

    /// The sparse blocks of `stack`, in order.
    pub fn sparse_blocks(&self, stack: Stack) -> Vec<usize> {
        (0..self.layers(stack))
            .filter(|&b| self.is_sparse(stack, b))
            .collect()
    }

    /// The number of scalar parameters in the model (tied embeddings counted once).
    pub fn parameter_count(&self) -> u64 {
        let d = self.d_model as u64;
        let inner = (self.num_heads * self.d_kv) as u64;
        let attention = 4 * d * inner;
        let bias = (self.relative_attention_num_buckets * self.num_heads) as u64;
        let ffn = 2 * d * self.d_ff as u64;
        let sparse_ffn = self.num_experts as u64 * ffn
            + self.num_experts as u64 * d
            + if self.router_bias {
                self.num_experts as u64
            } else {
                0
            };
        let mut total = self.vocab_size as u64 * d;
        if !self.tie_word_embeddings {
            total += self.vocab_size as u64 * d;
        }
        for stack in [Stack::Encoder, Stack::Decoder] {
            let attentions = if stack == Stack::Encoder { 1 } else { 2 };
            for block in 0..self.layers(stack) {
                total += attentions * (attention + d) + d;
                total += if self.is_sparse(stack, block) {
                    sparse_ffn
                } else {
                    ffn
                };
            }
            total += bias + d;
        }
        total
    }

    /// Capacity per expert for a sequence of `tokens` tokens under a capacity factor: `ceil(tokens
    /// / experts × factor)`; `None` keeps the configured `expert_capacity`.
    pub fn capacity(&self, tokens: usize, factor: Option<f64>) -> usize {
        expert_capacity(tokens, self.num_experts, self.expert_capacity, factor)
    }
}

/// Tokens each expert may take in a sequence of `tokens`: `configured`, or with a capacity
/// factor `ceil(tokens / experts × factor)`.
pub fn expert_capacity(
    tokens: usize,
    experts: usize,
    configured: usize,
    factor: Option<f64>,
) -> usize {
    match factor {
        Some(cf) => ((tokens as f64 / experts as f64) * cf).ceil().max(0.0) as usize,
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// google/switch-base-8: the class defaults with d_ff 3072 and every other block sparse.
    #[test]
    fn switch_base_8_shapes() {
        let config = SwitchConfig::from_json(
            r#"{"d_ff": 3072, "num_sparse_encoder_layers": 6, "num_sparse_decoder_layers": 6}"#,
        )
        .unwrap();
        assert_eq!(
            config.sparse_blocks(Stack::Encoder),
            vec![1, 3, 5, 7, 9, 11]
        );
        assert_eq!(
            config.sparse_blocks(Stack::Decoder),
            vec![1, 3, 5, 7, 9, 11]
        );
        assert_eq!(config.parameter_count(), 619_339_008);
        let defaults = SwitchConfig::default();
        assert_eq!(defaults.sparse_blocks(Stack::Encoder), vec![1, 5, 9]);
    }

    #[test]
    fn sparse_step_edge_cases() {
        let mut c = SwitchConfig {
            num_layers: 4,
            num_sparse_encoder_layers: 4,
            ..Default::default()
        };
        assert_eq!(c.sparse_blocks(Stack::Encoder), vec![0, 1, 2, 3]);
        c.num_sparse_encoder_layers = 0;
        assert_eq!(c.sparse_blocks(Stack::Encoder), vec![1]);
        c.num_sparse_encoder_layers = 2;
        assert_eq!(c.sparse_blocks(Stack::Encoder), vec![1, 3]);
    }

    #[test]
    fn unknown_values_are_named() {
        let err = SwitchConfig::from_json(r#"{"dense_act_fn": "gelu_new"}"#).unwrap_err();
        assert!(err.to_string().contains("dense_act_fn"), "{err}");
        let err = SwitchConfig::from_json(r#"{"d_model": "wide"}"#).unwrap_err();
        assert!(err.to_string().contains("d_model"), "{err}");
    }

    #[test]
    fn capacity_factor() {
        let c = SwitchConfig::default();
        assert_eq!(c.capacity(10, None), 64);
        assert_eq!(c.capacity(10, Some(1.0)), 2);
        assert_eq!(c.capacity(16, Some(1.0)), 2);
        assert_eq!(c.capacity(17, Some(1.25)), 3);
    }
}
