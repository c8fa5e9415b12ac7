//! Building the model from weights named as in the checkpoint: the structure mirrors the keys,
//! so loading walks the config and asks a [`TensorSource`] for each name; shapes are checked
//! and errors name the tensor.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::SwitchModel;
use super::attention::Attention;
use super::experts::{Eager, Experts};
use super::layers::{DenseActDense, LayerNorm};
use super::routing::{Router, SparseMlp};
use super::stack::{Block, Stack};
use crate::CoreError;
use crate::config::{Stack as StackKind, SwitchConfig};
use crate::formats::tensor::TensorSource;

/// Where the sparse layers' experts come from when the model is built.
pub enum ExpertWeights<'a> {
    /// From the tensor source with everything else, as f32 on the device ([`Eager`]).
    Eager,
    /// From the caller, per sparse block (e.g. experts an expert store fetches when the router
    /// first picks them); the source's expert tensors are not read.
    Provided(&'a dyn Fn(StackKind, usize) -> Arc<dyn Experts>),
}

impl std::fmt::Debug for ExpertWeights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Eager => "Eager",
            Self::Provided(_) => "Provided",
        })
    }
}

impl SwitchModel {
    /// Builds the model from `source` on `device`, its experts as `experts` says.
    ///
    /// # Errors
    /// [`CoreError::Weights`] naming a missing tensor or one whose shape is not what the config
    /// implies.
    pub fn load(
        config: &SwitchConfig,
        source: &mut dyn TensorSource,
        device: &Device,
        experts: ExpertWeights<'_>,
    ) -> Result<Self, CoreError> {
        let mut loader = Loader {
            source,
            device,
            experts,
        };
        let d = config.d_model;
        let shared = match loader.try_param::<2>("shared.weight", [config.vocab_size, d])? {
            Some(p) => p,
            None => loader.param("encoder.embed_tokens.weight", [config.vocab_size, d])?,
        };
        let encoder = loader.stack(config, StackKind::Encoder)?;
        let decoder = loader.stack(config, StackKind::Decoder)?;
        let (lm_head, output_scale) = if config.tie_word_embeddings {
            (None, (d as f64).powf(-0.5))
        } else {
            (
                Some(loader.param("lm_head.weight", [config.vocab_size, d])?),
                1.0,
            )
        };
        Ok(Self {
            shared,
            encoder,
            decoder,
            lm_head,
            output_scale,
        })
    }
}

struct Loader<'a> {
    source: &'a mut dyn TensorSource,
    device: &'a Device,
    experts: ExpertWeights<'a>,
}

impl Loader<'_> {
    fn try_param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Option<Param<Tensor<D>>>, CoreError> {
        let Some(t) = self.source.get(name)? else {
            return Ok(None);
        };
        if t.shape != shape {
            return Err(CoreError::Weights(format!(
                "tensor {name} has shape {:?}; the config implies {shape:?}",
                t.shape
            )));
        }
        crate::counters::upload(t.data.len() * 4);
        let tensor = Tensor::<D>::from_data(TensorData::new(t.data, shape), self.device);
        Ok(Some(Param::from_tensor(tensor)))
    }

    fn param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<D>>, CoreError> {
        self.try_param(name, shape)?.ok_or_else(|| {
            CoreError::Weights(format!("tensor {name} is missing from the checkpoint"))
        })
    }

    fn norm(&mut self, name: &str, config: &SwitchConfig) -> Result<LayerNorm, CoreError> {
        Ok(LayerNorm {
            weight: self.param(name, [config.d_model])?,
            eps: config.layer_norm_epsilon,
        })
    }

    fn attention(
        &mut self,
        prefix: &str,
        config: &SwitchConfig,
        with_bias: bool,
    ) -> Result<Attention, CoreError> {
        let (d, inner) = (config.d_model, config.num_heads * config.d_kv);
        Ok(Attention {
            q: self.param(&format!("{prefix}.q.weight"), [inner, d])?,
            k: self.param(&format!("{prefix}.k.weight"), [inner, d])?,
            v: self.param(&format!("{prefix}.v.weight"), [inner, d])?,
            o: self.param(&format!("{prefix}.o.weight"), [d, inner])?,
            relative_attention_bias: if with_bias {
                Some(self.param(
                    &format!("{prefix}.relative_attention_bias.weight"),
                    [config.relative_attention_num_buckets, config.num_heads],
                )?)
            } else {
                None
            },
            n_heads: config.num_heads,
            d_kv: config.d_kv,
        })
    }

    fn ffn(&mut self, prefix: &str, config: &SwitchConfig) -> Result<DenseActDense, CoreError> {
        Ok(DenseActDense {
            wi: self.param(
                &format!("{prefix}.wi.weight"),
                [config.d_ff, config.d_model],
            )?,
            wo: self.param(
                &format!("{prefix}.wo.weight"),
                [config.d_model, config.d_ff],
            )?,
        })
    }

    fn stack(&mut self, config: &SwitchConfig, kind: StackKind) -> Result<Stack, CoreError> {
        let s = kind.as_str();
        let mut blocks = Vec::new();
        for i in 0..config.layers(kind) {
            let p = format!("{s}.block.{i}.layer");
            let self_attention = self.attention(&format!("{p}.0.SelfAttention"), config, i == 0)?;
            let self_attention_norm = self.norm(&format!("{p}.0.layer_norm.weight"), config)?;
            let (cross_attention, cross_attention_norm, ff) = match kind {
                StackKind::Encoder => (None, None, 1),
                StackKind::Decoder => (
                    Some(self.attention(&format!("{p}.1.EncDecAttention"), config, false)?),
                    Some(self.norm(&format!("{p}.1.layer_norm.weight"), config)?),
                    2,
                ),
            };
            let (dense, sparse) = if config.is_sparse(kind, i) {
                let router = Router {
                    weight: self.param(
                        &format!("{p}.{ff}.mlp.router.classifier.weight"),
                        [config.num_experts, config.d_model],
                    )?,
                    bias: if config.router_bias {
                        Some(self.param(
                            &format!("{p}.{ff}.mlp.router.classifier.bias"),
                            [config.num_experts],
                        )?)
                    } else {
                        None
                    },
                };
                let experts: Arc<dyn Experts> = match &self.experts {
                    ExpertWeights::Provided(provide) => provide(kind, i),
                    ExpertWeights::Eager => Arc::new(Eager(
                        (0..config.num_experts)
                            .map(|e| self.ffn(&format!("{p}.{ff}.mlp.experts.expert_{e}"), config))
                            .collect::<Result<_, _>>()?,
                    )),
                };
                (None, Some(SparseMlp { router, experts }))
            } else {
                (Some(self.ffn(&format!("{p}.{ff}.mlp"), config)?), None)
            };
            let ff_norm = self.norm(&format!("{p}.{ff}.layer_norm.weight"), config)?;
            blocks.push(Block {
                self_attention,
                self_attention_norm,
                cross_attention,
                cross_attention_norm,
                dense,
                sparse,
                ff_norm,
            });
        }
        let final_layer_norm = self.norm(&format!("{s}.final_layer_norm.weight"), config)?;
        Ok(Stack {
            block: blocks,
            final_layer_norm,
        })
    }
}
