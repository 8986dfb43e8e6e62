//! Input patches of a convolution on the CPU (im2col), and the convolution's
//! input-Jacobian transpose through their adjoint (col2im), or, where the
//! output gradient is mostly zero, scattered from its nonzero entries
//! ([`scatter`]).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use faer::linalg::matmul::matmul as gemm;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::slices::{contiguous, zeroed};
use super::Lane;
use crate::kernels::Patches;

mod scatter;

use scatter::{ChannelsLast, Scatter};

/// [`Patches::gather`] of an `x` without graph, plane by plane in parallel.
pub(crate) fn im2col(patches: &Patches, x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Im2Col { patches })
}

impl Patches {
    /// Visits the rows of the patches of one `[H, W]` input plane: for each
    /// kernel offset `(a, b)` (row `a·k_w + b` of the plane's `[k_h·k_w, P]`
    /// patches) and output row `oh` whose input row `y` lies inside the
    /// input, `visit(row, oh, y, ow_lo..ow_hi, x_lo)` with the output columns
    /// whose input column `x = ow·s_w + b·d_w − pad_w` lies inside, the first
    /// being `x_lo` (entries outside are zero padding).
    fn rows(&self, mut visit: impl FnMut(usize, usize, usize, std::ops::Range<usize>, usize)) {
        let ((h, w), (kh, kw)) = (self.input, self.kernel);
        let (h_out, w_out) = self.output;
        let (ph, pw) = self.geo.padding;
        let (sh, sw) = self.geo.stride;
        let (dh, dw) = self.geo.dilation;
        for a in 0..kh {
            for b in 0..kw {
                let ow_lo = (pw.saturating_sub(b * dw)).div_ceil(sw);
                let ow_hi = (w + pw).saturating_sub(b * dw).div_ceil(sw).min(w_out);
                if ow_lo >= ow_hi {
                    continue;
                }
                let x_lo = ow_lo * sw + b * dw - pw;
                for oh in 0..h_out {
                    if let Some(y) = (oh * sh + a * dh).checked_sub(ph).filter(|&y| y < h) {
                        visit(a * kw + b, oh, y, ow_lo..ow_hi, x_lo);
                    }
                }
            }
        }
    }

    /// The input-Jacobian transpose of the convolution `y = W_flat · patches(x)`
    /// on the CPU: for `weight` `[O, I·k_h·k_w]` (row-major) and `grad`
    /// `[N, O, P]`, the patches' gradient `W_flatᵀ g_n` `[I·k_h·k_w, P]` of each
    /// sample, added back where [`Self::gather`] took each entry from (col2im),
    ///
    /// ```text
    /// x[n, i, h_p·s_h + a·d_h − pad_h, w_p·s_w + b·d_w − pad_w] += (W_flatᵀ g_n)[(i, a, b), p],
    /// ```
    ///
    /// giving `[N, I, H, W]`. Sample by sample in parallel, each product into a
    /// cache-sized buffer of the thread, so the `[I·k_h·k_w, N·P]` patch
    /// gradient is never formed; a sample whose gradient is mostly zero
    /// (behind a ReLU and a max pooling) is instead scattered from its
    /// nonzero entries ([`scatter`]).
    pub fn transpose_product(&self, weight: &Tensor, grad: &Tensor) -> Result<Tensor> {
        weight
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &Col2Im { patches: self })
    }
}

/// [`Patches::gather`] as a CPU op: plane by plane in parallel.
struct Im2Col<'p> {
    patches: &'p Patches,
}

impl Im2Col<'_> {
    fn run<T: WithDType>(&self, x: &[T]) -> Vec<T> {
        let p = self.patches;
        let ((h, w), (kh, kw)) = (p.input, p.kernel);
        let (h_out, w_out) = p.output;
        let (block, sw) = (kh * kw * h_out * w_out, p.geo.stride.1);
        let mut out = zeroed::<T>(x.len() / (h * w).max(1) * block);
        out.par_chunks_mut(block)
            .zip(x.par_chunks(h * w))
            .for_each(|(cols, plane)| {
                p.rows(|row, oh, y, ow, x_lo| {
                    let start = (row * h_out + oh) * w_out;
                    let dst = &mut cols[start + ow.start..start + ow.end];
                    let src = &plane[y * w + x_lo..];
                    if sw == 1 {
                        dst.copy_from_slice(&src[..dst.len()]);
                    } else {
                        for (d, &v) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                })
            });
        out
    }
}

impl CustomOp1 for Im2Col<'_> {
    fn name(&self) -> &'static str {
        "vivit-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (n, i, h, w) = layout.shape().dims4()?;
        if (h, w) != self.patches.input {
            candle_core::bail!("{op}: input {:?} does not fit the patches", layout.shape());
        }
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(self.run(contiguous(v, layout, op)?)),
            CpuStorage::F64(v) => CpuStorage::F64(self.run(contiguous(v, layout, op)?)),
            _ => candle_core::bail!("{op}: f32 or f64 only"),
        };
        let (kh, kw) = self.patches.kernel;
        let p = self.patches.output.0 * self.patches.output.1;
        Ok((out, Shape::from((n, i * kh * kw, p))))
    }
}

