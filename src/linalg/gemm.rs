//! Matrix products of CPU tensors by faer's gemm.
//!
//! On this project's machines (AVX-512) faer's f32 gemm runs 2–3× faster
//! than the one candle's CPU backend calls, and the factor algebra is mostly
//! gemm. Best of 5, f32, 2 threads: `[288, 51200] × [51200, 288]` (a
//! convolution's Gram block) 84 ms with candle, 41 ms with faer;
//! `[800, 64] × [64, 6272]` (its input Jacobian) 9.0 and 3.7 ms;
//! `[32, 1024] × [1024, 3136]` 3.9 and 1.2 ms. [`matmul`] reads the operands where they
//! lie (row- or column-major views, so transposes are free) and falls back to
//! candle's `broadcast_matmul` wherever it cannot: other devices and dtypes,
//! other ranks, and operands that carry a graph (the result of this one would
//! not).

use candle_core::{DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use faer::linalg::matmul::matmul as gemm;
use faer::traits::RealField;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// `A B` for `a` `[m, k]` and `b` `[k, n]`, or batched, `[B, m, k]` × `[B, k, n]`
/// with either batch size 1 broadcast: `C[β] = A[β] B[β]`.
///
/// Same result as `a.broadcast_matmul(b)` up to round-off (both sum in f32 for
/// f32 operands), without a backward: only for values (detached operands;
/// operands that carry a graph go to candle).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let plain = matches!(a.device(), Device::Cpu)
        && a.dtype() == b.dtype()
        && !a.track_op()
        && !b.track_op()
        && matches!((a.rank(), b.rank()), (2, 2) | (3, 3) | (2, 3) | (3, 2));
    if !plain {
        return a.broadcast_matmul(b);
    }
    match a.dtype() {
        DType::F32 => product::<f32>(a, b),
        DType::F64 => product::<f64>(a, b),
        _ => a.broadcast_matmul(b),
    }
}

/// A batch of matrices in a slice: `[B, r, c]` (`B = 1` for rank 2), with the
/// strides of its batch, rows and columns.
#[derive(Clone, Copy)]
struct Batch {
    batch: usize,
    rows: usize,
    cols: usize,
    offset: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Batch {
    /// The layout as a batch, if each matrix is a row- or column-major view.
    fn of(layout: &Layout) -> Option<Self> {
        let (dims, strides) = (layout.dims(), layout.stride());
        let (batch, batch_stride) = match dims.len() {
            2 => (1, 0),
            _ => (dims[0], strides[0]),
        };
        let at = dims.len() - 2;
        let (rows, cols) = (dims[at], dims[at + 1]);
        let (row_stride, col_stride) = (strides[at], strides[at + 1]);
        // the stride along a length-1 axis is never used: pick one that fits
        let (row_stride, col_stride) = if cols == 1 || col_stride == 1 {
            (if rows == 1 { cols } else { row_stride }, 1)
        } else if rows == 1 {
            (1, col_stride)
        } else {
            (row_stride, col_stride)
        };
        let row_major = col_stride == 1 && row_stride >= cols;
        let col_major = row_stride == 1 && col_stride >= rows;
        (row_major || col_major).then_some(Self {
            batch,
            rows,
            cols,
            offset: layout.start_offset(),
            batch_stride,
            row_stride,
            col_stride,
        })
    }

    /// Matrix `i` (`0` when the batch is broadcast) of `data`.
    fn matrix<'d, T>(&self, data: &'d [T], i: usize) -> Option<MatRef<'d, T>> {
        let i = if self.batch == 1 { 0 } else { i };
        let start = self.offset + i * self.batch_stride;
        let data = data.get(start..)?;
        let fits = |len: usize, lines: usize, stride: usize, line: usize| {
            lines == 0 || (lines - 1) * stride + line <= len
        };
        if self.col_stride == 1 {
            fits(data.len(), self.rows, self.row_stride, self.cols).then(|| {
                MatRef::from_row_major_slice_with_stride(
                    data,
                    self.rows,
                    self.cols,
                    self.row_stride,
                )
            })
        } else {
            fits(data.len(), self.cols, self.col_stride, self.rows).then(|| {
                MatRef::from_column_major_slice_with_stride(
                    data,
                    self.rows,
                    self.cols,
                    self.col_stride,
                )
            })
        }
    }
}

