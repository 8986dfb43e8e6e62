//! Max pooling on the CPU, with a backward for overlapping windows.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::slices::contiguous;
use crate::kernels::Windows;

/// The op's name, in errors too.
const OP: &str = "vivit-max-pool2d";

/// [`crate::kernels::max_pool2d`] of a CPU f32 or f64 `x`; with `recording`
/// the op keeps each window's argmax from the forward for the (many)
/// backward passes of the factor.
pub(crate) fn max_pool2d(x: &Tensor, windows: Windows, recording: bool) -> Result<Tensor> {
    x.apply_op1(MaxPool {
        windows,
        argmax: recording.then(OnceLock::new),
    })
}

impl Windows {
    /// Flat index in the `h × w` plane of the first maximum of window `(i, j)`
    /// (padding left out).
    fn argmax<T: WithDType>(
        &self,
        plane: &[T],
        (h, w): (usize, usize),
        (i, j): (usize, usize),
    ) -> usize {
        let ((top, _), (left, _)) = self.padding;
        let inside = |start: usize, pad: usize, k: usize, len: usize| {
            // rows (or columns) start + a − pad, a < k, that lie in [0, len)
            start.saturating_sub(pad)..(start + k).saturating_sub(pad).min(len)
        };
        let rows = inside(i * self.stride.0, top, self.kernel.0, h);
        let cols = inside(j * self.stride.1, left, self.kernel.1, w);
        let mut best = rows.start * w + cols.start;
        let mut max = plane[best];
        for y in rows {
            let row = &plane[y * w..][cols.clone()];
            for (x, &v) in row.iter().enumerate() {
                if v > max {
                    (best, max) = (y * w + cols.start + x, v);
                }
            }
        }
        best
    }

    /// The pooled values, and if `keep` the argmax of each window (flat in
    /// its plane).
    fn forward<T: WithDType>(
        &self,
        x: &[T],
        (h, w): (usize, usize),
        keep: bool,
    ) -> (Vec<T>, Option<Vec<u32>>) {
        let (ho, wo) = self.output((h, w));
        let len = x.len() / (h * w) * ho * wo;
        let mut y = vec![T::zero(); len];
        let pool = |out: &mut [T], plane: &[T], mut at: Option<&mut [u32]>| {
            for i in 0..ho {
                for j in 0..wo {
                    let best = self.argmax(plane, (h, w), (i, j));
                    out[i * wo + j] = plane[best];
                    if let Some(at) = at.as_deref_mut() {
                        at[i * wo + j] = best as u32;
                    }
                }
            }
        };
        let planes = y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w));
        if !keep {
            planes.for_each(|(out, plane)| pool(out, plane, None));
            return (y, None);
        }
        let mut argmax = vec![0u32; len];
        planes
            .zip(argmax.par_chunks_mut(ho * wo))
            .for_each(|((out, plane), at)| pool(out, plane, Some(at)));
        (y, Some(argmax))
    }

    /// `∂L/∂x` `[…, h, w]` from `grad` `[…, h_out, w_out]`: each window's
    /// gradient added at `argmax(plane, window)`.
    fn backward<T: WithDType>(
        &self,
        grad: &[T],
        (h, w): (usize, usize),
        argmax: impl Fn(usize, (usize, usize)) -> usize + Sync,
    ) -> Vec<T> {
        let (ho, wo) = self.output((h, w));
        let mut dx = vec![T::zero(); grad.len() / (ho * wo).max(1) * h * w];
        dx.par_chunks_mut(h * w)
            .zip(grad.par_chunks(ho * wo))
            .enumerate()
            .for_each(|(plane, (out, g))| {
                for i in 0..ho {
                    for j in 0..wo {
                        out[argmax(plane, (i, j))] += g[i * wo + j];
                    }
                }
            });
        dx
    }
}

/// Max pooling as a CPU op; inside [`crate::record()`] it keeps each window's
/// argmax from the forward for the (many) backward passes.
struct MaxPool {
    windows: Windows,
    argmax: Option<OnceLock<Vec<u32>>>,
}

