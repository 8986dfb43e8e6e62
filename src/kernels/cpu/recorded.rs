//! The recorded forward of a tracked layer: its output values, with a backward
//! that the factor passes can run without weight gradients and that hands them
//! the gradient of the output.
//!
//! Inside [`crate::record()`], a tracked layer's output is a custom op
//! `y = L(x, W, b)` whose forward returns values computed beforehand and whose
//! backward applies the layer's Jacobian transposes:
//!
//! ```text
//! linear:       g ↦ (g W,               Σ_rows gᵀ x,               Σ_rows g)
//! convolution:  g ↦ (col2im(W_flatᵀ g),  Σ_n g_n patches_nᵀ,  Σ_{n,p} g_{n,:,p})
//! scale:        g ↦ (g ⊙ m,              Σ_{n,t} g ⊙ x̂,             Σ_{n,t} g)
//! ```
//!
//! (a scale layer `y = x̂ ⊙ w + b` per channel, whose input `u` enters as
//! `x̂ = u ⊙ m / w`: `m = w/σ` for a batch norm on `u = x`, `m = w` for a
//! layer norm on `u = x̂`).
//!
//! During the factor passes of the recorded graph ([`FactorPasses`]), the
//! backward passes of the loss-Hessian factor (once per column), the op hands
//! `g` itself to the pass and skips the parameter parts,
//! and the input part is skipped when `x` carries no graph (the first layer).
//! Candle's own conv backward would also run `conv_transpose2d`, an order of
//! magnitude slower than a gather on the CPU.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};

use super::gemm::matmul_values;
use super::slices::{contiguous, values};
use crate::kernels::{matmul, PatchConv, Patches, ScaleCall};
use crate::tape::FactorPasses;

/// How the layer's output depends on its input.
enum Kind {
    Linear,
    Conv {
        patches: Arc<Patches>,
        one_d: bool,
    },
    /// `y = x̂ ⊙ w + b` with channels on axis 1 or last; the input's
    /// gradient is `g ⊙ m`, `multiplier` broadcasting to the output.
    Scale {
        multiplier: Tensor,
        features_last: bool,
    },
}

/// `y = L(x, W[, b])`: forward `value`, backward the Jacobian transposes.
struct Layer {
    /// The output values, handed to candle by the forward (which runs once).
    value: Mutex<Option<(CpuStorage, Shape)>>,
    /// What the weight multiplies, detached: `x`, the patches `[N, I·k·k, P]`
    /// or `x̂` (the output's shape).
    inputs: Tensor,
    kind: Kind,
    /// Factor passes running on the recorded graph.
    passes: FactorPasses,
    /// The call's index in the tape.
    index: usize,
}

impl CustomOp2 for Layer {
    fn name(&self) -> &'static str {
        "vivit-tracked-layer"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.values()
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.backward(x, weight, grad)
    }
}

impl CustomOp3 for Layer {
    fn name(&self) -> &'static str {
        "vivit-tracked-layer-bias"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.values()
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_w) = self.backward(x, weight, grad)?;
        let grad_b = self.parameter_grad(|| {
            // sum over every axis but the output channels
            match self.kind {
                Kind::Linear => grad.reshape(((), bias.elem_count()))?.sum(0),
                Kind::Conv { .. } => grad.flatten_from(2)?.sum(2)?.sum(0),
                Kind::Scale { features_last, .. } => channel_sum(grad, features_last),
            }
        })?;
        Ok((grad_x, grad_w, grad_b))
    }
}

impl Layer {
    /// The output values (taken: the forward runs once per op).
    fn values(&self) -> Result<(CpuStorage, Shape)> {
        let value = self.value.lock().map(|mut v| v.take());
        match value {
            Ok(Some(value)) => Ok(value),
            _ => candle_core::bail!("vivit tracked layer: the forward ran twice"),
        }
    }

