//! The one boundary between vivit's CPU kernels and the generic path.
//!
//! Every operation with a CPU fast form (faer products, pulp SIMD, values read
//! in place through `storage_and_layout`) is chosen here and only here:
//!
//! - `cpu/` holds the CPU kernels, for f32 and f64 tensors on [`Device::Cpu`];
//! - `generic.rs` holds the same operations as compositions of candle ops,
//!   with candle's backward: right on every device (CUDA, Metal) and dtype.
//!
//! A caller asks for the operation ([`matmul`], [`gram`], [`tiled_product`],
//! [`weight_factor_on_support`], [`max_pool2d`], [`recorded_linear`],
//! [`recorded_conv`], [`recorded_scale`], [`conv_patches`], [`Patches::gather`], [`Stacked::new`]); it never tests
//! a device or a dtype. The environment variable `VIVIT_KERNELS=generic`
//! (read once, at first use) sends the CPU down the generic path too, so the
//! path other devices take is tested on every CI run; any other value, or
//! none, takes the CPU kernels where they apply.

mod cpu;
mod generic;
mod patches;
mod stacked;

pub(crate) use cpu::RowOrder;
pub(crate) use patches::{ConvGeometry, PatchConv, Patches};
pub(crate) use stacked::{Slot, Stacked};

use std::sync::OnceLock;

use candle_core::{DType, Device, Result, Tensor};

use crate::tape::FactorPasses;

/// Whether the CPU kernels take tensors of `dtype` on `device`: f32 and f64
/// on the CPU, unless `VIVIT_KERNELS=generic`.
fn cpu_kernels(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && matches!(dtype, DType::F32 | DType::F64) && !generic_forced()
}

/// Whether `VIVIT_KERNELS=generic` is set (read once).
fn generic_forced() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("VIVIT_KERNELS") {
        Ok(value) if value == "generic" => {
            log::info!("VIVIT_KERNELS=generic: candle's ops on every device");
            true
        }
        Ok(value) if !value.is_empty() && value != "cpu" => {
            log::warn!("VIVIT_KERNELS={value:?} is neither \"generic\" nor \"cpu\"; ignored");
            false
        }
        _ => false,
    })
}

/// `A B` for `a` `[…, m, k]` and `b` `[…, k, n]`, batched over the leading
/// axes, which broadcast as in [`Tensor::broadcast_matmul`]:
/// `C[β] = A[β] B[β]`. Operands that carry a graph keep it (candle's product).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if cpu_kernels(a.device(), a.dtype()) && cpu::multiplies(a, b) {
        cpu::matmul(a, b)
    } else {
        generic::matmul(a, b)
    }
}

/// `V Vᵀ` `[m, m]` of `v` `[m, k]`, exactly symmetric on the CPU.
pub(crate) fn gram(v: &Tensor) -> Result<Tensor> {
    if cpu_kernels(v.device(), v.dtype()) && !v.track_op() && v.rank() == 2 {
        cpu::gram(v)
    } else {
        v.matmul(&v.t()?)
    }
}

/// `P ⊙ (1 ⊗ M) + S` `[C·N, C'·N']` for `p` `[C·N, C'·N']`, `m` `[N, N']` and
/// an optional `s` like `p`:
///
/// ```text
/// out[c·N + n, c'·N' + n'] = P[c·N + n, c'·N' + n'] · M[n, n'] + S[c·N + n, c'·N' + n']
/// ```
pub(crate) fn tiled_product(p: &Tensor, m: &Tensor, s: Option<&Tensor>) -> Result<Tensor> {
    if cpu_kernels(p.device(), p.dtype()) && cpu::tiles(p, m, s)? {
        cpu::tiled_product(p, m, s)
    } else {
        generic::tiled_product(p, m, s)
    }
}

