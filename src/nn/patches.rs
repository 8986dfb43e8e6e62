//! Input patches of a convolution (im2col) and their adjoint (col2im).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu::contiguous;

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
    kernel: (usize, usize),
    geo: ConvGeometry,
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
            kernel,
            geo,
            output: (h_out, w_out),
        })
    }

    /// The patches `[N, I·k_h·k_w, P]` of `x` `[N, I, H, W]`.
    pub fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let (n, i, _, _) = x.dims4()?;
        let (ph, pw) = self.geo.padding;
        let p = self.output.0 * self.output.1;
        x.pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            .flatten_from(2)?
            .index_select(&self.index, 2)?
            .reshape((n, i * self.index.dim(0)? / p, p))
    }

    /// The adjoint of [`Self::gather`] (col2im) on CPU columns laid out
    /// `[I·k_h·k_w, N·P]`, entry `(i, a, b; n, p)` = patch entry of sample `n`
    /// at output position `p`: every entry is added back where it came from,
    ///
    /// ```text
    /// x[n, i, h_p·s_h + a·d_h − pad_h, w_p·s_w + b·d_w − pad_w] += cols[(i, a, b), n·P + p],
    /// ```
    ///
    /// giving `[N, I, H, W]`, in parallel over `(n, i)`.
    pub fn scatter(&self, cols: &Tensor, samples: usize) -> Result<Tensor> {
        cols.apply_op1_no_bwd(&Col2Im {
            patches: self,
            samples,
        })
    }
}

/// [`Patches::scatter`] as a CPU op.
struct Col2Im<'p> {
    patches: &'p Patches,
    samples: usize,
}

impl Col2Im<'_> {
    fn run<T: WithDType>(&self, cols: &[T]) -> Vec<T> {
        let p = self.patches;
        let ((h, w), (kh, kw)) = (p.input, p.kernel);
        let (h_out, w_out) = p.output;
        let (ph, pw) = p.geo.padding;
        let (sh, sw) = p.geo.stride;
        let (dh, dw) = p.geo.dilation;
        let positions = h_out * w_out;
        let row = self.samples * positions;
        let channels = cols.len() / (kh * kw * row);
        let mut out = vec![T::zero(); self.samples * channels * h * w];
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(ni, image)| {
                // chunk `ni` is sample `n`, channel `i` of the [N, I, H, W] output;
                // compiled for the CPU's vector extensions (AVX2 where there is)
                pulp::Arch::new().dispatch(|| {
                    let (n, i) = (ni / channels, ni % channels);
                    for a in 0..kh {
                        for b in 0..kw {
                            let start = ((i * kh + a) * kw + b) * row + n * positions;
                            let src = &cols[start..start + positions];
                            // output columns ow whose x = ow·s_w + b·d_w − pad_w is in [0, W)
                            let ow_lo = (pw.saturating_sub(b * dw)).div_ceil(sw);
                            let ow_hi = (w + pw).saturating_sub(b * dw).div_ceil(sw).min(w_out);
                            if ow_lo >= ow_hi {
                                continue;
                            }
                            let x_lo = ow_lo * sw + b * dw - pw;
                            for oh in 0..h_out {
                                let Some(y) = (oh * sh + a * dh).checked_sub(ph).filter(|&y| y < h)
                                else {
                                    continue;
                                };
                                let src = &src[oh * w_out + ow_lo..oh * w_out + ow_hi];
                                let dst = &mut image[y * w + x_lo..];
                                if sw == 1 {
                                    for (d, &v) in dst.iter_mut().zip(src) {
                                        *d += v;
                                    }
                                } else {
                                    for (d, &v) in dst.iter_mut().step_by(sw).zip(src) {
                                        *d += v;
                                    }
                                }
                            }
                        }
                    }
                })
            });
        out
    }
}

impl CustomOp1 for Col2Im<'_> {
    fn name(&self) -> &'static str {
        "vivit-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(self.run(contiguous(v, layout, op)?)),
            CpuStorage::F64(v) => CpuStorage::F64(self.run(contiguous(v, layout, op)?)),
            _ => candle_core::bail!("vivit col2im: f32 or f64 only"),
        };
        let (kh, kw) = self.patches.kernel;
        let (h_out, w_out) = self.patches.output;
        let channels = layout.shape().elem_count() / (kh * kw * self.samples * h_out * w_out);
        let (h, w) = self.patches.input;
        Ok((out, Shape::from((self.samples, channels, h, w))))
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
            // [N, I·k·k, P] → [I·k·k, N·P]
            let cols = g.transpose(0, 1)?.contiguous()?.reshape((g.dim(1)?, ()))?;
            let rhs = (x * patches.scatter(&cols, 2)?)?
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
