//! The patches of a convolution (im2col), and the convolution through them.

use candle_core::{Result, Shape, Tensor};

use super::{cpu, cpu_kernels, generic, matmul};

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
/// transposed copy); [`Patches::transpose_product`] applies its adjoint, the
/// scatter-add.
#[derive(Debug)]
pub(crate) struct Patches {
    pub(super) index: Tensor,
    pub(super) input: (usize, usize),
    pub(super) kernel: (usize, usize),
    pub(super) geo: ConvGeometry,
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
        Ok(Self {
            index: crate::linalg::host::indices_to_device(index, x.device())?,
            input,
            kernel,
            geo,
            output: (h_out, w_out),
        })
    }

    /// The patches `[N, I·k_h·k_w, P]` of `x` `[N, I, H, W]`: vivit's
    /// parallel im2col for an `x` without graph on the CPU kernels; else
    /// candle's gather (with its backward).
    pub fn gather(&self, x: &Tensor) -> Result<Tensor> {
        if cpu_kernels(x.device(), x.dtype()) && !x.track_op() {
            return cpu::im2col(self, x);
        }
        let p = self.output.0 * self.output.1;
        generic::gather_patches(x, &self.index, self.geo.padding, p)
    }
}

/// A convolution `y[n, :, p] = W_flat · patches[n, :, p] + b` through its
/// patches (a 1-d one as 2-d with a height of one).
pub(crate) struct PatchConv {
    pub patches: Patches,
    pub one_d: bool,
    /// The output shape `[N, O, …]`.
    pub shape: Shape,
    /// `O` and `I·k_h·k_w`.
    pub rows: usize,
    pub cols: usize,
}

impl PatchConv {
    /// The convolution of `weight` `[O, I, k…]` on `x` `[N, I, H, W]` or `[N, I, L]`.
    pub fn new(x: &Tensor, weight: &Tensor, geo: ConvGeometry) -> Result<Self> {
        let one_d = weight.rank() == 3;
        let (x4, w4) = if one_d {
            (x.unsqueeze(2)?, weight.unsqueeze(2)?)
        } else {
            (x.clone(), weight.clone())
        };
        let (n, i, h, w) = x4.dims4()?;
        let (o, _, kh, kw) = w4.dims4()?;
        let patches = Patches::new((h, w), (kh, kw), geo, x)?;
        let (h_out, w_out) = patches.output;
        let shape = Shape::from(if one_d {
            vec![n, o, w_out]
        } else {
            vec![n, o, h_out, w_out]
        });
        Ok(Self {
            patches,
            one_d,
            shape,
            rows: o,
            cols: i * kh * kw,
        })
    }

    /// `t` with the height axis a 1-d convolution lacks.
    pub fn as_2d(&self, t: &Tensor) -> Result<Tensor> {
        if self.one_d {
            t.unsqueeze(2)
        } else {
            Ok(t.clone())
        }
    }

    /// The output `W_flat · patches(x4) + b` and the patches, for `x4`
    /// `[N, I, H, W]` and `w4` `[O, I, k_h, k_w]`.
    pub fn product(
        &self,
        x4: &Tensor,
        w4: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let a = self.patches.gather(x4)?;
        let y = matmul(&w4.reshape((1, self.rows, self.cols))?, &a)?.reshape(&self.shape)?;
        let y = match bias {
            Some(b) => {
                let mut shape = vec![1; y.rank()];
                shape[1] = b.elem_count();
                y.broadcast_add(&b.reshape(shape)?)?
            }
            None => y,
        };
        Ok((y, a))
    }
}
