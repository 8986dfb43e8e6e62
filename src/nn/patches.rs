//! Input patches of a convolution (im2col) and their adjoint (col2im).

use candle_core::{Result, Tensor};

/// Padding, stride and dilation of a convolution, as `(height, width)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub padding: (usize, usize),
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
}

/// Where the patches of a convolution come from in its padded input.
///
/// The patches `[N, I·k_h·k_w, P]` of `x` `[N, I, H, W]` hold in column `p` the
/// receptive field of output position `p = h·W_out + w`, flattened in the
/// weight's `(I, k_h, k_w)` order, so that `y[n, :, p] = W_flat · patches[n, :, p]`.
/// They are a gather from the padded input in `(I, k_h, k_w, P)` order (no
/// transposed copy); [`Patches::scatter`] is its adjoint, the scatter-add.
#[derive(Debug)]
pub(crate) struct Patches {
    index: Tensor,
    input: (usize, usize),
    padding: (usize, usize),
    /// Output height and width.
    pub output: (usize, usize),
}

impl Patches {
    /// The patch positions of a `kernel` over `[·, ·, H, W]` inputs.
    pub fn new(
        input: (usize, usize),
        kernel: (usize, usize),
        geo: ConvGeometry,
        x: &Tensor,
    ) -> Result<Self> {
        let ((h, w), (kh, kw)) = (input, kernel);
        let (ph, pw) = geo.padding;
        let (sh, sw) = geo.stride;
        let (dh, dw) = geo.dilation;
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let (extent_h, extent_w) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
        if hp < extent_h || wp < extent_w {
            candle_core::bail!(
                "kernel {kernel:?} with dilation {:?} does not fit input {h}×{w}",
                geo.dilation
            );
        }
        let (h_out, w_out) = ((hp - extent_h) / sh + 1, (wp - extent_w) / sw + 1);
        let mut index = Vec::with_capacity(kh * kw * h_out * w_out);
        for a in 0..kh {
            for b in 0..kw {
                for oh in 0..h_out {
                    for ow in 0..w_out {
                        index.push(((oh * sh + a * dh) * wp + ow * sw + b * dw) as u32);
                    }
                }
            }
        }
        let len = index.len();
        Ok(Self {
            index: Tensor::from_vec(index, len, x.device())?,
            input,
            padding: geo.padding,
            output: (h_out, w_out),
        })
    }

    /// The patches `[N, I·k_h·k_w, P]` of `x` `[N, I, H, W]`.
    pub fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let (n, i, _, _) = x.dims4()?;
        let (ph, pw) = self.padding;
        let p = self.output.0 * self.output.1;
        x.pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            .flatten_from(2)?
            .index_select(&self.index, 2)?
            .reshape((n, i * self.index.dim(0)? / p, p))
    }

    /// The adjoint of [`Self::gather`]: `[N, I·k_h·k_w, P]` → `[N, I, H, W]`,
    /// every patch entry added back where it came from (col2im).
    pub fn scatter(&self, patches: &Tensor, channels: usize) -> Result<Tensor> {
        let n = patches.dim(0)?;
        let ((h, w), (ph, pw)) = (self.input, self.padding);
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let flat = patches.reshape((n, channels, self.index.dim(0)?))?;
        Tensor::zeros((n, channels, hp * wp), patches.dtype(), patches.device())?
            .index_add(&self.index, &flat, 2)?
            .reshape((n, channels, hp, wp))?
            .narrow(2, ph, h)?
            .narrow(3, pw, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        (a - b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()
    }

    const GEOMETRIES: [(usize, usize, usize, usize); 6] = [
        (3, 1, 1, 1),
        (3, 1, 2, 1),
        (3, 2, 1, 2),
        (2, 0, 2, 1),
        (3, 0, 1, 3),
        (1, 0, 1, 1),
    ];

    fn geometry(p: usize, s: usize, d: usize) -> ConvGeometry {
        ConvGeometry {
            padding: (p, p),
            stride: (s, s),
            dilation: (d, d),
        }
    }

    /// `conv2d(x, W) = W_flat · patches(x)` for every geometry, against candle's conv.
    #[test]
    fn patches_reproduce_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (k, p, s, d) in GEOMETRIES {
            let x = Tensor::randn(0f64, 1., (2, 3, 9, 8), &dev)?;
            let w = Tensor::randn(0f64, 1., (4, 3, k, k), &dev)?;
            let y = x.conv2d(&w, p, s, d, 1)?;
            let patches = Patches::new((9, 8), (k, k), geometry(p, s, d), &x)?;
            let a = patches.gather(&x)?;
            let y2 = w
                .reshape((1, 4, 3 * k * k))?
                .broadcast_matmul(&a)?
                .reshape(y.shape())?;
            assert!(max_diff(&y, &y2)? < 1e-12, "k {k} p {p} s {s} d {d}");
        }
        Ok(())
    }

    /// `⟨gather(x), g⟩ = ⟨x, scatter(g)⟩`: scatter is gather's adjoint.
    #[test]
    fn scatter_is_the_adjoint_of_gather() -> Result<()> {
        let dev = Device::Cpu;
        for (k, p, s, d) in GEOMETRIES {
            let x = Tensor::randn(0f64, 1., (2, 3, 9, 8), &dev)?;
            let patches = Patches::new((9, 8), (k, k), geometry(p, s, d), &x)?;
            let a = patches.gather(&x)?;
            let g = Tensor::randn(0f64, 1., a.shape(), &dev)?;
            let lhs = (a * &g)?.sum_all()?.to_scalar::<f64>()?;
            let rhs = (x * patches.scatter(&g, 3)?)?
                .sum_all()?
                .to_scalar::<f64>()?;
            assert!(
                (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
                "k {k} p {p} s {s} d {d}: {lhs} vs {rhs}"
            );
        }
        Ok(())
    }
}
