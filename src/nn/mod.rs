//! Tracked layers: candle_nn layers whose parameters the computations can see.
//!
//! [`Linear`], [`Conv1d`] and [`Conv2d`] wrap their candle_nn twins and are built
//! the same way ([`linear`], [`conv2d`], …, or `From` a candle_nn layer). They
//! implement [`candle_core::Module`]. Outside [`crate::record`] their forward is
//! exactly candle_nn's; inside, the probe run of `record` additionally
//! remembers each call's input and adds a zero probe to its output.

mod conv;
mod linear;
mod patches;

pub use conv::{conv1d, conv1d_no_bias, conv2d, conv2d_no_bias, Conv1d, Conv2d};
pub use linear::{linear, linear_b, linear_no_bias, Linear};

use candle_core::{Result, Tensor, Var};

use crate::record::{self, LayerKind, LayerRecord, Mode};
use patches::{conv_by_patches, ConvGeometry};

/// The probe run of a convolution: `patches(x) · W_flatᵀ`, whose backward to
/// `x` is a scatter-add (candle's `conv_transpose2d` is an order of magnitude
/// slower on the CPU) and whose patches are the factor algebra's inputs.
/// Returns the output and the patches `[N, P, I·k_h·k_w]`.
fn conv_probe(
    kind: LayerKind,
    weight: &Tensor,
    bias: Option<&Tensor>,
    x: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let LayerKind::Conv {
        padding,
        stride,
        dilation,
        ..
    } = kind
    else {
        candle_core::bail!("conv_probe needs a convolution");
    };
    let geo = ConvGeometry {
        padding,
        stride,
        dilation,
    };
    if weight.rank() == 3 {
        // 1-d: height one
        let (y, a) = conv_by_patches(&x.unsqueeze(2)?, &weight.unsqueeze(2)?, bias, geo)?;
        return Ok((y.squeeze(2)?, a));
    }
    conv_by_patches(x, weight, bias, geo)
}

/// Forward of a tracked layer with parameters `weight` and `bias`.
///
/// `forward(weight, bias)` is the plain layer forward. In the probe run it is
/// evaluated on detached parameters and a zero probe is added to its output.
fn tracked_forward(
    kind: LayerKind,
    weight: &Tensor,
    bias: Option<&Tensor>,
    input: &Tensor,
    forward: impl Fn(&Tensor, Option<&Tensor>) -> Result<Tensor>,
) -> Result<Tensor> {
    if record::mode() != Some(Mode::Probe) {
        return forward(weight, bias);
    }
    let detached_bias = bias.map(Tensor::detach);
    let (output, inputs) = match kind {
        LayerKind::Linear => (
            forward(&weight.detach(), detached_bias.as_ref())?,
            input.clone(),
        ),
        LayerKind::Conv { groups: 1, .. } => {
            conv_probe(kind, &weight.detach(), detached_bias.as_ref(), input)?
        }
        // grouped convolutions are refused by the computations; keep the run going
        LayerKind::Conv { .. } => (
            forward(&weight.detach(), detached_bias.as_ref())?,
            input.clone(),
        ),
    };
    let probe = Var::zeros(output.shape(), output.dtype(), output.device())?;
    let output = output.add(probe.as_tensor())?;
    record::push_layer(LayerRecord {
        kind,
        weight: weight.clone(),
        bias: bias.cloned(),
        inputs: inputs.detach(),
        probe,
    });
    Ok(output)
}
