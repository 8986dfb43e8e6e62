//! Tracked linear layer.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::tape::LayerKind;

/// A linear layer `y = x Wᵀ + b` (weight `[out, in]`) on the last axis of
/// inputs `[N, in]` or `[N, …, in]`, visible to the computations.
///
/// For inputs with extra axes `[N, T…, in]`, the per-sample weight gradient
/// sums over them: `∂ℓ_n/∂W = Σ_t g_{n,t} x_{n,t}ᵀ`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    /// A layer from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(inner: candle_nn::Linear) -> Self {
        Self { inner }
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        super::tracked_forward(
            LayerKind::Linear,
            self.weight(),
            self.bias(),
            xs,
            |x, w, b| candle_nn::Linear::new(w.clone(), b.cloned()).forward(x),
        )
    }
}

/// A tracked [`Linear`] with bias, initialised like [`candle_nn::linear`](fn@candle_nn::linear).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb).map(Linear::from)
}

/// A tracked [`Linear`] without bias, initialised like [`candle_nn::linear_no_bias`].
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear_no_bias(in_dim, out_dim, vb).map(Linear::from)
}

/// A tracked [`Linear`] with or without bias, like [`candle_nn::linear_b`].
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear_b(in_dim, out_dim, bias, vb).map(Linear::from)
}
