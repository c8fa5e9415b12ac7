//! A sparse layer's experts, whatever holds their weights: one [`Experts`] trait with one
//! [`Experts::run`], implemented here for experts loaded up front ([`Eager`]) and, in the
//! runtime, for experts an expert store fetches when the router first picks them (f32 on burn's
//! generic ops, or int8/int4 on our kernels).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
use std::sync::Arc;

use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use super::layers::DenseActDense;
use crate::CoreError;

/// The rows routed to each expert of a layer: `rows[e]` holds `(row, router weight)` for every
/// token expert `e` processes, rows indexing the layer's flattened input.
pub type Rows = [Vec<(u32, f32)>];

/// The combined output of a layer's experts, when it is ready.
pub type ExpertsFuture<'a> = Pin<Box<dyn Future<Output = Result<Tensor<2>, CoreError>> + 'a>>;

/// A sparse layer's experts.
pub trait Experts: fmt::Debug + Send + Sync {
    /// Runs every expert on its rows of `x`, scales each output row by its router weight and
    /// returns the combination; rows no expert took (dropped by capacity) are zero.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d_model]` → same
    ///
    /// # Errors
    /// When an expert's weights cannot be had (a missing or corrupt shard) or do not fit.
    fn run<'a>(&'a self, x: Tensor<2>, rows: &'a Rows) -> ExpertsFuture<'a>;

    /// The router's decision computed on the device by our router kernel, when these experts
    /// run on our kernels: `logits` `[batch · seq, experts]` → per token its probabilities, the
    /// chosen expert and its position among that expert's tokens (see
    /// [`crate::kernels::reference::route`]). `None`: the decision is made on the host.
    fn route_on_device(
        &self,
        logits: &Tensor<2>,
        seq: usize,
    ) -> Option<Result<Tensor<2>, CoreError>> {
        let _ = (logits, seq);
        None
    }

    /// The layer's experts side by side on the device with our kernels' context, when they
    /// can be chosen there ([`crate::kernels::ExpertTable`]): every expert resident and none
    /// evictable. `None`: the host chooses (it reads the routing first).
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    fn device_table(&self) -> Option<(crate::kernels::Gpu, Arc<crate::kernels::ExpertTable>)> {
        None
    }

    /// Bookkeeping for experts the device chose and ran from [`Self::device_table`] (the
    /// requests and hits a store counts), once the routing is read.
    ///
    /// # Errors
    /// When the bookkeeping finds an expert that should not have run.
    fn routed(&self, experts: &[usize]) -> Result<(), CoreError> {
        let _ = experts;
        Ok(())
    }

    /// Whether a prediction of the experts this layer will run is useful (they are fetched on
    /// demand and the fetch can start early): pre-gating then calls [`Self::prefetch`].
    fn wants_prefetch(&self) -> bool {
        false
    }

    /// A hint that `experts` will probably run soon.
    fn prefetch(&self, experts: &[usize]) {
        let _ = experts;
    }
}

/// Experts whose f32 weights were loaded with the model (a checkpoint loaded whole).
#[derive(Debug)]
pub struct Eager(pub Vec<DenseActDense>);

impl Experts for Eager {
    fn run<'a>(&'a self, x: Tensor<2>, rows: &'a Rows) -> ExpertsFuture<'a> {
        Box::pin(async move {
            combine(x, rows, |e| {
                self.0
                    .get(e)
                    .ok_or_else(|| CoreError::Weights(format!("the layer has no expert {e}")))
            })
        })
    }
}

/// Runs f32 experts with burn's generic ops: for every expert `e` with rows, gathers them,
/// applies `expert(e)` and its router weights, and scatters the result into a zero output.
///
/// # Shapes
/// - `x`: `[tokens, d_model]` → same
///
/// # Errors
/// What `expert` returns for an expert it cannot give.
pub fn combine<'m>(
    x: Tensor<2>,
    rows: &Rows,
    expert: impl Fn(usize) -> Result<&'m DenseActDense, CoreError>,
) -> Result<Tensor<2>, CoreError> {
    let device = x.device();
    let mut out = Tensor::<2>::zeros(x.dims(), &device);
    for (e, tokens) in rows.iter().enumerate() {
        if tokens.is_empty() {
            continue;
        }
        let n = tokens.len();
        let index: Vec<i64> = tokens.iter().map(|&(i, _)| i64::from(i)).collect();
        let scale: Vec<f32> = tokens.iter().map(|&(_, w)| w).collect();
        crate::counters::upload(n * 8);
        crate::counters::upload(n * 4);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device);
        let scale = Tensor::<2>::from_data(TensorData::new(scale, [n, 1]), &device);
        let y = expert(e)?.forward_rows(x.clone().select(0, index.clone())) * scale;
        out = out.select_assign(0, index, y, IndexingUpdateOp::Assign);
    }
    Ok(out)
}