/// Output channels `start..start + len` of the weight factor `V_W`
/// `[C·N, len·I]` in `order`, for inputs `a` `[N, I, T]` and signals
/// `b` `[C, N, O, T]`, formed on the support of the signals:
/// `V_W[c,n][o, :] = Σ_{t ∈ P(n,o)} B[c,n,o,t] A[n,:,t]`, where
/// `P(n,o) = { t : B[c,n,o,t] ≠ 0 for some c }`. `None` where the dense
/// product is the better way (always off the CPU kernels).
pub(crate) fn weight_factor_on_support(
    a: &Tensor,
    b: &Tensor,
    start: usize,
    len: usize,
    order: RowOrder,
) -> Result<Option<Tensor>> {
    if cpu_kernels(b.device(), b.dtype()) {
        cpu::weight_factor(a, b, start, len, order)
    } else {
        Ok(None)
    }
}

/// The window geometry of a max pooling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// `((top, bottom), (left, right))`, smaller than the kernel.
    pub padding: ((usize, usize), (usize, usize)),
}

impl Windows {
    /// The output `(height, width)` for an `(h, w)` input.
    pub fn output(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let ((top, bottom), (left, right)) = self.padding;
        (
            (h + top + bottom - self.kernel.0) / self.stride.0 + 1,
            (w + left + right - self.kernel.1) / self.stride.1 + 1,
        )
    }
}

/// Max pooling of `x` `[N, C, H, W]` padded with `−∞` over `windows` (checked
/// by the caller), with the backward that sends each window's gradient to its
/// first maximum; `recording`: keep the argmax for the factor passes.
pub(crate) fn max_pool2d(x: &Tensor, windows: Windows, recording: bool) -> Result<Tensor> {
    if cpu_kernels(x.device(), x.dtype()) {
        cpu::max_pool2d(x, windows, recording)
    } else {
        generic::max_pool2d(x, windows)
    }
}

/// The factor passes of the recording scope open on this thread and the
/// index in the tape of the next layer call, where the CPU kernels run the
/// recorded layer op; `None` where candle's ops run (their backward gives the
/// same signals at a probe, with the parameter gradients in every pass).
fn recorded_op(x: &Tensor) -> Option<(FactorPasses, usize)> {
    if cpu_kernels(x.device(), x.dtype()) {
        crate::record::factor_passes()
    } else {
        None
    }
}

/// The recorded forward of a linear layer inside `record`: the output (with
/// the backward of `x Wᵀ + b`) and the call's index in the tape if its op
/// hands output gradients to the factor passes (`None`: `forward` ran, with
/// candle's ops).
pub(crate) fn recorded_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    forward: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>,
) -> Result<(Tensor, Option<usize>)> {
    match recorded_op(x) {
        Some((passes, index)) => {
            let y = cpu::recorded_linear(x, weight, bias, forward, passes, index)?;
            Ok((y, Some(index)))
        }
        None => Ok((forward(x, weight, bias)?, None)),
    }
}

/// A call of a scale layer `y = x̂ ⊙ w + b` (per channel: axis 1, or the
/// last axis with `features_last`) whose input `u` enters as `x̂ = u ⊙ m / w`
/// up to a shift: batch norms in evaluation (`u = x`, `m = w/σ`), layer and
/// RMS norms (`u = x̂` with its graph, `m = w`).
pub(crate) struct ScaleCall<'a> {
    /// `u`.
    pub input: &'a Tensor,
    /// `x̂` in the output's shape.
    pub x_hat: &'a Tensor,
    /// `m`, broadcasting to the output.
    pub multiplier: &'a Tensor,
    /// `w` `[C]`.
    pub weight: &'a Tensor,
    /// `b` `[C]`.
    pub bias: Option<&'a Tensor>,
    /// `y` computed by candle's ops, with their graph.
    pub output: &'a Tensor,
    pub features_last: bool,
}

/// The recorded forward of the scale layer `call` inside `record`, as for
/// [`recorded_linear`]: on the CPU kernels the output values with the backward
/// `g ↦ (g ⊙ m, Σ g ⊙ x̂, Σ g)`, whose factor passes skip the parameter parts;
/// elsewhere `call.output` itself (candle's backward) and `None`.
pub(crate) fn recorded_scale(call: ScaleCall) -> Result<(Tensor, Option<usize>)> {
    match recorded_op(call.input) {
        Some((passes, index)) => Ok((cpu::recorded_scale(call, passes, index)?, Some(index))),
        None => Ok((call.output.clone(), None)),
    }
}

