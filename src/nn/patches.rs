//! Input patches of a convolution (im2col), for its per-sample weight algebra.

use candle_core::{Result, Tensor};

/// Padding, stride and dilation of a convolution, as `(height, width)` pairs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub padding: (usize, usize),
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
}

/// The patches `[N, I·k_h·k_w, P]` that a convolution with kernel `(k_h, k_w)`
/// sees in `x` `[N, I, H, W]`: column `p` of sample `n` is the receptive field
/// of output position `p = h·W_out + w`, flattened in the weight's
/// `(I, k_h, k_w)` order, so that `y[n, :, p] = W_flat · patches[n, :, p]`.
///
/// A gather (`index_select`) from the padded input in `(I, k_h, k_w, P)`
/// order, so it is differentiable (its backward is the scatter-add, col2im)
/// and needs no transposed copy either way.
pub(crate) fn patches(x: &Tensor, kernel: (usize, usize), geo: ConvGeometry) -> Result<Tensor> {
    let (n, i, h, w) = x.dims4()?;
    let (kh, kw) = kernel;
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
    let p = h_out * w_out;
    let mut index = Vec::with_capacity(kh * kw * p);
    for a in 0..kh {
        for b in 0..kw {
            for oh in 0..h_out {
                for ow in 0..w_out {
                    index.push(((oh * sh + a * dh) * wp + ow * sw + b * dw) as u32);
                }
            }
        }
    }
    let index = Tensor::from_vec(index, kh * kw * p, x.device())?;
    x.pad_with_zeros(2, ph, ph)?
        .pad_with_zeros(3, pw, pw)?
        .flatten_from(2)?
        .index_select(&index, 2)? // [N, I, k_h·k_w·P]
        .reshape((n, i * kh * kw, p))
}

/// The convolution `y = W ⋆ x + b` as `W_flat · patches(x)`: `[N, O, H_out, W_out]`,
/// and the patches `[N, I·k_h·k_w, P]` it used.
pub(crate) fn conv_by_patches(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geo: ConvGeometry,
) -> Result<(Tensor, Tensor)> {
    let (o, i, kh, kw) = weight.dims4()?;
    let (n, _, h, _) = x.dims4()?;
    let a = patches(x, (kh, kw), geo)?;
    let p = a.dim(2)?;
    let h_out = (h + 2 * geo.padding.0 - geo.dilation.0 * (kh - 1) - 1) / geo.stride.0 + 1;
    let y = weight
        .reshape((1, o, i * kh * kw))?
        .broadcast_matmul(&a)?
        .reshape((n, o, h_out, p / h_out))?;
    let y = match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
        None => y,
    };
    Ok((y, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// `conv2d(x, W) = W_flat · patches(x)` for every geometry, against candle's conv.
    #[test]
    fn patches_reproduce_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (k, p, s, d) in [
            (3, 1, 1, 1),
            (3, 1, 2, 1),
            (3, 2, 1, 2),
            (2, 0, 2, 1),
            (3, 0, 1, 3),
            (1, 0, 1, 1),
        ] {
            let x = Tensor::randn(0f64, 1., (2, 3, 9, 8), &dev)?;
            let w = Tensor::randn(0f64, 1., (4, 3, k, k), &dev)?;
            let y = x.conv2d(&w, p, s, d, 1)?;
            let geo = ConvGeometry {
                padding: (p, p),
                stride: (s, s),
                dilation: (d, d),
            };
            let a = patches(&x, (k, k), geo)?.transpose(1, 2)?; // [N, P, I·k·k]
            let (y3, _) = conv_by_patches(&x, &w, None, geo)?;
            let err3 = (&y - y3)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            assert!(
                err3 < 1e-12,
                "conv_by_patches k {k} p {p} s {s} d {d}: {err3}"
            );
            let y2 = a.broadcast_matmul(&w.reshape((4, 3 * k * k))?.t()?)?; // [N, P, O]
            let y2 = y2.transpose(1, 2)?.reshape(y.shape())?;
            let err = (y - y2)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            assert!(err < 1e-12, "k {k} p {p} s {s} d {d}: {err}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod gradient_tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The backward of `conv_by_patches` w.r.t. its input equals candle's
    /// conv2d backward (which is right for these square, evenly strided shapes).
    #[test]
    fn input_gradient_equals_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (k, p, s, d) in [(3, 1, 1, 1), (3, 1, 2, 1), (3, 2, 1, 2), (2, 0, 2, 1)] {
            let x = Var::randn(0f64, 1., (2, 3, 8, 8), &dev)?;
            let w = Tensor::randn(0f64, 1., (4, 3, k, k), &dev)?;
            let geo = ConvGeometry {
                padding: (p, p),
                stride: (s, s),
                dilation: (d, d),
            };
            let (y, _) = conv_by_patches(&x, &w, None, geo)?;
            let g = Tensor::randn(0f64, 1., y.shape(), &dev)?;
            let ours = (y * &g)?
                .sum_all()?
                .backward()?
                .get(&x)
                .expect("grad")
                .clone();
            let theirs = (x.conv2d(&w, p, s, d, 1)? * &g)?
                .sum_all()?
                .backward()?
                .get(&x)
                .expect("grad")
                .clone();
            let err = (ours - theirs)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            assert!(err < 1e-12, "k {k} p {p} s {s} d {d}: {err}");
        }
        Ok(())
    }
}
