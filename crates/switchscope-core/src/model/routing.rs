//! The router and the sparse (mixture-of-experts) feed-forward layer.
//!
//! Routing is decided on the host: the router's probabilities are read back (the trace needs
//! them anyway, and the runtime fetches an expert only once the router has picked it), then
//! each expert runs on the rows routed to it and its output is scattered back.

use burn::module::{Module, Param};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};

use super::config::Stack;
use super::layers::{DenseActDense, linear};
use crate::CoreError;
use crate::shards::store::{Expert, LazyExperts};

/// `SwitchTransformersTop1Router.classifier`: `[num_experts, d_model]` (+ optional bias).
#[derive(Module, Debug)]
pub struct Router {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

/// `SwitchTransformersSparseMLP`: a router and its experts.
#[derive(Module, Debug)]
pub struct SparseMlp {
    pub router: Router,
    /// The experts, when loaded up front; empty when they come from `lazy`.
    pub experts: Vec<DenseActDense>,
    /// Where experts come from on demand (converted models).
    #[module(skip)]
    pub lazy: Option<LazyExperts>,
}

/// What the router did with one sequence in one sparse layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    pub stack: Stack,
    pub block: usize,
    /// Per token: the expert that processed it, or −1 when capacity dropped it.
    pub expert: Vec<i32>,
    /// Per token: the expert the router chose (argmax), dropped or not.
    pub chosen: Vec<u32>,
    /// Per token: the router probability of the chosen expert (the output's scale).
    pub weight: Vec<f32>,
    /// Per token: the router's probabilities over all experts.
    pub probs: Vec<Vec<f32>>,
    /// Tokens each expert could take in this sequence.
    pub capacity: usize,
}

impl LayerRouting {
    /// Whether token `t` was dropped by expert capacity.
    pub fn dropped(&self, t: usize) -> bool {
        self.expert[t] < 0
    }
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
        let mut best = 0;
        for (e, &p) in row.iter().enumerate() {
            if p > row[best] {
                best = e;
            }
        }
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

impl Router {
    /// The router's logits.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` → `[batch, seq, experts]`
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let logits = linear(x, &self.weight);
        match &self.bias {
            Some(bias) => logits + bias.val().unsqueeze::<3>(),
            None => logits,
        }
    }

    /// The expert each token would be sent to (argmax, ties to the lowest index), row-major
    /// over `[batch, seq]`.
    ///
    /// # Errors
    /// [`CoreError::Execution`] when the logits cannot be read back.
    pub async fn top1(&self, x: Tensor<3>) -> Result<Vec<usize>, CoreError> {
        let experts = self.weight.val().dims()[0];
        let host = read_f32(self.logits(x)).await?;
        Ok(host
            .chunks_exact(experts)
            .map(super::generate::argmax)
            .collect())
    }
}

