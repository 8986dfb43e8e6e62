//! Tracked layers: candle_nn layers whose parameters the computations can see.
//!
//! Each wraps its candle_nn twin and is built the same way (the same
//! constructor functions and signatures, or `From` the candle_nn layer):
//!
//! - [`Linear`], [`Conv1d`], [`Conv2d`] (`Module`, groups = 1): outside
//!   [`crate::record()`] their forward is exactly candle_nn's; inside, each
//!   call remembers its input and runs as one op whose backward hands the
//!   factor passes the gradient of its output and skips the weight gradients
//!   there (convolutions as patches · weights, equal to candle's up to
//!   round-off);
//! - grouped and depthwise [`Conv1d`], [`Conv2d`], and [`ConvTranspose1d`],
//!   [`ConvTranspose2d`] (`Module`): candle ops; inside `record` a call
//!   remembers its patches (or inputs) and the per-sample weight factors are
//!   formed per group (from the patches of the output signals, transposed);
//! - [`LayerNorm`], [`RmsNorm`] (`Module`), [`BatchNorm`] (`ModuleT`, in
//!   evaluation mode) and [`Embedding`] (`Module`): candle ops; inside
//!   `record` a call remembers its normalized input (or its ids) and the
//!   per-sample factors of its parameters are formed directly, as sums over
//!   positions (norms) or scattered rows (embeddings), without a Jacobian.

mod batch_norm;
mod conv;
mod conv_transpose;
mod embedding;
mod linear;
mod norm;
mod pool;

pub(crate) use batch_norm::is_running_statistic;
pub use batch_norm::{batch_norm, BatchNorm};
pub use conv::{conv1d, conv1d_no_bias, conv2d, conv2d_no_bias, Conv1d, Conv2d};
pub use conv_transpose::{
    conv_transpose1d, conv_transpose1d_no_bias, conv_transpose2d, conv_transpose2d_no_bias,
    ConvTranspose1d, ConvTranspose2d,
};
pub use embedding::{embedding, Embedding};
pub use linear::{linear, linear_b, linear_no_bias, Linear};
pub use norm::{layer_norm, layer_norm_no_bias, rms_norm, LayerNorm, RmsNorm};
pub use pool::{max_pool2d, max_pool2d_padded};

use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

use crate::kernels::{self, ConvGeometry, ScaleCall};
use crate::record;
use crate::tape::{LayerKind, LayerRecord, Signal};

/// The variables of `varmap` with their names, sorted by name
/// ([`VarMap::all_vars`] has no stable order, so parameter groups and
/// optimizers built from it would differ from run to run).
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
///
/// # fn main() -> candle_core::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let _fc2 = vivit::nn::linear(3, 2, vb.pp("fc2"))?;
/// let _fc1 = vivit::nn::linear(4, 3, vb.pp("fc1"))?;
/// let names: Vec<String> = vivit::nn::vars_by_name(&varmap).into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
/// # Ok(())
/// # }
/// ```
pub fn vars_by_name(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Forward of a tracked layer with parameters `weight` and `bias`.
///
/// `forward(x, weight, bias)` is the plain layer forward, used outside
/// [`crate::record()`]; inside, see the module docs.
fn tracked_forward(
    kind: LayerKind,
    weight: &Tensor,
    bias: Option<&Tensor>,
    input: &Tensor,
    forward: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>,
) -> Result<Tensor> {
    if !record::recording() {
        return forward(input, weight, bias);
    }
    let (output, inputs, index) = match kind {
        LayerKind::Linear => {
            let (output, index) = kernels::recorded_linear(input, weight, bias, &forward)?;
            (output, input.detach(), index)
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
            kernels::recorded_conv(input, weight, bias, geo)?
        }
        LayerKind::Conv {
            padding,
            stride,
            dilation,
            ..
        } => {
            // grouped: candle's op, and the patches for the factor algebra
            let geo = ConvGeometry {
                padding,
                stride,
                dilation,
            };
            let patches = kernels::conv_patches(input, weight, geo)?;
            (forward(input, weight, bias)?, patches, None)
        }
        // the other kinds are recorded by their own modules
        _ => (forward(input, weight, bias)?, input.detach(), None),
    };
    record_output(kind, weight, bias, inputs, output, index)
}

/// Records a call of a scale layer (the norms) inside [`crate::record()`]:
/// the recorded op where the CPU kernels run, candle's ops and a probe
/// elsewhere; `x̂` (the output's shape) for the factor algebra.
fn record_scale(call: ScaleCall) -> Result<Tensor> {
    let kind = LayerKind::Scale {
        features_last: call.features_last,
    };
    let (weight, bias, inputs) = (call.weight, call.bias, call.x_hat.detach());
    let (output, index) = kernels::recorded_scale(call)?;
    record_output(kind, weight, bias, inputs, output, index)
}

/// Records a call whose `output` came from a recorded op (the call `index`
/// in the tape, which captures the signal) or from candle's ops (`None`:
/// see [`record_call`]).
fn record_output(
    kind: LayerKind,
    weight: &Tensor,
    bias: Option<&Tensor>,
    inputs: Tensor,
    output: Tensor,
    index: Option<usize>,
) -> Result<Tensor> {
    let Some(index) = index else {
        return record_call(kind, weight, bias, inputs, output);
    };
    let shape = output.shape().clone();
    record::push_layer(LayerRecord {
        kind,
        weight: weight.clone(),
        bias: bias.cloned(),
        inputs,
        signal: Signal::Captured { index, shape },
    });
    Ok(output)
}

/// Records a call of a tracked layer that runs candle's ops inside
/// [`crate::record()`]: its `inputs` for the factor algebra, and a zero
/// variable added to its `output`, whose gradient is the output signal.
fn record_call(
    kind: LayerKind,
    weight: &Tensor,
    bias: Option<&Tensor>,
    inputs: Tensor,
    output: Tensor,
) -> Result<Tensor> {
    let probe = Var::zeros(output.shape(), output.dtype(), output.device())?;
    let output = output.add(probe.as_tensor())?;
    record::push_layer(LayerRecord {
        kind,
        weight: weight.clone(),
        bias: bias.cloned(),
        inputs,
        signal: Signal::Probe(probe),
    });
    Ok(output)
}
