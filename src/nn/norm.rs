//! Tracked layer and RMS normalization.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNormConfig, VarBuilder};

use crate::kernels::ScaleCall;
use crate::record;

/// Layer normalization over the last axis, `y = x̂ ⊙ w + b` with
///
/// ```text
/// x̂ = (x − μ) / √(σ² + ε),   μ = mean_d x_d,   σ² = mean_d (x_d − μ)²
/// ```
///
/// (`μ = 0` without mean removal, as in RMS normalization), on inputs
/// `[N, …, D]`; the weight `w` `[D]` and bias `b` `[D]` are visible to the
/// computations. Its per-sample factor needs no Jacobian: the weight's
/// gradient is the sum over positions `t` of the output signal times `x̂`,
/// `∂ℓ_n/∂w = Σ_t g_{nt} ⊙ x̂_{nt}`, the bias's `Σ_t g_{nt}`.
///
/// The forward is candle_nn's formula, in the model's dtype (f32 for
/// f16/bf16), always as differentiable ops: where candle_nn 0.10 takes its
/// fused kernel (contiguous inputs), that kernel has no backward, so a loss
/// through it gives no gradient to the layer or anything before it. The
/// values agree up to round-off.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
}

impl LayerNorm {
    /// A layer from its weight `[D]`, bias `[D]` and `ε`.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self::from(candle_nn::LayerNorm::new(weight, bias, eps))
    }

    /// A layer from its weight `[D]` and `ε`, without bias.
    pub fn new_no_bias(weight: Tensor, eps: f64) -> Self {
        Self::from(candle_nn::LayerNorm::new_no_bias(weight, eps))
    }

    /// The weight `[D]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[D]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl From<candle_nn::LayerNorm> for LayerNorm {
    fn from(inner: candle_nn::LayerNorm) -> Self {
        Self { inner }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = &self.inner;
        let x_hat = normalized(x, n.remove_mean(), n.eps())?;
        let y = x_hat.broadcast_mul(n.weight())?;
        let y = match n.bias() {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        if !record::recording() {
            return Ok(y);
        }
        let call = ScaleCall {
            input: &x_hat,
            x_hat: &x_hat,
            multiplier: n.weight(),
            weight: n.weight(),
            bias: n.bias(),
            output: &y,
            features_last: true,
        };
        super::record_scale(call)
    }
}

/// `x̂` of candle_nn's `LayerNorm` on the last axis, with `x`'s graph.
fn normalized(x: &Tensor, remove_mean: bool, eps: f64) -> Result<Tensor> {
    let x_dtype = x.dtype();
    let internal = match x_dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let d = x.dim(D::Minus1)?;
    let x = x.to_dtype(internal)?;
    let x = if remove_mean {
        x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / d as f64)?)?
    } else {
        x
    };
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? / d as f64)?;
    x.broadcast_div(&(norm + eps)?.sqrt()?)?.to_dtype(x_dtype)
}

/// RMS normalization over the last axis, `y = x / √(mean_d x_d² + ε) ⊙ w`:
/// a [`LayerNorm`] without mean removal and bias, whose weight `[D]` is
/// visible to the computations (see there, also for candle_nn's fused
/// kernel, which has no backward).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    inner: LayerNorm,
}

impl RmsNorm {
    /// A layer from its weight `[D]` and `ε`.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self::from(candle_nn::RmsNorm::new(weight, eps))
    }

    /// The weight `[D]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl From<candle_nn::RmsNorm> for RmsNorm {
    fn from(inner: candle_nn::RmsNorm) -> Self {
        Self {
            inner: LayerNorm::from(inner.into_inner()),
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }
}

/// A tracked [`LayerNorm`] of `size` features, initialised like
/// [`candle_nn::layer_norm`](fn@candle_nn::layer_norm) (weight 1, bias 0 where `config.affine`).
pub fn layer_norm<C: Into<LayerNormConfig>>(
    size: usize,
    config: C,
    vb: VarBuilder,
) -> Result<LayerNorm> {
    candle_nn::layer_norm(size, config, vb).map(LayerNorm::from)
}

/// A tracked [`LayerNorm`] without bias, like [`candle_nn::layer_norm_no_bias`](fn@candle_nn::layer_norm_no_bias).
pub fn layer_norm_no_bias(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm_no_bias(size, eps, vb).map(LayerNorm::from)
}

/// A tracked [`RmsNorm`] of `size` features, like [`candle_nn::rms_norm`](fn@candle_nn::rms_norm).
pub fn rms_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    candle_nn::rms_norm(size, eps, vb).map(RmsNorm::from)
}