/// [`Patches::transpose_product`] as a CPU op.
struct Col2Im<'p> {
    patches: &'p Patches,
}

impl Col2Im<'_> {
    /// `x_n += col2im(cols)` for one sample: `image` `[I, H, W]`, `cols`
    /// `[I·k_h·k_w, P]`.
    fn add_patches<T: WithDType>(&self, image: &mut [T], cols: &[T]) {
        let p = self.patches;
        let ((h, w), (kh, kw)) = (p.input, p.kernel);
        let (w_out, sw) = (p.output.1, p.geo.stride.1);
        let block = kh * kw * p.output.0 * w_out;
        for (plane, cols) in image.chunks_mut(h * w).zip(cols.chunks(block)) {
            p.rows(|row, oh, y, ow, x_lo| {
                let start = (row * p.output.0 + oh) * w_out;
                let src = &cols[start + ow.start..start + ow.end];
                let dst = &mut plane[y * w + x_lo..];
                if sw == 1 {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d += v;
                    }
                } else {
                    for (d, &v) in dst.iter_mut().step_by(sw).zip(src) {
                        *d += v;
                    }
                }
            });
        }
    }

    /// Sample by sample: [`Scatter`] where the gradient is sparse, else the
    /// product `W_flatᵀ g_n` into the thread's buffer and col2im.
    fn run<T: Lane>(&self, weight: &[T], grad: &[T], o: usize) -> Vec<T> {
        let ((h, w), (kh, kw)) = (self.patches.input, self.patches.kernel);
        let positions = self.patches.output.0 * self.patches.output.1;
        let rows = weight.len() / o.max(1);
        let channels = rows / (kh * kw);
        let samples = grad.len() / (o * positions).max(1);
        let mut out = vec![T::zero(); samples * channels * h * w];
        if out.is_empty() {
            return out;
        }
        // W_flatᵀ: the row-major [O, I·k·k] weight read column-major
        let wt = MatRef::from_column_major_slice(weight, rows, o);
        let one = T::from_f64(1.0);
        let channels_last = OnceLock::new();
        out.par_chunks_mut(channels * h * w)
            .zip(grad.par_chunks(o * positions))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(cols, buffer), (image, g)| {
                    if scatter::sparse(g, channels) {
                        let weight = channels_last
                            .get_or_init(|| ChannelsLast::new(weight, channels, kh * kw));
                        // compiled for the CPU's vector extensions (AVX-512 where there is)
                        pulp::Arch::new().dispatch(Scatter {
                            patches: self.patches,
                            weight,
                            grad: g,
                            buffer,
                            image,
                        });
                        return;
                    }
                    cols.resize(rows * positions, T::zero());
                    let dst = MatMut::from_row_major_slice_mut(cols, rows, positions);
                    let g = MatRef::from_row_major_slice(g, o, positions);
                    gemm(dst, Accum::Replace, wt, g, one, Par::Seq);
                    self.add_patches(image, cols);
                },
            );
        out
    }
}