/// The recorded forward of a convolution (`weight` `[O, I, k…]`, `bias`
/// `[O]`) on `x` `[N, I, H, W]` or `[N, I, L]`: the output `[N, O, …]`
/// computed from the patches, the patches `[N, I·k_h·k_w, P]` (values), and
/// the call's index as for [`recorded_linear`].
pub(crate) fn recorded_conv(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geo: ConvGeometry,
) -> Result<(Tensor, Tensor, Option<usize>)> {
    let conv = PatchConv::new(x, weight, geo)?;
    match recorded_op(x) {
        Some((passes, index)) => {
            let (y, a) = cpu::recorded_conv(conv, x, weight, bias, passes, index)?;
            Ok((y, a, Some(index)))
        }
        None => {
            // candle's backward through the gather: correct, if slower
            let (y, a) = conv.product(&conv.as_2d(x)?, &conv.as_2d(weight)?, bias)?;
            Ok((y, a.detach(), None))
        }
    }
}

/// The patches `[N, I·k_h·k_w, P]` (values) of `x` `[N, I, H, W]` or
/// `[N, I, L]` for a convolution with `weight` `[O, I/G, k…]` (any groups).
pub(crate) fn conv_patches(x: &Tensor, weight: &Tensor, geo: ConvGeometry) -> Result<Tensor> {
    let conv = PatchConv::new(x, weight, geo)?;
    conv.patches.gather(&conv.as_2d(&x.detach())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The path follows `VIVIT_KERNELS`: the CPU kernels for f32 and f64 on
    /// the CPU unless it is `generic`, candle's ops for other dtypes.
    #[test]
    fn the_environment_chooses_the_path() {
        let generic = std::env::var("VIVIT_KERNELS").is_ok_and(|v| v == "generic");
        assert_eq!(cpu_kernels(&Device::Cpu, DType::F32), !generic);
        assert_eq!(cpu_kernels(&Device::Cpu, DType::F64), !generic);
        assert!(!cpu_kernels(&Device::Cpu, DType::F16));
    }

    /// The generic max pooling equals the CPU kernel's, values and gradients,
    /// for overlapping windows with padding (inputs with ties included: both
    /// send a window's gradient to its first maximum).
    #[test]
    fn generic_max_pooling_equals_the_cpu_kernel() -> Result<()> {
        let dev = Device::Cpu;
        let values: Vec<f64> = (0..2 * 3 * 7 * 6).map(|i| ((i * 37) % 11) as f64).collect();
        let x = Var::from_vec(values, (2, 3, 7, 6), &dev)?;
        let windows = Windows {
            kernel: (3, 2),
            stride: (2, 1),
            padding: ((1, 1), (0, 1)),
        };
        let weights = Tensor::randn(0f64, 1., (2, 3, 4, 6), &dev)?;
        let run = |pool: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<(Vec<f64>, Vec<f64>)> {
            let y = pool(x.as_tensor())?;
            let grads = (&y * &weights)?.sum_all()?.backward()?;
            let dx = grads.get(&x).expect("x has a gradient");
            Ok((
                y.flatten_all()?.to_vec1::<f64>()?,
                dx.flatten_all()?.to_vec1::<f64>()?,
            ))
        };
        let cpu = run(&|x| cpu::max_pool2d(x, windows, false))?;
        assert_eq!(run(&|x| generic::max_pool2d(x, windows))?, cpu);
        assert_eq!(run(&|x| cpu::max_pool2d(x, windows, true))?, cpu);
        Ok(())
    }

    /// The generic patches equal the CPU im2col.
    #[test]
    fn generic_patches_equal_the_cpu_kernel() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 9, 8), &dev)?;
        let geo = ConvGeometry {
            padding: (1, 2),
            stride: (2, 1),
            dilation: (1, 2),
        };
        let patches = Patches::new((9, 8), (3, 2), geo, &x)?;
        let p = patches.output.0 * patches.output.1;
        let cpu = cpu::im2col(&patches, &x)?;
        let generic = generic::gather_patches(&x, &patches.index, geo.padding, p)?;
        assert_eq!(cpu.dims(), generic.dims());
        let diff = (cpu - generic)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
