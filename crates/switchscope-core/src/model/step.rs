//! A decode step's dense sub-layers on a GPU, fused: one new position per sequence, each
//! projection one launch of [`crate::kernels::project`] with the layer norm before it and the
//! residual after it folded in, the self-attention's keys and values written straight into a
//! cache with room to grow, the attention one launch of [`crate::kernels::attend_one`].
//!
//! burn's ops give the same values, summed in other orders; [`Fused::of`] decides per step
//! (a GPU tensor, one position, sizes the attention kernel takes), and burn's path runs
//! otherwise.

use burn::tensor::{Device, Tensor};

use super::attention::{Attention, KeyValue};
use super::layers::{DenseActDense, LayerNorm};
use crate::CoreError;

/// Positions a self-attention cache is first made with; it doubles when a step needs more.
pub const FIRST_CACHE_ROWS: usize = 64;

/// The GPU a decode step's dense work runs on with our kernels ([`Fused::of`]).
#[derive(Debug)]
pub struct Fused {
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    gpu: crate::kernels::Gpu,
    #[cfg(not(any(feature = "wgpu", feature = "webgpu")))]
    never: std::convert::Infallible,
}

/// `cache` (keys or values of `past` positions, `[batch, heads, rows, d_kv]`) with at least
/// `need` rows: itself when it has them, else a copy with room to grow (the rows past `past`
/// hold nothing meaningful).
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
fn with_room(cache: Tensor<4>, past: usize, need: usize) -> Tensor<4> {
    let [b, heads, rows, d_kv] = cache.dims();
    if rows >= need {
        return cache;
    }
    let rows = need.next_power_of_two().max(FIRST_CACHE_ROWS);
    let grown = Tensor::zeros([b, heads, rows, d_kv], &cache.device());
    if past == 0 {
        return grown;
    }
    grown.slice_assign([0..b, 0..heads, 0..past, 0..d_kv], cache.narrow(2, 0, past))
}

/// A projection after `norm` and nothing else ([`crate::kernels::project`]).
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
fn normed(norm: &LayerNorm) -> crate::kernels::Around {
    crate::kernels::Around {
        norm: Some((norm.weight.val(), norm.eps)),
        ..Default::default()
    }
}