    /// The backward of `x` and `W`: hands `g` to a factor pass, then `J_xᵀ g`
    /// and `J_Wᵀ g` (see [`Self::grad_x`], [`Self::parameter_grad`]).
    fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.passes.capture(self.index, grad);
        Ok((
            self.grad_x(x, weight, grad)?,
            self.parameter_grad(|| self.weight_transpose(weight, grad))?,
        ))
    }

    /// `J_xᵀ g` unless `x` carries no graph (the first layer).
    fn grad_x(&self, x: &Tensor, weight: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if x.track_op() {
            self.input_transpose(weight, grad).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A parameter's gradient `grad()`, unless a factor pass runs.
    fn parameter_grad(&self, grad: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
        if self.passes.running() {
            Ok(None)
        } else {
            grad().map(Some)
        }
    }

    /// `J_xᵀ g`.
    fn input_transpose(&self, weight: &Tensor, grad: &Tensor) -> Result<Tensor> {
        match &self.kind {
            Kind::Linear => matmul(grad, &weight.detach()),
            Kind::Conv { patches, one_d } => {
                let (n, o) = (grad.dim(0)?, grad.dim(1)?);
                let w = weight.detach().reshape((o, ()))?;
                let x = patches.transpose_product(&w, &grad.reshape((n, o, ()))?)?;
                if *one_d {
                    x.squeeze(2)
                } else {
                    Ok(x)
                }
            }
            Kind::Scale { multiplier, .. } => grad.broadcast_mul(multiplier),
        }
    }

    /// `J_Wᵀ g`, summed over samples and positions.
    fn weight_transpose(&self, weight: &Tensor, grad: &Tensor) -> Result<Tensor> {
        match &self.kind {
            Kind::Linear => {
                let (o, i) = weight.dims2()?;
                let g = grad.reshape(((), o))?;
                matmul(&g.t()?, &self.inputs.reshape(((), i))?)
            }
            Kind::Conv { .. } => {
                let (n, o) = (grad.dim(0)?, grad.dim(1)?);
                let g = grad.reshape((n, o, ()))?;
                matmul(&g, &self.inputs.transpose(1, 2)?)?
                    .sum(0)?
                    .reshape(weight.shape())
            }
            Kind::Scale { features_last, .. } => {
                channel_sum(&(grad * &self.inputs)?, *features_last)
            }
        }
    }
}

/// `Σ` of `t` `[N, C, …]` (or `[…, C]` with `features_last`) over every axis
/// but the channels: `[C]`.
fn channel_sum(t: &Tensor, features_last: bool) -> Result<Tensor> {
    if features_last {
        let c = t.dim(candle_core::D::Minus1)?;
        t.reshape(((), c))?.sum(0)
    } else {
        let (n, c) = (t.dim(0)?, t.dim(1)?);
        t.reshape((n, c, ()))?.sum(2)?.sum(0)
    }
}

/// `layer(x, weight[, bias])` as one op.
fn apply(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, layer: Layer) -> Result<Tensor> {
    match bias {
        Some(b) => x.apply_op3(weight, b, layer),
        None => x.apply_op2(weight, layer),
    }
}

/// The recorded forward of a linear layer on the CPU kernels: faer's
/// `x Wᵀ + b` (or `forward(x, W, b)` where faer does not multiply) gives the
/// output values; the result carries the backward of `x Wᵀ + b` and hands
/// its output gradient to the factor `passes` as call `index`.
pub(crate) fn recorded_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    forward: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>,
    passes: FactorPasses,
    index: usize,
) -> Result<Tensor> {
    let b = bias.map(Tensor::detach);
    // x Wᵀ + b by faer (candle's values up to round-off, as for convolutions)
    let (xd, wd) = (x.detach(), weight.detach());
    let value = match matmul_values(&xd, &wd.t()?)? {
        Some(product) => with_bias(product, b.as_ref(), 1)?,
        None => storage(&forward(&xd, &wd, b.as_ref())?)?,
    };
    let layer = Layer {
        value: Mutex::new(Some(value)),
        inputs: xd,
        kind: Kind::Linear,
        passes,
        index,
    };
    apply(x, weight, bias, layer)
}

