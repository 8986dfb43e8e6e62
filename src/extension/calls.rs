//! Each tracked layer call's block of the factor, from its recorded inputs
//! and its backpropagated output signals, and a layer's from its calls'.

use candle_core::{Shape, Tensor};

use super::layer::{FormedFactor, LayerFactor, OuterFactor};
use crate::error::{Error, Result};
use crate::kernels::{ConvGeometry, Patches};
use crate::tape::{LayerKind, LayerRecord};

/// The factor of one layer call.
pub(super) enum CallFactor {
    /// `(A [N, I, T], B [C, N, O, T])` (see [`OuterFactor`]).
    Outer(Tensor, Tensor),
    Formed(FormedFactor),
}

impl CallFactor {
    /// The factor of a layer from those of its calls: the positions of all
    /// calls side by side, or the formed factors summed.
    pub(super) fn join(calls: Vec<CallFactor>, weight_shape: &Shape) -> Result<LayerFactor> {
        let (mut a_parts, mut b_parts, mut formed) = (Vec::new(), Vec::new(), None);
        for call in calls {
            match call {
                CallFactor::Outer(a, b) => {
                    a_parts.push(a);
                    b_parts.push(b);
                }
                CallFactor::Formed(f) => {
                    formed = Some(match formed {
                        Some(sum) => FormedFactor::plus(&sum, &f)?,
                        None => f,
                    })
                }
            }
        }
        Ok(match formed {
            Some(formed) => LayerFactor::Formed(formed),
            None => LayerFactor::Outer(OuterFactor::new(
                Tensor::cat(&a_parts, 2)?,
                Tensor::cat(&b_parts, 3)?,
                weight_shape.clone(),
            )),
        })
    }
}

/// The factor of one layer call from its (subsampled) `inputs()` and output
/// signals `b` `[C, N, *out_shape]` (a scale call's passes kept all it needs,
/// so its inputs are not selected).
pub(super) fn call_factor(
    call: &LayerRecord,
    inputs: impl FnOnce() -> Result<Tensor>,
    b: &Tensor,
) -> Result<CallFactor> {
    let (c, n) = (b.dim(0)?, b.dim(1)?);
    let positions = |features: usize| b.elem_count() / (c * n * features).max(1);
    match call.kind {
        LayerKind::Linear => {
            // inputs [N, T…, I], outputs [C, N, T…, O]: move T last
            let inputs = inputs()?;
            let i = inputs.dim(candle_core::D::Minus1)?;
            let o = b.dim(candle_core::D::Minus1)?;
            let t = positions(o);
            let a = inputs.reshape((n, t, i))?.transpose(1, 2)?.contiguous()?;
            let b = b.reshape((c, n, t, o))?.transpose(2, 3)?.contiguous()?;
            Ok(CallFactor::Outer(a, b))
        }
        LayerKind::Conv { groups: 1, .. } => {
            // patches [N, I·k·k, P], outputs [C, N, O, positions…]
            let inputs = inputs()?;
            let b = b.reshape((c, n, b.dim(2)?, inputs.dim(2)?))?;
            Ok(CallFactor::Outer(inputs, b))
        }
        LayerKind::Conv { groups, .. } => {
            let inputs = inputs()?;
            let b = b.reshape((c, n, b.dim(2)?, inputs.dim(2)?))?;
            let (bias, shape) = (call.bias.is_some(), call.weight.shape());
            let factor = FormedFactor::grouped(&inputs, &b, groups, bias, shape)?;
            Ok(CallFactor::Formed(factor))
        }
        LayerKind::ConvTranspose {
            padding,
            stride,
            dilation,
        } => {
            // weight [I, O, k…], signals [C, N, O, out…] as [C·N, O, H, W]
            let dims = call.weight.dims();
            let (o, kernel) = match *dims {
                [_, o, k] => (o, (1, k)),
                [_, o, kh, kw] => (o, (kh, kw)),
                _ => {
                    let what =
                        format!("transposed convolution with weight {dims:?} (not 1-d or 2-d)");
                    return Err(Error::UnsupportedLayer(what));
                }
            };
            let (h, w) = match b.dims()[3..] {
                [w] => (1, w),
                [h, w] => (h, w),
                _ => {
                    let what = format!("transposed convolution with signals {:?}", b.dims());
                    return Err(Error::UnsupportedLayer(what));
                }
            };
            let b = b.reshape((c * n, o, h, w))?;
            let geo = ConvGeometry {
                padding,
                stride,
                dilation,
            };
            let bp = Patches::new((h, w), kernel, geo, &b)?.gather(&b)?;
            let bp = bp.reshape((c, n, bp.dim(1)?, bp.dim(2)?))?;
            let b = b.reshape((c, n, o, h * w))?;
            let bias = call.bias.as_ref().map(|_| &b);
            let factor = FormedFactor::transposed(&inputs()?, &bp, bias, call.weight.shape())?;
            Ok(CallFactor::Formed(factor))
        }
        LayerKind::Scale { .. } => {
            // the passes kept the sums over positions (see [`kept_signal`])
            let factor = FormedFactor::scale(b, call.bias.is_some())?;
            Ok(CallFactor::Formed(factor))
        }
        LayerKind::Embedding => {
            let (vocab, d) = call.weight.dims2()?;
            let b = b.reshape((c, n, positions(d), d))?;
            let ids = inputs()?.reshape((n, ()))?;
            Ok(CallFactor::Formed(FormedFactor::embedding(
                &ids, &b, vocab,
            )?))
        }
    }
}

/// What a factor pass keeps of a call's output signal `g` `[N, …]`, given the
/// call's `inputs()` (both of the subsampled rows): `g` itself, or for a scale
/// layer (inputs `x̂` of `g`'s shape, features `d` on axis 1 or last) only
/// its sums over the positions `t`,
///
/// ```text
/// kept[n, 0, d] = Σ_t g[n, d, t] x̂[n, d, t],   kept[n, 1, d] = Σ_t g[n, d, t]
/// ```
///
/// `[N, 2, D]`, formed on the pass's thread while `g` is at hand, so that
/// the passes store `2·D` values per sample instead of the whole signal.
pub(super) fn kept_signal(
    call: &LayerRecord,
    inputs: impl FnOnce() -> Result<Tensor>,
    g: &Tensor,
) -> Result<Tensor> {
    let LayerKind::Scale { features_last } = call.kind else {
        return Ok(g.clone());
    };
    let (n, d) = (g.dim(0)?, call.weight.elem_count());
    // [N, D] sums over the positions, wherever the features are
    let sums = |t: &Tensor| match features_last {
        true => t.reshape((n, (), d))?.sum(1),
        false => t.reshape((n, d, ()))?.sum(2),
    };
    let weight = sums(&(g * inputs()?)?)?;
    Ok(Tensor::stack(&[weight, sums(g)?], 1)?)
}

/// The dimensions of what a factor pass keeps (see [`kept_signal`]) of a
/// call's signal `[N, …]` of `dims`.
pub(super) fn kept_dims(call: &LayerRecord, dims: &[usize]) -> Vec<usize> {
    match (call.kind, dims.first()) {
        (LayerKind::Scale { .. }, Some(&n)) => vec![n, 2, call.weight.elem_count()],
        _ => dims.to_vec(),
    }
}
