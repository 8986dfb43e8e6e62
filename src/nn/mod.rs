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
mod probe;

pub use conv::{conv1d, conv1d_no_bias, conv2d, conv2d_no_bias, Conv1d, Conv2d};
pub use linear::{linear, linear_b, linear_no_bias, Linear};

use candle_core::{Result, Tensor, Var};

use crate::record::{self, LayerKind, LayerRecord, Mode};
use patches::ConvGeometry;

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
    let (w, b) = (weight.detach(), bias.map(Tensor::detach));
    let (output, inputs) = match kind {
        LayerKind::Linear => {
            let output = forward(&w, b.as_ref())?;
            (probe::linear(input, &w, output)?, input.detach())
        }
        LayerKind::Conv {
            padding,
            stride,
            dilation,
            groups: 1,
        } => {
            let geo = ConvGeometry {
                padding,
                stride,
                dilation,
            };
            probe::conv(input, &w, b.as_ref(), geo)?
        }
        // grouped convolutions are refused by the computations; keep the run going
        LayerKind::Conv { .. } => (forward(&w, b.as_ref())?, input.detach()),
    };
    let probe = Var::zeros(output.shape(), output.dtype(), output.device())?;
    let output = output.add(probe.as_tensor())?;
    record::push_layer(LayerRecord {
        kind,
        weight: weight.clone(),
        bias: bias.cloned(),
        inputs,
        probe,
    });
    Ok(output)
}