impl CustomOp2 for Col2Im<'_> {
    fn name(&self) -> &'static str {
        "vivit-col2im"
    }

    fn cpu_fwd(
        &self,
        weight: &CpuStorage,
        weight_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (o, rows) = weight_layout.shape().dims2()?;
        let (n, o_grad, positions) = grad_layout.shape().dims3()?;
        let (kh, kw) = self.patches.kernel;
        let (h_out, w_out) = self.patches.output;
        if o_grad != o || positions != h_out * w_out || rows % (kh * kw) != 0 {
            candle_core::bail!(
                "{op}: weight {:?} and gradient {:?} do not fit the patches",
                weight_layout.shape(),
                grad_layout.shape()
            );
        }
        let out = match (weight, grad) {
            (CpuStorage::F32(w), CpuStorage::F32(g)) => CpuStorage::F32(self.run(
                contiguous(w, weight_layout, op)?,
                contiguous(g, grad_layout, op)?,
                o,
            )),
            (CpuStorage::F64(w), CpuStorage::F64(g)) => CpuStorage::F64(self.run(
                contiguous(w, weight_layout, op)?,
                contiguous(g, grad_layout, op)?,
                o,
            )),
            _ => candle_core::bail!("{op}: f32 or f64 weight and gradient expected"),
        };
        let (h, w) = self.patches.input;
        Ok((out, Shape::from((n, rows / (kh * kw), h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ConvGeometry;
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

    /// `conv2d(x, W) = W_flat · patches(x)` for every geometry, against
    /// candle's conv; vivit's im2col equals candle's gather (on a variable).
    #[test]
    fn patches_reproduce_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (k, p, s, d) in GEOMETRIES {
            let x = candle_core::Var::randn(0f64, 1., (2, 3, 9, 8), &dev)?;
            let w = Tensor::randn(0f64, 1., (4, 3, k, k), &dev)?;
            let y = x.conv2d(&w, p, s, d, 1)?;
            let patches = Patches::new((9, 8), (k, k), geometry(p, s, d), &x)?;
            let a = patches.gather(&x.detach())?;
            assert_eq!(max_diff(&a, &patches.gather(&x)?)?, 0.0);
            let y2 = w
                .reshape((1, 4, 3 * k * k))?
                .broadcast_matmul(&a)?
                .reshape(y.shape())?;
            assert!(max_diff(&y, &y2)? < 1e-12, "k {k} p {p} s {s} d {d}");
        }
        Ok(())
    }

    /// `⟨W_flat · gather(x), g⟩ = ⟨x, transpose_product(W_flat, g)⟩`: the
    /// transpose product is the adjoint of the convolution.
    #[test]
    fn transpose_product_is_the_adjoint_of_the_convolution() -> Result<()> {
        let dev = Device::Cpu;
        for (k, p, s, d) in GEOMETRIES {
            let x = Tensor::randn(0f64, 1., (2, 3, 9, 8), &dev)?;
            let w = Tensor::randn(0f64, 1., (4, 3 * k * k), &dev)?;
            let patches = Patches::new((9, 8), (k, k), geometry(p, s, d), &x)?;
            let y = w.unsqueeze(0)?.broadcast_matmul(&patches.gather(&x)?)?;
            let g = Tensor::randn(0f64, 1., y.shape(), &dev)?;
            let lhs = (y * &g)?.sum_all()?.to_scalar::<f64>()?;
            let x_grad = patches.transpose_product(&w, &g)?;
            assert_eq!(x_grad.dims(), x.dims());
            let rhs = (x * x_grad)?.sum_all()?.to_scalar::<f64>()?;
            assert!(
                (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
                "k {k} p {p} s {s} d {d}: {lhs} vs {rhs}"
            );
        }
        Ok(())
    }

    /// `W_flatᵀ g_n` then its col2im by candle's ops: `index_add` of the
    /// columns into the padded input at the gather's positions, the padding
    /// cut off.
    fn col2im_by_index_add(patches: &Patches, w: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (n, _, _) = g.dims3()?;
        let ((h, wd), (kh, kw)) = (patches.input, patches.kernel);
        let (ph, pw) = patches.geo.padding;
        let channels = w.dim(1)? / (kh * kw);
        let cols = w.t()?.broadcast_matmul(g)?; // [N, I·k·k, P]
        let cols = cols.reshape((n, channels, ()))?;
        let (hp, wp) = (h + 2 * ph, wd + 2 * pw);
        Tensor::zeros((n, channels, hp * wp), g.dtype(), g.device())?
            .index_add(&patches.index, &cols, 2)?
            .reshape((n, channels, hp, wp))?
            .narrow(2, ph, h)?
            .narrow(3, pw, wd)
    }

    /// Gradients mostly zero (a fixed pattern, one in seven entries, the
    /// last sample dense) take the scatter, the dense sample the product and
    /// col2im: both equal col2im by candle's `index_add`, for every geometry,
    /// channel counts on and off the vector width, f32 and f64.
    #[test]
    fn sparse_gradients_scatter_to_the_same_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for channels in [3, 16, 19] {
                for (k, p, s, d) in GEOMETRIES {
                    let x = Tensor::zeros((3, channels, 9, 8), dtype, &dev)?;
                    let patches = Patches::new((9, 8), (k, k), geometry(p, s, d), &x)?;
                    let (o, positions) = (5, patches.output.0 * patches.output.1);
                    let w =
                        Tensor::randn(0f64, 1., (o, channels * k * k), &dev)?.to_dtype(dtype)?;
                    let g = Tensor::randn(0f64, 1., (3, o, positions), &dev)?;
                    let len = o * positions;
                    let mask: Vec<f64> = (0..3 * len)
                        .map(|e| f64::from(u8::from(e % 7 == 3 || e >= 2 * len)))
                        .collect();
                    let mask = Tensor::from_vec(mask, g.shape(), &dev)?;
                    let g = (g * mask)?.to_dtype(dtype)?;
                    let got = patches.transpose_product(&w, &g)?.to_dtype(DType::F64)?;
                    let want = col2im_by_index_add(&patches, &w, &g)?.to_dtype(DType::F64)?;
                    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-12 };
                    assert!(
                        max_diff(&got, &want)? < tol,
                        "{dtype:?} I {channels} k {k} p {p} s {s} d {d}"
                    );
                }
            }
        }
        Ok(())
    }
}
