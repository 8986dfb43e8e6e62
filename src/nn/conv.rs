//! Tracked convolution layers.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv1dConfig, Conv2dConfig, VarBuilder};

use crate::tape::LayerKind;

/// A 2-d convolution, visible to the computations.
///
/// Weight `[out, in, k_h, k_w]`, input `[N, in, H, W]`. The per-sample weight
/// gradient is `∂ℓ_n/∂W = Σ_p g_{n,:,p} ⊗ x̂_{n,:,p}` over output positions `p`,
/// where `x̂_{n,:,p}` is the input patch (im2col column) that position `p` sees.
/// Grouped and depthwise convolutions (`groups = G > 1`, weight
/// `[out, in/G, k_h, k_w]`) sum over the patches of each group's input
/// channels: `∂ℓ_n/∂W_γ = Σ_p g_{n,γ,p} ⊗ x̂_{n,γ,p}`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
}

/// A 1-d convolution, visible to the computations.
///
/// Weight `[out, in, k]`, input `[N, in, L]`; the algebra is that of
/// [`Conv2d`] with a height of one.
#[derive(Debug, Clone)]
pub struct Conv1d {
    inner: candle_nn::Conv1d,
}

impl Conv2d {
    /// A layer from its weight `[out, in/groups, k_h, k_w]`, optional bias and config.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self {
            inner: candle_nn::Conv2d::new(weight, bias, config),
        }
    }

    /// The weight `[out, in/groups, k_h, k_w]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// Padding, stride, dilation and groups.
    pub fn config(&self) -> &Conv2dConfig {
        self.inner.config()
    }
}

impl Conv1d {
    /// A layer from its weight `[out, in/groups, k]`, optional bias and config.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv1dConfig) -> Self {
        Self {
            inner: candle_nn::Conv1d::new(weight, bias, config),
        }
    }

    /// The weight `[out, in/groups, k]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// Padding, stride, dilation and groups.
    pub fn config(&self) -> &Conv1dConfig {
        self.inner.config()
    }
}

impl From<candle_nn::Conv2d> for Conv2d {
    fn from(inner: candle_nn::Conv2d) -> Self {
        Self { inner }
    }
}

impl From<candle_nn::Conv1d> for Conv1d {
    fn from(inner: candle_nn::Conv1d) -> Self {
        Self { inner }
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let c = *self.config();
        let kind = LayerKind::Conv {
            padding: (c.padding, c.padding),
            stride: (c.stride, c.stride),
            dilation: (c.dilation, c.dilation),
            groups: c.groups,
        };
        super::tracked_forward(kind, self.weight(), self.bias(), xs, |x, w, b| {
            candle_nn::Conv2d::new(w.clone(), b.cloned(), c).forward(x)
        })
    }
}

impl Module for Conv1d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let c = *self.config();
        let kind = LayerKind::Conv {
            padding: (0, c.padding),
            stride: (1, c.stride),
            dilation: (1, c.dilation),
            groups: c.groups,
        };
        super::tracked_forward(kind, self.weight(), self.bias(), xs, |x, w, b| {
            candle_nn::Conv1d::new(w.clone(), b.cloned(), c).forward(x)
        })
    }
}

/// A tracked [`Conv2d`] with bias, initialised like [`candle_nn::conv2d`].
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb).map(Conv2d::from)
}

/// A tracked [`Conv2d`] without bias, initialised like [`candle_nn::conv2d_no_bias`].
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb).map(Conv2d::from)
}

/// A tracked [`Conv1d`] with bias, initialised like [`candle_nn::conv1d`].
pub fn conv1d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv1dConfig,
    vb: VarBuilder,
) -> Result<Conv1d> {
    candle_nn::conv1d(in_channels, out_channels, kernel_size, cfg, vb).map(Conv1d::from)
}

/// A tracked [`Conv1d`] without bias, initialised like [`candle_nn::conv1d_no_bias`].
pub fn conv1d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv1dConfig,
    vb: VarBuilder,
) -> Result<Conv1d> {
    candle_nn::conv1d_no_bias(in_channels, out_channels, kernel_size, cfg, vb).map(Conv1d::from)
}
