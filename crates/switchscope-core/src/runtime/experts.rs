//! A sparse layer's experts held by an [`ExpertStore`]: each is fetched when the router first
//! sends a token to it, then runs as the store keeps it (f32 on burn's generic ops, or int8/int4
//! on our kernels).

use std::sync::Arc;

use burn::tensor::Tensor;
use switchscope_wire::ExpertId;

use super::store::{Expert, ExpertStore};
use crate::CoreError;
use crate::config::Stack;
use crate::model::experts::{Experts, ExpertsFuture, Rows, combine};

/// The experts of sparse block `block` of `stack`, from `store`.
#[derive(Debug, Clone)]
pub struct StoreExperts {
    pub store: Arc<ExpertStore>,
    pub stack: Stack,
    pub block: usize,
}

impl StoreExperts {
    /// This layer's experts `experts`, as the store names them.
    fn ids(&self, experts: &[usize]) -> Vec<ExpertId> {
        experts
            .iter()
            .map(|&expert| ExpertId {
                stack: self.stack,
                block: self.block,
                expert,
            })
            .collect()
    }

    /// The experts that have rows, fetched (or found resident) in expert order.
    async fn resident(&self, rows: &Rows) -> Result<Vec<(usize, Arc<Expert>)>, CoreError> {
        let routed: Vec<usize> = (0..rows.len()).filter(|&e| !rows[e].is_empty()).collect();
        self.store.needs(&self.ids(&routed));
        let mut experts = Vec::with_capacity(routed.len());
        for e in routed {
            experts.push((e, self.store.expert(self.stack, self.block, e).await?));
        }
        Ok(experts)
    }
}

impl Experts for StoreExperts {
    fn run<'a>(&'a self, x: Tensor<2>, rows: &'a Rows) -> ExpertsFuture<'a> {
        Box::pin(async move {
            let experts = self.resident(rows).await?;
            #[cfg(any(feature = "wgpu", feature = "webgpu"))]
            if let Some(gpu) = self.store.kernels() {
                return on_kernels(gpu, x, rows, &experts);
            }
            combine(x, rows, |e| {
                let found = experts.iter().find(|(id, _)| *id == e);
                match found.map(|(_, expert)| &**expert) {
                    Some(Expert::Dense(expert)) => Ok(expert),
                    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
                    Some(Expert::Quantized(_)) => Err(CoreError::Weights(
                        "a quantized expert outside the kernels' path".into(),
                    )),
                    None => Err(CoreError::Weights(format!(
                        "{} block {} has no expert {e}",
                        self.stack.as_str(),
                        self.block
                    ))),
                }
            })
        })
    }

    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    fn route_on_device(
        &self,
        logits: &Tensor<2>,
        seq: usize,
    ) -> Option<Result<Tensor<2>, CoreError>> {
        // (the router kernel takes sequences up to its shared memory's size; longer ones are
        // decided on the host, their experts still run on the kernels)
        let gpu = self
            .store
            .kernels()
            .filter(|_| seq <= crate::kernels::router::MAX_SEQ as usize)?;
        Some(crate::kernels::route(gpu, logits.clone(), seq))
    }

    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    fn device_table(&self) -> Option<(crate::kernels::Gpu, Arc<crate::kernels::ExpertTable>)> {
        let gpu = self.store.kernels()?.clone();
        Some((gpu, self.store.table(self.stack, self.block)?))
    }

    fn routed(&self, experts: &[usize]) -> Result<(), CoreError> {
        for id in self.ids(experts) {
            self.store.note_routed(id)?;
        }
        Ok(())
    }

    fn wants_prefetch(&self) -> bool {
        self.store.wants_predictions()
    }

    fn prefetch(&self, experts: &[usize]) {
        self.store.prefetch(&self.ids(experts));
    }
}

/// Quantized experts on our kernels: one fused launch sequence for the whole layer.
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
fn on_kernels(
    gpu: &crate::kernels::Gpu,
    x: Tensor<2>,
    rows: &Rows,
    experts: &[(usize, Arc<Expert>)],
) -> Result<Tensor<2>, CoreError> {
    let lists: Vec<(Vec<u32>, Vec<f32>)> = experts
        .iter()
        .map(|(e, _)| rows[*e].iter().copied().unzip())
        .collect();
    let mut assignments = Vec::with_capacity(experts.len());
    for ((_, expert), (index, scale)) in experts.iter().zip(&lists) {
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
    crate::kernels::sparse_ffn(gpu, x, &assignments)
}
