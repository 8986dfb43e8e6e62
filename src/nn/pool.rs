//! Max pooling with a backward for overlapping windows.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};
use candle_core::{ToUsize2, WithDType};
use rayon::prelude::*;

use crate::cpu::contiguous;

/// The op's name, in errors too.
const OP: &str = "vivit-max-pool2d";

/// Max pooling of `x` `[N, C, H, W]` over `kernel` windows every `stride`
/// positions (no padding), `[N, C, (H − k_h)/s_h + 1, (W − k_w)/s_w + 1]`:
///
/// ```text
/// y[n, c, i, j] = max_{a < k_h, b < k_w} x[n, c, i·s_h + a, j·s_w + b],
/// ∂y/∂x: the gradient goes to the first maximum of each window (summed where
///        windows overlap).
/// ```
///
/// The forward equals [`Tensor::max_pool2d_with_stride`]. The backward is
/// right where candle 0.10.2's is not: candle's scales the gradient by
/// `1/(k_h·k_w)` and has none for overlapping windows (`kernel ≠ stride`).
/// This holds on the CPU in f32 and f64; elsewhere this is candle's op.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor, Var};
/// let x = Var::new(&[[[[1f32, 5., 2.], [0., 3., 4.], [6., 1., 0.]]]], &Device::Cpu)?;
/// let y = vivit::nn::max_pool2d(&x, 2, 1)?; // overlapping 2×2 windows
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5., 5., 6., 4.]);
/// let grad = y.sum_all()?.backward()?;
/// let dx = grad.get(&x).expect("x has a gradient").flatten_all()?.to_vec1::<f32>()?;
/// assert_eq!(dx, [0., 2., 0., 0., 0., 1., 1., 0., 0.]);
/// # Ok(())
/// # }
/// ```
pub fn max_pool2d<T: ToUsize2>(x: &Tensor, kernel: T, stride: T) -> Result<Tensor> {
    let pool = MaxPool {
        kernel: kernel.to_usize2(),
        stride: stride.to_usize2(),
    };
    let (_, _, h, w) = x.dims4()?;
    if h < pool.kernel.0 || w < pool.kernel.1 {
        candle_core::bail!(
            "max_pool2d: kernel {:?} is larger than the input {h}×{w}",
            pool.kernel
        );
    }
    if pool.stride.0 == 0 || pool.stride.1 == 0 {
        candle_core::bail!("max_pool2d: stride {:?} must be positive", pool.stride);
    }
    match (x.device(), x.dtype()) {
        (Device::Cpu, candle_core::DType::F32 | candle_core::DType::F64) => x.apply_op1(pool),
        _ => x.max_pool2d_with_stride(pool.kernel, pool.stride),
    }
}

/// The window geometry.
#[derive(Debug, Clone, Copy)]
struct MaxPool {
    kernel: (usize, usize),
    stride: (usize, usize),
}

impl MaxPool {
    fn output(&self, (h, w): (usize, usize)) -> (usize, usize) {
        (
            (h - self.kernel.0) / self.stride.0 + 1,
            (w - self.kernel.1) / self.stride.1 + 1,
        )
    }

    /// Flat index in the `h × w` plane of the first maximum of window `(i, j)`.
    fn argmax<T: WithDType>(&self, plane: &[T], w: usize, (i, j): (usize, usize)) -> usize {
        let mut best = (i * self.stride.0) * w + j * self.stride.1;
        for a in 0..self.kernel.0 {
            for b in 0..self.kernel.1 {
                let at = (i * self.stride.0 + a) * w + j * self.stride.1 + b;
                if plane[at] > plane[best] {
                    best = at;
                }
            }
        }
        best
    }

    fn forward<T: WithDType>(&self, x: &[T], (h, w): (usize, usize)) -> Vec<T> {
        let (ho, wo) = self.output((h, w));
        let mut y = vec![T::zero(); x.len() / (h * w) * ho * wo];
        y.par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .for_each(|(out, plane)| {
                for i in 0..ho {
                    for j in 0..wo {
                        out[i * wo + j] = plane[self.argmax(plane, w, (i, j))];
                    }
                }
            });
        y
    }