/// An empty self-attention cache for `batch` sequences.
///
/// # Shapes
/// - output: `[batch, heads, FIRST_CACHE_ROWS, d_kv]` each
pub fn empty_cache(batch: usize, heads: usize, d_kv: usize, device: &Device) -> KeyValue {
    let zeros = || Tensor::zeros([batch, heads, FIRST_CACHE_ROWS, d_kv], device);
    KeyValue {
        k: zeros(),
        v: zeros(),
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
impl Fused {
    /// Our kernels for this step when `h` is one position per sequence on a GPU and
    /// `attention` (any decoder block's self-attention) takes `keys` keys on the attention
    /// kernel.
    pub fn of(h: &Tensor<3>, keys: usize, attention: &Attention) -> Option<Self> {
        let [_, t, _] = h.dims();
        if t != 1 || !attention.attends_on_kernel(keys) {
            return None;
        }
        Some(Self {
            gpu: crate::kernels::Gpu::of_tensor(h)?,
        })
    }

    /// `h + attention(norm(h))` for the new position `past`, whose keys and values are
    /// written into `kv` (grown first when it has no room for them).
    ///
    /// # Shapes
    /// - `h`: `[batch, 1, d_model]`; `kv`: `[batch, heads, rows, d_kv]`;
    ///   `bias`: `[1, heads, 1, past + 1]`
    pub fn self_attention(
        &self,
        (attention, norm): (&Attention, &LayerNorm),
        h: Tensor<3>,
        kv: &mut KeyValue,
        past: usize,
        bias: Tensor<4>,
    ) -> Result<Tensor<3>, CoreError> {
        use crate::kernels::{project, project_into_cache};
        let [b, _, d] = h.dims();
        let x = h.reshape([b, d]);
        kv.k = with_room(kv.k.clone(), past, past + 1);
        kv.v = with_room(kv.v.clone(), past, past + 1);
        let q = project(&self.gpu, x.clone(), attention.q.val(), &normed(norm))?;
        let at = |w: &burn::module::Param<Tensor<2>>, cache: &Tensor<4>| {
            let norm = (norm.weight.val(), norm.eps);
            project_into_cache(&self.gpu, x.clone(), w.val(), norm, cache, past)
        };
        at(&attention.k, &kv.k)?;
        at(&attention.v, &kv.v)?;
        let out = self.attend(attention, q, kv, bias)?;
        self.output(attention, out, x)
    }

    /// `h + attention(norm(h))` over the encoder's keys and values (the cross-attention).
    ///
    /// # Shapes
    /// - `h`: `[batch, 1, d_model]`; `kv`: `[batch, heads, seq, d_kv]`;
    ///   `bias`: `[batch or 1, 1, 1, seq]`
    pub fn cross_attention(
        &self,
        (attention, norm): (&Attention, &LayerNorm),
        h: Tensor<3>,
        kv: &KeyValue,
        bias: Tensor<4>,
    ) -> Result<Tensor<3>, CoreError> {
        use crate::kernels::project;
        let [b, _, d] = h.dims();
        let x = h.reshape([b, d]);
        let q = project(&self.gpu, x.clone(), attention.q.val(), &normed(norm))?;
        let out = self.attend(attention, q, kv, bias)?;
        self.output(attention, out, x)
    }

    /// `h + wo · relu(wi · norm(h))`, a dense block's feed-forward.
    ///
    /// # Shapes
    /// - `h`: `[batch, 1, d_model]` → same
    pub fn dense(
        &self,
        (dense, norm): (&DenseActDense, &LayerNorm),
        h: Tensor<3>,
    ) -> Result<Tensor<3>, CoreError> {
        use crate::kernels::{Around, project};
        let [b, _, d] = h.dims();
        let x = h.reshape([b, d]);
        let inner = Around {
            relu: true,
            ..normed(norm)
        };
        let a = project(&self.gpu, x.clone(), dense.wi.val(), &inner)?;
        let outer = Around {
            residual: Some(x),
            ..Around::default()
        };
        Ok(project(&self.gpu, a, dense.wo.val(), &outer)?.reshape([b, 1, d]))
    }

    /// `scale · norm(h) · Wᵀ`: the decoder's final norm, the tied output layer's scale (f32, as
    /// burn applies it) and the output layer in one launch.
    ///
    /// # Shapes
    /// - `h`: `[batch, 1, d_model]` (before the final norm), `weight`: `[vocab, d_model]`
    /// - output: `[batch, 1, vocab]`
    pub fn logits(
        &self,
        norm: &LayerNorm,
        scale: f64,
        weight: Tensor<2>,
        h: Tensor<3>,
    ) -> Result<Tensor<3>, CoreError> {
        use crate::kernels::{Around, project};
        let [b, _, d] = h.dims();
        let [vocab, _] = weight.dims();
        let around = Around {
            scale: (scale != 1.0).then_some(scale as f32),
            ..normed(norm)
        };
        Ok(project(&self.gpu, h.reshape([b, d]), weight, &around)?.reshape([b, 1, vocab]))
    }

    fn attend(
        &self,
        attention: &Attention,
        q: Tensor<2>,
        kv: &KeyValue,
        bias: Tensor<4>,
    ) -> Result<Tensor<2>, CoreError> {
        attention
            .attend_query(&self.gpu, q, kv, bias)?
            .ok_or_else(|| CoreError::Execution("attention sizes the kernel does not take".into()))
    }

    /// `x + out · Woᵀ`, back to `[batch, 1, d_model]`.
    fn output(
        &self,
        attention: &Attention,
        out: Tensor<2>,
        x: Tensor<2>,
    ) -> Result<Tensor<3>, CoreError> {
        use crate::kernels::{Around, project};
        let [b, d] = x.dims();
        let around = Around {
            residual: Some(x),
            ..Around::default()
        };
        Ok(project(&self.gpu, out, attention.o.val(), &around)?.reshape([b, 1, d]))
    }
}

/// Without a GPU backend there is no [`Fused`] value: [`Fused::of`] says `None`, and nothing
/// else can be called.
#[cfg(not(any(feature = "wgpu", feature = "webgpu")))]
impl Fused {
    pub fn of(_h: &Tensor<3>, _keys: usize, _attention: &Attention) -> Option<Self> {
        None
    }

    pub fn self_attention(
        &self,
        _parts: (&Attention, &LayerNorm),
        _h: Tensor<3>,
        _kv: &mut KeyValue,
        _past: usize,
        _bias: Tensor<4>,
    ) -> Result<Tensor<3>, CoreError> {
        match self.never {}
    }

    pub fn cross_attention(
        &self,
        _parts: (&Attention, &LayerNorm),
        _h: Tensor<3>,
        _kv: &KeyValue,
        _bias: Tensor<4>,
    ) -> Result<Tensor<3>, CoreError> {
        match self.never {}
    }

    pub fn dense(
        &self,
        _parts: (&DenseActDense, &LayerNorm),
        _h: Tensor<3>,
    ) -> Result<Tensor<3>, CoreError> {
        match self.never {}
    }

    pub fn logits(
        &self,
        _norm: &LayerNorm,
        _scale: f64,
        _weight: Tensor<2>,
        _h: Tensor<3>,
    ) -> Result<Tensor<3>, CoreError> {
        match self.never {}
    }
}