impl SparseMlp {
    /// Routes every sequence of `x`, runs each expert on its tokens and combines.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` (already layer-normed) → same
    ///
    /// # Errors
    /// [`CoreError::Execution`] if the router's probabilities cannot be read back.
    pub async fn forward(
        &self,
        x: Tensor<3>,
        capacity: usize,
        (stack, block): (Stack, usize),
    ) -> Result<(Tensor<3>, Vec<LayerRouting>), CoreError> {
        let [b, s, d] = x.dims();
        let experts = self.router.weight.val().dims()[0];
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        let kernels = self
            .lazy
            .as_ref()
            .and_then(|lazy| lazy.store.kernels().cloned());

        // the router's decision, per sequence: (expert or −1, chosen, weight, probabilities)
        let logits = self.router.logits(x.clone());
        let mut decisions: Vec<Decision> = Vec::with_capacity(b);
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        // (the router kernel takes sequences up to its shared memory's size; longer ones are
        // decided on the host, their experts still run on the kernels)
        if let Some(gpu) = kernels
            .as_ref()
            .filter(|_| s <= crate::kernels::router::MAX_SEQ as usize)
        {
            let decided = crate::kernels::route(gpu, logits.clone().reshape([b * s, experts]), s)?;
            let host = read_f32(decided).await?;
            for seq in host.chunks_exact(s * (experts + 2)) {
                decisions.push(Decision::from_kernel(seq, experts, capacity));
            }
        }
        if decisions.is_empty() {
            let host = read_f32(activation::softmax(logits, 2)).await?;
            for seq in host.chunks_exact(s * experts) {
                let (expert, chosen, weight) = route_sequence(seq, experts, capacity);
                let probs = seq.chunks_exact(experts).map(<[f32]>::to_vec).collect();
                decisions.push(Decision {
                    expert,
                    chosen,
                    weight,
                    probs,
                });
            }
        }

        let mut rows: Vec<Vec<(u32, f32)>> = vec![Vec::new(); experts];
        let mut traces = Vec::with_capacity(b);
        for (i, decision) in decisions.into_iter().enumerate() {
            for (t, &e) in decision.expert.iter().enumerate() {
                if e >= 0 {
                    rows[e as usize].push(((i * s + t) as u32, decision.weight[t]));
                }
            }
            traces.push(LayerRouting {
                stack,
                block,
                expert: decision.expert,
                chosen: decision.chosen,
                weight: decision.weight,
                probs: decision.probs,
                capacity,
            });
        }

        let flat = x.reshape([b * s, d]);
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        if let (Some(gpu), Some(lazy)) = (&kernels, &self.lazy) {
            let mut resident = Vec::new();
            for (e, tokens) in rows.iter().enumerate() {
                if !tokens.is_empty() {
                    let expert = lazy.store.expert(lazy.stack, lazy.block, e).await?;
                    let index: Vec<u32> = tokens.iter().map(|&(i, _)| i).collect();
                    let scale: Vec<f32> = tokens.iter().map(|&(_, w)| w).collect();
                    resident.push((expert, index, scale));
                }
            }
            let mut assignments = Vec::with_capacity(resident.len());
            for (expert, index, scale) in &resident {
                let Expert::Quantized(expert) = &**expert else {
                    return Err(CoreError::Weights(
                        "a store with kernels returned an f32 expert".into(),
                    ));
                };
                assignments.push(crate::kernels::Assignment {
                    expert,
                    rows: index,
                    weights: scale,
                });
            }
            let out = crate::kernels::sparse_ffn(gpu, flat, &assignments)?;
            return Ok((out.reshape([b, s, d]), traces));
        }

        let device = flat.device();
        let mut out = Tensor::<2>::zeros([b * s, d], &device);
        for (e, tokens) in rows.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let n = tokens.len();
            let index: Vec<i64> = tokens.iter().map(|&(i, _)| i64::from(i)).collect();
            let scale: Vec<f32> = tokens.iter().map(|&(_, w)| w).collect();
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device);
            let scale = Tensor::<2>::from_data(TensorData::new(scale, [n, 1]), &device);
            let rows = flat.clone().select(0, index.clone());
            let y = match (&self.lazy, self.experts.get(e)) {
                (_, Some(expert)) => expert.forward_rows(rows),
                (Some(lazy), None) => match &*lazy.store.expert(lazy.stack, lazy.block, e).await? {
                    Expert::Dense(expert) => expert.forward_rows(rows),
                    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
                    Expert::Quantized(_) => {
                        return Err(CoreError::Weights(
                            "a quantized expert outside the kernels' path".into(),
                        ));
                    }
                },
                (None, None) => {
                    return Err(CoreError::Weights(format!(
                        "{} block {block} has no expert {e}",
                        stack.as_str()
                    )));
                }
            } * scale;
            out = out.select_assign(0, index, y, IndexingUpdateOp::Assign);
        }
        Ok((out.reshape([b, s, d]), traces))
    }
}

/// The router's decision for one sequence.
struct Decision {
    expert: Vec<i32>,
    chosen: Vec<u32>,
    weight: Vec<f32>,
    probs: Vec<Vec<f32>>,
}

impl Decision {
    /// From the router kernel's rows (probabilities, chosen expert, position in it).
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    fn from_kernel(seq: &[f32], experts: usize, capacity: usize) -> Self {
        let tokens = seq.len() / (experts + 2);
        let mut d = Self {
            expert: Vec::with_capacity(tokens),
            chosen: Vec::with_capacity(tokens),
            weight: Vec::with_capacity(tokens),
            probs: Vec::with_capacity(tokens),
        };
        for row in seq.chunks_exact(experts + 2) {
            let chosen = row[experts] as usize;
            let position = row[experts + 1] as usize;
            d.expert.push(if position <= capacity {
                chosen as i32
            } else {
                -1
            });
            d.chosen.push(chosen as u32);
            d.weight.push(row[chosen]);
            d.probs.push(row[..experts].to_vec());
        }
        d
    }
}

/// Reads a float tensor back to the host (asynchronously: the only way in a browser).
///
/// # Errors
/// [`CoreError::Execution`] when the device fails.
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, CoreError> {
    t.into_data_async()
        .await
        .map_err(|e| CoreError::Execution(e.to_string()))?
        .try_into_vec::<f32>()
        .map_err(|e| CoreError::Execution(format!("{e:?}")))
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
