//! The router and the sparse (mixture-of-experts) feed-forward layer.
//!
//! The router's probabilities are read back to the host (the trace needs them anyway, and the
//! runtime fetches an expert only once the router has picked it), with the top-1 decision made
//! on the host or, when the experts run on our kernels, by the router kernel; then the layer's
//! [`Experts`] run each expert on the rows routed to it.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation};
pub use switchscope_wire::LayerRouting;

use super::experts::Experts;
use super::layers::linear;
use crate::CoreError;
use crate::backend::read_f32;
use crate::config::Stack;
use crate::kernels::reference::{argmax, route_sequence};

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
    /// `mlp.experts`: whatever holds their weights.
    #[module(skip)]
    pub experts: Arc<dyn Experts>,
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
        Ok(host.chunks_exact(experts).map(argmax).collect())
    }
}

impl SparseMlp {
    /// Routes every sequence of `x`, runs each expert on its tokens and combines.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` (already layer-normed) → same
    ///
    /// # Errors
    /// [`CoreError::Execution`] if the router's probabilities cannot be read back; what the
    /// experts return.
    pub async fn forward(
        &self,
        x: Tensor<3>,
        capacity: usize,
        (stack, block): (Stack, usize),
    ) -> Result<(Tensor<3>, Vec<LayerRouting>), CoreError> {
        let [b, s, d] = x.dims();
        let experts = self.router.weight.val().dims()[0];

        // the router's decision, per sequence: on the device when the experts run on our
        // kernels (the router kernel takes sequences up to its shared memory's size), else on
        // the host
        let logits = self.router.logits(x.clone());
        let on_device = self
            .experts
            .route_on_device(&logits.clone().reshape([b * s, experts]), s);
        let decisions: Vec<Decision> = match on_device {
            Some(decided) => read_f32(decided?)
                .await?
                .chunks_exact(s * (experts + 2))
                .map(|seq| Decision::from_kernel(seq, experts, capacity))
                .collect(),
            None => read_f32(activation::softmax(logits, 2))
                .await?
                .chunks_exact(s * experts)
                .map(|seq| Decision::from_probs(seq, experts, capacity))
                .collect(),
        };

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
        let out = self.experts.run(x.reshape([b * s, d]), &rows).await?;
        Ok((out.reshape([b, s, d]), traces))
    }
}

/// A sparse layer's routing decided and run on the device ([`SparseMlp::forward_on_table`]),
/// read back after the step.
#[derive(Debug)]
pub struct PendingRoute {
    /// The router kernel's row: `[1, experts + 2]`.
    decision: Tensor<2>,
    stack: Stack,
    block: usize,
    capacity: usize,
    experts: Arc<dyn Experts>,
}

impl SparseMlp {
    /// One token through the layer with the expert chosen on the device, when its experts can
    /// be chosen there ([`Experts::device_table`]); `None` otherwise (take [`Self::forward`]).
    /// The routing is read later, with every other pending layer's ([`resolve`]).
    ///
    /// # Shapes
    /// - `x`: `[1, 1, d_model]` (already layer-normed) → same
    pub fn forward_on_table(
        &self,
        x: &Tensor<3>,
        capacity: usize,
        (stack, block): (Stack, usize),
    ) -> Option<Result<(Tensor<3>, PendingRoute), CoreError>> {
        let [b, s, d] = x.dims();
        if b * s != 1 {
            return None;
        }
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        {
            let (gpu, table) = self.experts.device_table()?;
            let run = || {
                let experts = self.router.weight.val().dims()[0];
                let logits = self.router.logits(x.clone()).reshape([1, experts]);
                let route = crate::kernels::route_on_device(&gpu, logits, 1, capacity)?;
                let out = table.run(&gpu, x.clone().reshape([1, d]), &route.slot, &route.scale)?;
                Ok((
                    out.reshape([1, 1, d]),
                    PendingRoute {
                        decision: route.decision,
                        stack,
                        block,
                        capacity,
                        experts: self.experts.clone(),
                    },
                ))
            };
            Some(run())
        }
        #[cfg(not(any(feature = "wgpu", feature = "webgpu")))]
        {
            let _ = (capacity, stack, block, d);
            None
        }
    }

    /// Whether [`Self::forward_on_table`] would run (the layer's experts can be chosen on the
    /// device).
    pub fn on_table(&self) -> bool {
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        return self.experts.device_table().is_some();
        #[cfg(not(any(feature = "wgpu", feature = "webgpu")))]
        false
    }
}

/// Reads the routing of the layers decided on the device (one read-back for all of them), in
/// their order, and does each layer's bookkeeping ([`Experts::routed`]) in that order.
///
/// # Errors
/// When the read-back fails; what the bookkeeping returns.
pub async fn resolve(pending: Vec<PendingRoute>) -> Result<Vec<LayerRouting>, CoreError> {
    let Some(rows) = decisions(&pending) else {
        return Ok(Vec::new());
    };
    finish(&pending, &read_f32(rows).await?)
}

/// The router kernel's rows of the pending layers, in order, to read back in one go: `[layers,
/// experts + 2]` (`None` for none).
pub fn decisions(pending: &[PendingRoute]) -> Option<Tensor<2>> {
    (!pending.is_empty())
        .then(|| Tensor::cat(pending.iter().map(|p| p.decision.clone()).collect(), 0))
}

/// The pending layers' routing from their rows as read back ([`decisions`]), with each layer's
/// bookkeeping ([`Experts::routed`]) done in order.
///
/// # Errors
/// Rows that do not fit; what the bookkeeping returns.
pub fn finish(pending: &[PendingRoute], rows: &[f32]) -> Result<Vec<LayerRouting>, CoreError> {
    let Some(first) = pending.first() else {
        return Ok(Vec::new());
    };
    let width = first.decision.dims()[1];
    if rows.len() != pending.len() * width {
        return Err(CoreError::Execution(format!(
            "{} routing values read back for {} layers of width {width}",
            rows.len(),
            pending.len()
        )));
    }
    let mut traces = Vec::with_capacity(pending.len());
    for (p, row) in pending.iter().zip(rows.chunks_exact(width)) {
        let decision = Decision::from_kernel(row, width - 2, p.capacity);
        let routed: Vec<usize> = decision
            .expert
            .iter()
            .filter_map(|&e| usize::try_from(e).ok())
            .collect();
        p.experts.routed(&routed)?;
        traces.push(LayerRouting {
            stack: p.stack,
            block: p.block,
            expert: decision.expert,
            chosen: decision.chosen,
            weight: decision.weight,
            probs: decision.probs,
            capacity: p.capacity,
        });
    }
    Ok(traces)
}

/// The router's decision for one sequence.
struct Decision {
    expert: Vec<i32>,
    chosen: Vec<u32>,
    weight: Vec<f32>,
    probs: Vec<Vec<f32>>,
}

impl Decision {
    /// From the router's probabilities (`tokens × experts`, row-major), decided on the host.
    fn from_probs(seq: &[f32], experts: usize, capacity: usize) -> Self {
        let (expert, chosen, weight) = route_sequence(seq, experts, capacity);
        let probs = seq.chunks_exact(experts).map(<[f32]>::to_vec).collect();
        Self {
            expert,
            chosen,
            weight,
            probs,
        }
    }

    /// From the router kernel's rows (probabilities, chosen expert, position in it).
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