fn plane(shape: &Shape) -> Result<(usize, usize)> {
    let (_, _, h, w) = shape.dims4()?;
    Ok((h, w))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let hw = plane(layout.shape())?;
        let keep = self.argmax.is_some();
        let (y, argmax) = match storage {
            CpuStorage::F32(v) => {
                let (y, argmax) = self.windows.forward(contiguous(v, layout, OP)?, hw, keep);
                (CpuStorage::F32(y), argmax)
            }
            CpuStorage::F64(v) => {
                let (y, argmax) = self.windows.forward(contiguous(v, layout, OP)?, hw, keep);
                (CpuStorage::F64(y), argmax)
            }
            _ => candle_core::bail!("vivit max_pool2d: f32 or f64 only"),
        };
        if let (Some(cache), Some(argmax)) = (&self.argmax, argmax) {
            // a second forward of the same op computes the same argmax
            let _ = cache.set(argmax);
        }
        let (n, c, _, _) = layout.shape().dims4()?;
        let (ho, wo) = self.windows.output(hw);
        Ok((y, Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let input = plane(arg.shape())?;
        let dx = match self.argmax.as_ref().and_then(OnceLock::get) {
            Some(argmax) => grad.apply_op1_no_bwd(&Scatter {
                windows: self.windows,
                argmax,
                input,
            })?,
            None => arg
                .contiguous()?
                .apply_op2_no_bwd(&grad, &MaxPoolBackward(self.windows))?,
        };
        Ok(Some(dx.reshape(arg.shape())?))
    }
}

/// `∂L/∂y ↦ ∂L/∂x` of [`MaxPool`] from the argmax kept by the forward.
struct Scatter<'a> {
    windows: Windows,
    argmax: &'a [u32],
    /// Height and width of the input.
    input: (usize, usize),
}

impl CustomOp1 for Scatter<'_> {
    fn name(&self) -> &'static str {
        "vivit-max-pool2d-scatter"
    }

    fn cpu_fwd(&self, grad: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ho, wo) = self.windows.output(self.input);
        let windows = ho * wo;
        if layout.shape().elem_count() != self.argmax.len() {
            candle_core::bail!(
                "{OP}: gradient {:?} does not fit the pooling",
                layout.shape()
            );
        }
        let at = |plane: usize, (i, j): (usize, usize)| {
            self.argmax[plane * windows + i * wo + j] as usize
        };
        let dx = match grad {
            CpuStorage::F32(g) => CpuStorage::F32(self.windows.backward(
                contiguous(g, layout, OP)?,
                self.input,
                at,
            )),
            CpuStorage::F64(g) => CpuStorage::F64(self.windows.backward(
                contiguous(g, layout, OP)?,
                self.input,
                at,
            )),
            _ => candle_core::bail!("vivit max_pool2d: f32 or f64 only"),
        };
        let planes = self.argmax.len() / windows.max(1);
        Ok((dx, Shape::from((planes, self.input.0, self.input.1))))
    }
}

/// `(x, ∂L/∂y) ↦ ∂L/∂x` of [`MaxPool`], the argmax found anew in `x`.
struct MaxPoolBackward(Windows);

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
        let (h, w) = plane(x_layout.shape())?;
        let windows = self.0;
        let dx = match (x, grad) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                let x = contiguous(x, x_layout, OP)?;
                let at = |plane: usize, ij| windows.argmax(&x[plane * h * w..], (h, w), ij);
                CpuStorage::F32(windows.backward(contiguous(g, grad_layout, OP)?, (h, w), at))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                let x = contiguous(x, x_layout, OP)?;
                let at = |plane: usize, ij| windows.argmax(&x[plane * h * w..], (h, w), ij);
                CpuStorage::F64(windows.backward(contiguous(g, grad_layout, OP)?, (h, w), at))
            }
            _ => candle_core::bail!("vivit max_pool2d: f32 or f64 only"),
        };
        Ok((dx, x_layout.shape().clone()))
    }
}
