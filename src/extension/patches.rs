//! Input patches of a convolution (im2col), for its per-sample weight algebra.

use candle_core::{Result, Tensor};

/// Padding, stride and dilation of a convolution, as `(height, width)` pairs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub padding: (usize, usize),
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
}

/// The patches `[N, P, I·k_h·k_w]` that a convolution with kernel `(k_h, k_w)`
/// sees in `x` `[N, I, H, W]`: row `p` of sample `n` is the receptive field of
/// output position `p = h·W_out + w`, flattened in the weight's `(I, k_h, k_w)`
/// order, so that the output is `y[n, :, p] = W_flat · patches[n, p]`.
///
/// Built from zero-copy strided views (`unfold`); one copy at the end.
pub(crate) fn patches(x: &Tensor, kernel: (usize, usize), geo: ConvGeometry) -> Result<Tensor> {
    let (n, i, _, _) = x.dims4()?;
    let (kh, kw) = kernel;
    let (ph, pw) = geo.padding;
    let (sh, sw) = geo.stride;
    let (dh, dw) = geo.dilation;
    let padded = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
    // [N, I, H_out, W_out, extent_h, extent_w] with extent = d·(k − 1) + 1
    let windows = padded
        .unfold(2, dh * (kh - 1) + 1, sh)?
        .unfold(3, dw * (kw - 1) + 1, sw)?;
    // keep every d-th element of each window: [N, I, H_out, W_out, k_h, k_w, 1, 1]
    let taps = windows.unfold(4, 1, dh)?.unfold(5, 1, dw)?;
    let (h_out, w_out) = (taps.dim(2)?, taps.dim(3)?);
    taps.squeeze(7)?
        .squeeze(6)?
        .permute((0, 2, 3, 1, 4, 5))?
        .contiguous()?
        .reshape((n, h_out * w_out, i * kh * kw))
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
            let a = patches(&x, (k, k), geo)?; // [N, P, I·k·k]
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