fn product<T: WithDType + RealField>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = (viewable(a)?, viewable(b)?);
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(sa), Storage::Cpu(sb)) = (&*sa, &*sb) else {
        candle_core::bail!("vivit matmul: CPU storage expected");
    };
    let (da, db) = (sa.as_slice::<T>()?, sb.as_slice::<T>()?);
    let (Some(ba), Some(bb)) = (Batch::of(la), Batch::of(lb)) else {
        candle_core::bail!("vivit matmul: matrices of layouts {la:?} and {lb:?}");
    };
    let (m, k, n) = (ba.rows, ba.cols, bb.cols);
    let batch = ba.batch.max(bb.batch);
    if bb.rows != k || (ba.batch != bb.batch && ba.batch != 1 && bb.batch != 1) {
        // candle names the mismatch
        return a.broadcast_matmul(&b);
    }
    let mut out = vec![T::zero(); batch * m * n];
    let one = T::from_f64(1.0);
    let multiply = |i: usize, c: &mut [T], par: Par| -> Result<()> {
        let (Some(x), Some(y)) = (ba.matrix(da, i), bb.matrix(db, i)) else {
            candle_core::bail!("vivit matmul: operand out of its storage");
        };
        let dst = MatMut::from_row_major_slice_mut(c, m, n);
        gemm(dst, Accum::Replace, x, y, one, par);
        Ok(())
    };
    if m * n > 0 {
        if batch == 1 {
            multiply(0, &mut out, Par::rayon(0))?;
        } else {
            out.par_chunks_mut(m * n)
                .enumerate()
                .try_for_each(|(i, c)| multiply(i, c, Par::Seq))?;
        }
    }
    let mut shape = vec![m, n];
    if a.rank() == 3 || b.rank() == 3 {
        shape.insert(0, batch);
    }
    Tensor::from_vec(out, Shape::from(shape), &Device::Cpu)
}

/// `t`, or a contiguous copy where its matrices are not row- or column-major
/// views.
fn viewable(t: &Tensor) -> Result<Tensor> {
    let ok = Batch::of(t.layout()).is_some();
    if ok {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to candle's product for plain, transposed, narrowed and broadcast
    /// operands, f32 and f64.
    #[test]
    fn equals_candles_product() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::randn(0f64, 1., (3, 7, 5), &dev)?.to_dtype(dtype)?;
            let y = Tensor::randn(0f64, 1., (3, 5, 4), &dev)?.to_dtype(dtype)?;
            let wide = Tensor::randn(0f64, 1., (9, 6), &dev)?.to_dtype(dtype)?;
            let cases = [
                (x.get(0)?, y.get(1)?),
                (x.clone(), y.clone()),
                (x.get(1)?.t()?.contiguous()?.t()?, y.get(2)?),
                (x.get(1)?, y.get(2)?.t()?.contiguous()?.t()?),
                (wide.narrow(1, 1, 5)?.narrow(0, 2, 7)?, y.get(0)?),
                (x.get(0)?.unsqueeze(0)?, y.clone()),
                (x.clone(), y.get(1)?),
                (x.narrow(1, 3, 1)?, y.narrow(2, 1, 1)?),
                (x.permute((0, 2, 1))?.permute((0, 2, 1))?, y.clone()),
                (x.transpose(0, 1)?.transpose(0, 1)?, y.clone()),
                // size-1 axes with arbitrary strides
                (
                    x.narrow(1, 0, 1)?
                        .narrow(2, 0, 1)?
                        .permute((2, 1, 0))?
                        .permute((2, 1, 0))?,
                    y.narrow(1, 0, 1)?,
                ),
                (x.narrow(2, 2, 1)?, y.narrow(1, 1, 1)?),
            ];
            for (i, (a, b)) in cases.iter().enumerate() {
                let want = a.broadcast_matmul(b)?;
                let got = matmul(a, b)?;
                assert_eq!(got.dims(), want.dims(), "case {i}");
                let diff = (got - want)?.abs()?.flatten_all()?.max(0)?;
                let diff = diff.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                assert!(diff < 1e-5, "case {i} ({dtype:?}): {diff}");
            }
        }
        Ok(())
    }

    /// Empty products are zeros of the right shape; mismatches are candle's errors.
    #[test]
    fn edge_cases() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::zeros((4, 0), DType::F32, &dev)?;
        let b = Tensor::zeros((0, 3), DType::F32, &dev)?;
        let c = matmul(&a, &b)?;
        assert_eq!(c.dims(), &[4, 3]);
        assert_eq!(c.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        let bad = Tensor::zeros((5, 3), DType::F32, &dev)?;
        assert!(matmul(&Tensor::zeros((4, 2), DType::F32, &dev)?, &bad).is_err());
        Ok(())
    }
}
