//! Max pooling with a backward for overlapping windows.

use candle_core::{Result, Tensor, ToUsize2};

use crate::kernels::{self, Windows};
use crate::record;

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
/// This holds on every device and dtype.
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
    max_pool2d_padded(x, kernel, stride, ((0, 0), (0, 0)))
}

/// [`max_pool2d`] over `x` padded with `−∞`: `padding` is
/// `((top, bottom), (left, right))`, each smaller than the kernel along its
/// axis, so that every window holds an entry of `x`. The output is
/// `[N, C, (H + top + bottom − k_h)/s_h + 1, (W + left + right − k_w)/s_w + 1]`,
///
/// ```text
/// y[n, c, i, j] = max { x[n, c, i·s_h + a − top, j·s_w + b − left] : inside x },
/// ```
///
/// PyTorch's `MaxPool2d(padding=p)` is `((p, p), (p, p))`; TensorFlow's
/// `"same"` pooling pads the remainder at the end. After a ReLU (`x ≥ 0`) this
/// equals zero padding followed by [`max_pool2d`], without the two
/// concatenations of [`Tensor::pad_with_zeros`] in the forward and in every
/// backward pass.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1f32, 5., 2.], [0., 3., 4.], [6., 1., 0.]]]], &Device::Cpu)?;
/// // 2×2 windows every 2 positions, one row and column of padding at the end
/// let y = vivit::nn::max_pool2d_padded(&x, 2, 2, ((0, 1), (0, 1)))?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5., 4., 6., 0.]);
/// # Ok(())
/// # }
/// ```
pub fn max_pool2d_padded<T: ToUsize2>(
    x: &Tensor,
    kernel: T,
    stride: T,
    padding: ((usize, usize), (usize, usize)),
) -> Result<Tensor> {
    let windows = Windows {
        kernel: kernel.to_usize2(),
        stride: stride.to_usize2(),
        padding,
    };
    let (_, _, h, w) = x.dims4()?;
    let ((top, bottom), (left, right)) = padding;
    let (kh, kw) = windows.kernel;
    if h + top + bottom < kh || w + left + right < kw {
        candle_core::bail!(
            "max_pool2d: kernel {:?} is larger than the padded input {}×{}",
            windows.kernel,
            h + top + bottom,
            w + left + right
        );
    }
    if top.max(bottom) >= kh || left.max(right) >= kw {
        candle_core::bail!(
            "max_pool2d: padding {padding:?} must be smaller than the kernel {:?}",
            windows.kernel
        );
    }
    if windows.stride.0 == 0 || windows.stride.1 == 0 {
        candle_core::bail!("max_pool2d: stride {:?} must be positive", windows.stride);
    }
    kernels::max_pool2d(x, windows, record::recording())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// `x` `[N, C, H, W]` padded with `−∞` by `((top, bottom), (left, right))`.
    fn pad_neg_inf(
        x: &Tensor,
        ((t, b), (l, r)): ((usize, usize), (usize, usize)),
    ) -> Result<Tensor> {
        let pad = |x: &Tensor, dim: usize, before: usize, after: usize| -> Result<Tensor> {
            let mut dims = x.dims().to_vec();
            dims[dim] = before;
            let before = Tensor::full(f64::NEG_INFINITY, dims.as_slice(), x.device())?;
            dims[dim] = after;
            let after = Tensor::full(f64::NEG_INFINITY, dims.as_slice(), x.device())?;
            Tensor::cat(&[&before, x, &after], dim)
        };
        pad(&pad(x, 2, t, b)?, 3, l, r)
    }

    /// A variable of shape `dims` whose values are distinct multiples of 0.01
    /// around 0, in an order shuffled with a fixed seed (no near-ties that a
    /// central difference could cross).
    fn distinct_values(dims: (usize, usize, usize, usize), dev: &Device) -> Result<Var> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let len = dims.0 * dims.1 * dims.2 * dims.3;
        let mut values: Vec<f64> = (0..len)
            .map(|i| (i as f64 - len as f64 / 2.0) * 0.01)
            .collect();
        values.shuffle(&mut rand::rngs::StdRng::seed_from_u64(len as u64));
        Var::from_vec(values, dims, dev)
    }

    /// The forward equals candle's pooling of the `−∞`-padded input; the
    /// backward equals the central difference of the (piecewise linear)
    /// pooled sum along a random direction (outside `record` from the input,
    /// inside from the argmax kept by the forward). (Candle's own backward is
    /// no reference: it scales the gradient by `1/(k_h·k_w)`.)
    #[test]
    fn max_pool2d_forward_and_backward() -> crate::Result<()> {
        let dev = Device::Cpu;
        let none = ((0, 0), (0, 0));
        let cases = [
            (2, 2, 8, none),
            (2, 2, 9, none),
            (3, 2, 9, none),
            (3, 1, 8, none),
            (2, 3, 9, none),
            (3, 2, 8, ((0, 1), (0, 1))),
            (3, 2, 9, ((1, 1), (2, 0))),
            (2, 1, 7, ((1, 0), (0, 1))),
        ];
        for ((kernel, stride, h, padding), recorded) in
            cases.into_iter().flat_map(|c| [(c, false), (c, true)])
        {
            let x = distinct_values((2, 3, h, 8), &dev)?;
            let pool = || max_pool2d_padded(&x, kernel, stride, padding);
            let y = if recorded {
                crate::record(pool)?.loss().clone()
            } else {
                pool()?
            };
            let pooled =
                |x: &Tensor| pad_neg_inf(x, padding)?.max_pool2d_with_stride(kernel, stride);
            let diff = (&y - pooled(&x)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert_eq!(
                diff, 0.0,
                "forward, kernel {kernel} stride {stride} padding {padding:?}"
            );
            let weights = Tensor::randn(0f64, 1., y.shape(), &dev)?;
            let grads = (&y * &weights)?.sum_all()?.backward()?;
            let dx = grads.get(&x).expect("x has a gradient");
            // inputs at least 0.01 apart keep their order along steps of
            // 1e-7·v: the pooled sum is linear there, so the central difference
            // is exact up to round-off, O(ε·|sum|/step) ≈ 1e-8 here
            let v = Tensor::randn(0f64, 1., x.shape(), &dev)?;
            let step = 1e-7;
            let sum = |x: &Tensor| -> Result<f64> {
                (pooled(x)? * &weights)?.sum_all()?.to_scalar::<f64>()
            };
            let numeric = (sum(&(x.as_tensor() + (&v * step)?)?)?
                - sum(&(x.as_tensor() - (&v * step)?)?)?)
                / (2.0 * step);
            let analytic = (dx * &v)?.sum_all()?.to_scalar::<f64>()?;
            assert!(
                (numeric - analytic).abs() <= 1e-6 * analytic.abs().max(1.0),
                "kernel {kernel} stride {stride} padding {padding:?} height {h}: {analytic} vs {numeric}"
            );
            assert_eq!(dx.dtype(), DType::F64);
        }
        Ok(())
    }

    /// Padding as large as the kernel (a window of padding only) is refused;
    /// candle's pooling (here for f16) pads the same way.
    #[test]
    fn padding_smaller_than_the_kernel() -> Result<()> {
        let x = Tensor::randn(0f32, 1., (2, 3, 7, 6), &Device::Cpu)?;
        assert!(max_pool2d_padded(&x, 2, 2, ((0, 2), (0, 0))).is_err());
        let padding = ((1, 1), (0, 2));
        let y = max_pool2d_padded(&x, 3, 2, padding)?;
        let y16 = max_pool2d_padded(&x.to_dtype(DType::F16)?, 3, 2, padding)?;
        assert_eq!(y16.dims(), y.dims());
        let diff = (y16.to_dtype(DType::F32)? - y.to_dtype(DType::F16)?.to_dtype(DType::F32)?)?;
        assert_eq!(diff.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }
}