    fn backward<T: WithDType>(&self, x: &[T], grad: &[T], (h, w): (usize, usize)) -> Vec<T> {
        let (ho, wo) = self.output((h, w));
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(grad.par_chunks(ho * wo)))
            .for_each(|(out, (plane, g))| {
                for i in 0..ho {
                    for j in 0..wo {
                        out[self.argmax(plane, w, (i, j))] += g[i * wo + j];
                    }
                }
            });
        dx
    }
}

fn plane(layout: &Layout) -> Result<(usize, usize)> {
    let (_, _, h, w) = layout.shape().dims4()?;
    Ok((h, w))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let hw = plane(layout)?;
        let y = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(self.forward(contiguous(v, layout, OP)?, hw)),
            CpuStorage::F64(v) => CpuStorage::F64(self.forward(contiguous(v, layout, OP)?, hw)),
            _ => candle_core::bail!("vivit max_pool2d: f32 or f64 only"),
        };
        let (n, c, _, _) = layout.shape().dims4()?;
        let (ho, wo) = self.output(hw);
        Ok((y, Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad, &MaxPoolBackward(*self))?,
        ))
    }
}

/// `(x, ∂L/∂y) ↦ ∂L/∂x` of [`MaxPool`].
struct MaxPoolBackward(MaxPool);

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "vivit-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let hw = plane(x_layout)?;
        let dx = match (x, grad) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(self.0.backward(
                contiguous(x, x_layout, OP)?,
                contiguous(g, grad_layout, OP)?,
                hw,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(self.0.backward(
                contiguous(x, x_layout, OP)?,
                contiguous(g, grad_layout, OP)?,
                hw,
            )),
            _ => candle_core::bail!("vivit max_pool2d: f32 or f64 only"),
        };
        Ok((dx, x_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    /// The forward equals candle's; the backward equals the central difference
    /// of the (piecewise linear) pooled sum along a random direction. (Candle's
    /// own backward is no reference: it scales the gradient by `1/(k_h·k_w)`.)
    #[test]
    fn max_pool2d_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let cases = [(2, 2, 8), (2, 2, 9), (3, 2, 9), (3, 1, 8), (2, 3, 9)];
        for (kernel, stride, h) in cases {
            let x = Var::randn(0f64, 1., (2, 3, h, 8), &dev)?;
            let y = max_pool2d(&x, kernel, stride)?;
            let want = x.max_pool2d_with_stride(kernel, stride)?;
            let diff = (&y - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert_eq!(diff, 0.0, "forward, kernel {kernel} stride {stride}");
            let weights = Tensor::randn(0f64, 1., y.shape(), &dev)?;
            let grads = (&y * &weights)?.sum_all()?.backward()?;
            let dx = grads.get(&x).expect("x has a gradient");
            // random inputs have distinct maxima: the pooled sum is linear near
            // x, so the central difference is exact up to round-off,
            // O(ε·|sum|/h) ≈ 1e-8 here
            let v = Tensor::randn(0f64, 1., x.shape(), &dev)?;
            let h = 1e-7;
            let pooled = |x: &Tensor| -> Result<f64> {
                (x.max_pool2d_with_stride(kernel, stride)? * &weights)?
                    .sum_all()?
                    .to_scalar::<f64>()
            };
            let numeric = (pooled(&(x.as_tensor() + (&v * h)?)?)?
                - pooled(&(x.as_tensor() - (&v * h)?)?)?)
                / (2.0 * h);
            let analytic = (dx * &v)?.sum_all()?.to_scalar::<f64>()?;
            assert!(
                (numeric - analytic).abs() <= 1e-6 * analytic.abs().max(1.0),
                "kernel {kernel} stride {stride} height {h}: {analytic} vs {numeric}"
            );
            assert_eq!(dx.dtype(), DType::F64);
        }
        Ok(())
    }
}
