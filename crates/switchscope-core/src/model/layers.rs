//! The T5 building blocks: RMS layer norm, the linear map, the dense ReLU feed-forward.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation};

/// `y = x · Wᵀ` with `W` stored as the checkpoint stores it, `[out, in]`.
///
/// # Shapes
/// - `x`: `[batch, seq, in]` → `[batch, seq, out]`
pub fn linear(x: Tensor<3>, weight: &Param<Tensor<2>>) -> Tensor<3> {
    let [b, s, d_in] = x.dims();
    let w = weight.val();
    let [d_out, _] = w.dims();
    x.reshape([b * s, d_in])
        .matmul(w.transpose())
        .reshape([b, s, d_out])
}

/// T5's layer norm: scales by the root mean square, with no mean subtraction and no bias.
/// Mirrors `SwitchTransformersLayerNorm` (`*.layer_norm.weight`).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` → same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // On a GPU, one launch of our kernel instead of burn's six (the same arithmetic, the
        // squares summed in another order). It only fails for a non-f32 tensor, which this
        // model never makes; burn's path below then gives the same result.
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        if let Some(gpu) = crate::kernels::Gpu::of_tensor(&x) {
            let [b, s, d] = x.dims();
            let rows = x.clone().reshape([b * s, d]);
            if let Ok(y) = crate::kernels::layer_norm(&gpu, rows, self.weight.val(), self.eps) {
                return y.reshape([b, s, d]);
            }
        }
        let variance = x.clone().powi_scalar(2).mean_dim(2);
        let normed = x * (variance.add_scalar(self.eps)).sqrt().recip();
        normed * self.weight.val().unsqueeze::<3>()
    }
}

/// The ReLU feed-forward network `wo · relu(wi · x)` without biases: a dense block's FFN and
/// each expert (`*.mlp.wi.weight`, `*.mlp.wo.weight`, `*.experts.expert_{e}.wi.weight`, ...).
#[derive(Module, Debug)]
pub struct DenseActDense {
    /// `[d_ff, d_model]`
    pub wi: Param<Tensor<2>>,
    /// `[d_model, d_ff]`
    pub wo: Param<Tensor<2>>,
}

impl DenseActDense {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` → same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(activation::relu(linear(x, &self.wi)), &self.wo)
    }

    /// The same on a flat list of tokens.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d_model]` → same
    pub fn forward_rows(&self, x: Tensor<2>) -> Tensor<2> {
        let h = activation::relu(x.matmul(self.wi.val().transpose()));
        h.matmul(self.wo.val().transpose())
    }
}