/// A copy of the values of `t` as a CPU storage (f32 or f64) and its shape.
fn storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let op = "vivit tracked layer";
    let values = match t.dtype() {
        DType::F32 => {
            CpuStorage::F32(contiguous(values::<f32>(&storage, op)?, layout, op)?.to_vec())
        }
        DType::F64 => {
            CpuStorage::F64(contiguous(values::<f64>(&storage, op)?, layout, op)?.to_vec())
        }
        other => candle_core::bail!("{op}: f32 or f64 values expected, not {other:?}"),
    };
    Ok((values, layout.shape().clone()))
}

/// `y + b` in place for the values `y` `[N, O, inner]` of a product, `b` `[O]`.
fn with_bias(
    (mut y, shape): (CpuStorage, Shape),
    bias: Option<&Tensor>,
    inner: usize,
) -> Result<(CpuStorage, Shape)> {
    fn add<T: WithDType>(y: &mut [T], b: &[T], inner: usize) {
        for block in y.chunks_mut(b.len() * inner) {
            for (channel, &b) in block.chunks_mut(inner).zip(b) {
                channel.iter_mut().for_each(|v| *v += b);
            }
        }
    }
    let Some(b) = bias else {
        return Ok((y, shape));
    };
    let b = b.contiguous()?;
    let (storage, layout) = b.storage_and_layout();
    let op = "vivit tracked layer bias";
    match &mut y {
        CpuStorage::F32(y) => add(
            y,
            contiguous(values::<f32>(&storage, op)?, layout, op)?,
            inner,
        ),
        CpuStorage::F64(y) => add(
            y,
            contiguous(values::<f64>(&storage, op)?, layout, op)?,
            inner,
        ),
        _ => candle_core::bail!("{op}: f32 or f64 values expected"),
    }
    drop(storage);
    Ok((y, shape))
}

/// The recorded forward of the convolution `conv` (`weight` `[O, I, k…]`,
/// `bias` `[O]`) on `x` as for [`recorded_linear`]: the output `[N, O, …]`
/// and the patches `[N, I·k_h·k_w, P]` (values).
pub(crate) fn recorded_conv(
    conv: PatchConv,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    passes: FactorPasses,
    index: usize,
) -> Result<(Tensor, Tensor)> {
    let b = bias.map(Tensor::detach);
    let (x4, w4) = (conv.as_2d(&x.detach())?, conv.as_2d(&weight.detach())?);
    let a = conv.patches.gather(&x4)?;
    let (h_out, w_out) = conv.patches.output;
    let value = match matmul_values(&w4.reshape((1, conv.rows, conv.cols))?, &a)? {
        Some(product) => (
            with_bias(product, b.as_ref(), h_out * w_out)?.0,
            conv.shape.clone(),
        ),
        None => storage(&conv.product(&x4, &w4, b.as_ref())?.0)?,
    };
    let layer = Layer {
        value: Mutex::new(Some(value)),
        inputs: a.clone(),
        kind: Kind::Conv {
            patches: Arc::new(conv.patches),
            one_d: conv.one_d,
        },
        passes,
        index,
    };
    Ok((apply(x, weight, bias, layer)?, a))
}

/// The recorded forward of the scale layer `call` (see the module docs): its
/// output values, with the backward `g ↦ (g ⊙ m, Σ g ⊙ x̂, Σ g)` that hands
/// `g` to the factor `passes` as call `index`.
pub(crate) fn recorded_scale(
    call: ScaleCall,
    passes: FactorPasses,
    index: usize,
) -> Result<Tensor> {
    let layer = Layer {
        value: Mutex::new(Some(storage(&call.output.detach())?)),
        inputs: call.x_hat.detach(),
        kind: Kind::Scale {
            multiplier: call.multiplier.detach(),
            features_last: call.features_last,
        },
        passes,
        index,
    };
    apply(call.input, call.weight, call.bias, layer)
}
