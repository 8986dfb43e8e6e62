//! Tracked transposed convolutions.

use candle_core::{Module, Result, Tensor};
use candle_nn::{ConvTranspose1dConfig, ConvTranspose2dConfig, VarBuilder};

use crate::record;
use crate::tape::LayerKind;

/// A 2-d transposed convolution, visible to the computations.
///
/// Weight `[in, out, k_h, k_w]`, input `[N, in, H, W]`: input position `p`
/// adds `x_{n,:,p}ᵀ W` to the outputs its kernel reaches, so the per-sample
/// weight gradient is `∂ℓ_n/∂W = Σ_p x_{n,:,p} ⊗ ĝ_{n,:,p}` with `ĝ_{n,:,p}`
/// the patch of the output gradient (im2col with the layer's stride,
/// padding and dilation) that position `p` reaches. The forward is exactly
/// candle_nn's.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    inner: candle_nn::ConvTranspose2d,
}

/// A 1-d transposed convolution, visible to the computations: the algebra
/// of [`ConvTranspose2d`] with a height of one, weight `[in, out/groups, k]`.
///
/// For `groups = 1` its forward runs as candle's 2-d transposed convolution
/// with a height of one, cropped to the output: candle 0.10.2 has no
/// backward for the 1-d op, and on the CPU its 1-d op departs from the
/// definition `y[o, q·s + a·d − p] += x[i, q] W[i, o, a]` for batches of
/// several samples with several channels (a test here checks this forward
/// against the definition). With `groups > 1` it is candle_nn's forward and
/// the layer is not tracked.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    inner: candle_nn::ConvTranspose1d,
}

impl ConvTranspose2d {
    /// A layer from its weight `[in, out, k_h, k_w]`, optional bias `[out]` and config.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvTranspose2dConfig) -> Self {
        Self::from(candle_nn::ConvTranspose2d::new(weight, bias, config))
    }

    /// The weight `[in, out, k_h, k_w]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// Padding, output padding, stride and dilation.
    pub fn config(&self) -> &ConvTranspose2dConfig {
        self.inner.config()
    }
}

impl ConvTranspose1d {
    /// A layer from its weight `[in, out/groups, k]`, optional bias `[out]` and config.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvTranspose1dConfig) -> Self {
        Self::from(candle_nn::ConvTranspose1d::new(weight, bias, config))
    }

    /// The weight `[in, out/groups, k]`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// Padding, output padding, stride, dilation and groups.
    pub fn config(&self) -> &ConvTranspose1dConfig {
        self.inner.config()
    }
}

impl From<candle_nn::ConvTranspose2d> for ConvTranspose2d {
    fn from(inner: candle_nn::ConvTranspose2d) -> Self {
        Self { inner }
    }
}

impl From<candle_nn::ConvTranspose1d> for ConvTranspose1d {
    fn from(inner: candle_nn::ConvTranspose1d) -> Self {
        Self { inner }
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let output = self.inner.forward(x)?;
        let c = self.config();
        let kind = LayerKind::ConvTranspose {
            padding: (c.padding, c.padding),
            stride: (c.stride, c.stride),
            dilation: (c.dilation, c.dilation),
        };
        record_call(kind, self.weight(), self.bias(), x, output)
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = *self.config();
        if c.groups != 1 {
            return self.inner.forward(x);
        }
        // the 2-d op with a height of one and no padding, cropped to the
        // output, `L_out = (L − 1)s − 2p + d(k − 1) + p_out + 1`, of `L_full = L_out + 2p − p_out`
        let full = x
            .unsqueeze(2)?
            .conv_transpose2d(&self.weight().unsqueeze(2)?, 0, 0, c.stride, c.dilation)?
            .squeeze(2)?;
        let (l, k) = (x.dim(2)?, self.weight().dim(2)?);
        let out = (l - 1) * c.stride + c.dilation * (k - 1) + c.output_padding + 1;
        let out = out.checked_sub(2 * c.padding).ok_or_else(|| {
            candle_core::Error::Msg(format!("padding {} leaves no output", c.padding))
        })?;
        let kept = out.min(full.dim(2)? - c.padding);
        let y = full
            .narrow(2, c.padding, kept)?
            .pad_with_zeros(2, 0, out - kept)?;
        let y = match self.bias() {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dims1()?, 1))?)?,
            None => y,
        };
        let kind = LayerKind::ConvTranspose {
            padding: (0, c.padding),
            stride: (1, c.stride),
            dilation: (1, c.dilation),
        };
        record_call(kind, self.weight(), self.bias(), x, y)
    }
}

/// Records a transposed convolution's call inside [`crate::record()`]: its
/// input as `[N, I, P]`.
fn record_call(
    kind: LayerKind,
    weight: &Tensor,
    bias: Option<&Tensor>,
    x: &Tensor,
    output: Tensor,
) -> Result<Tensor> {
    if !record::recording() {
        return Ok(output);
    }
    let (n, i) = (x.dim(0)?, x.dim(1)?);
    let inputs = x.detach().reshape((n, i, ()))?;
    super::record_call(kind, weight, bias, inputs, output)
}

/// A tracked [`ConvTranspose2d`] with bias, initialised like
/// [`candle_nn::conv_transpose2d`](fn@candle_nn::conv_transpose2d).
pub fn conv_transpose2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose2dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    candle_nn::conv_transpose2d(in_channels, out_channels, kernel_size, cfg, vb)
        .map(ConvTranspose2d::from)
}

/// A tracked [`ConvTranspose2d`] without bias, like [`candle_nn::conv_transpose2d_no_bias`].
pub fn conv_transpose2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose2dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    candle_nn::conv_transpose2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb)
        .map(ConvTranspose2d::from)
}

/// A tracked [`ConvTranspose1d`] with bias, initialised like
/// [`candle_nn::conv_transpose1d`](fn@candle_nn::conv_transpose1d).
pub fn conv_transpose1d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose1dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose1d> {
    candle_nn::conv_transpose1d(in_channels, out_channels, kernel_size, cfg, vb)
        .map(ConvTranspose1d::from)
}

/// A tracked [`ConvTranspose1d`] without bias, like [`candle_nn::conv_transpose1d_no_bias`].
pub fn conv_transpose1d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: ConvTranspose1dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose1d> {
    candle_nn::conv_transpose1d_no_bias(in_channels, out_channels, kernel_size, cfg, vb)
        .map(ConvTranspose1d::from)
}
