//! The probe run of a tracked layer: its output values, with a backward that
//! reaches the layer input and nothing else.
//!
//! The output is `y.detach() + J(x)`, where `J` is a custom op that is zero in
//! the forward pass and applies the layer's input Jacobian transpose `J_xᵀ` in
//! the backward pass: `x Wᵀ ↦ g W` for a linear layer, `W ⋆ x ↦ col2im(W_flatᵀ g)`
//! for a convolution. Candle's own backward would also compute the weight
//! gradient (and, for convolutions, run `conv_transpose2d`, an order of
//! magnitude slower than a gather on the CPU), which the factor backprop does
//! not need, once per backpropagated column.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

use super::patches::{ConvGeometry, Patches};

/// The input Jacobian transpose of a layer.
enum Transpose {
    Linear {
        weight: Tensor,
    },
    Conv {
        weight: Tensor,
        patches: Arc<Patches>,
        one_d: bool,
    },
}

/// Zero forward, `J_xᵀ` backward.
struct InputJacobian {
    output: Shape,
    transpose: Transpose,
}

impl CustomOp1 for InputJacobian {
    fn name(&self) -> &'static str {
        "vivit-input-jacobian"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = self.output.elem_count();
        let zeros = match storage {
            CpuStorage::F32(_) => CpuStorage::F32(vec![0.0; n]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![0.0; n]),
            _ => candle_core::bail!("vivit probe: f32 or f64 only"),
        };
        Ok((zeros, self.output.clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(match &self.transpose {
            Transpose::Linear { weight } => grad.broadcast_matmul(weight)?,
            Transpose::Conv {
                weight,
                patches,
                one_d,
            } => {
                // one gemm W_flatᵀ [I·k·k, O] × g [O, N·P], then col2im
                let (n, o) = (grad.dim(0)?, grad.dim(1)?);
                let g = grad
                    .reshape((n, o, ()))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((o, ()))?;
                let x = patches.scatter(&weight.t()?.matmul(&g)?, n)?;
                if *one_d {
                    x.squeeze(2)?
                } else {
                    x
                }
            }
        }))
    }
}

/// Whether the probe op runs here (the CPU, f32 or f64); elsewhere the probe
/// run falls back to candle's backward, which gives the same signals.
fn supported(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu)
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// The probe run of a linear layer with detached `weight`: `output` computed
/// by `forward`, backward `g ↦ g W` only.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, output: Tensor) -> Result<Tensor> {
    if !supported(x) {
        return Ok(output);
    }
    let jacobian = InputJacobian {
        output: output.shape().clone(),
        transpose: Transpose::Linear {
            weight: weight.clone(),
        },
    };
    output.detach() + x.apply_op1(jacobian)?
}

/// The probe run of a convolution (`weight` `[O, I, k…]`, detached) on `x`
/// `[N, I, H, W]` or `[N, I, L]`: the output `[N, O, …]` computed from the
/// patches, backward `g ↦ col2im(W_flatᵀ g)` only, and the patches
/// `[N, I·k_h·k_w, P]` (values).
pub(crate) fn conv(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geo: ConvGeometry,
) -> Result<(Tensor, Tensor)> {
    let one_d = weight.rank() == 3;
    let (x4, w4) = if one_d {
        (x.unsqueeze(2)?, weight.unsqueeze(2)?)
    } else {
        (x.clone(), weight.clone())
    };
    let (n, i, h, w) = x4.dims4()?;
    let (o, _, kh, kw) = w4.dims4()?;
    let patches = Arc::new(Patches::new((h, w), (kh, kw), geo, x)?);
    let a = patches.gather(&x4)?; // differentiable in x
    let weight_flat = w4.reshape((o, i * kh * kw))?;
    let (h_out, w_out) = patches.output;
    let mut y = weight_flat
        .unsqueeze(0)?
        .broadcast_matmul(&a)?
        .reshape((n, o, h_out, w_out))?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape((1, o, 1, 1))?)?;
    }
    if one_d {
        y = y.squeeze(2)?;
    }
    if !supported(x) {
        // candle's backward through the gather is correct, if slower
        return Ok((y, a.detach()));
    }
    let jacobian = InputJacobian {
        output: y.shape().clone(),
        transpose: Transpose::Conv {
            weight: weight_flat,
            patches,
            one_d,
        },
    };
    Ok(((y.detach() + x.apply_op1(jacobian)?)?, a.detach()))
}
