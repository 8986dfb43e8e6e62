//! Matrix products of CPU tensors by faer's gemm, which reads the operands
//! where they lie (row- or column-major views, so transposes are free).

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor, WithDType};
use faer::linalg::matmul::matmul as gemm;
use faer::traits::RealField;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::slices as cpu;

/// `A B` for CPU operands `a` `[…, m, k]` and `b` `[…, k, n]` that
/// [`multiplies`], batched over the leading axes, which broadcast like
/// candle's (a missing axis or one of length 1 repeats): `C[β] = A[β] B[β]`.
///
/// Same result as `a.broadcast_matmul(b)` up to round-off (both sum in f32 for
/// f32 operands), without a backward. Operands broadcast by `broadcast_as`
/// (stride 0) are read in place, not copied.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match a.dtype() {
        DType::F32 => product::<f32>(a, b),
        DType::F64 => product::<f64>(a, b),
        _ => a.broadcast_matmul(b),
    }
}

/// Whether faer multiplies `a` and `b`: operands of one dtype, without
/// graph (the result would have none), at least matrices.
pub(crate) fn multiplies(a: &Tensor, b: &Tensor) -> bool {
    a.dtype() == b.dtype() && !a.track_op() && !b.track_op() && a.rank() >= 2 && b.rank() >= 2
}

/// The leading axes of the product of operands with dimensions `a` and `b`
/// (broadcast), or `None` if they do not broadcast.
pub(super) fn batch_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let (la, lb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let len = la.len().max(lb.len());
    let at = |dims: &[usize], d: usize| {
        let pad = len - dims.len();
        if d < pad {
            1
        } else {
            dims[d - pad]
        }
    };
    (0..len)
        .map(|d| match (at(la, d), at(lb, d)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// A batch of matrices in a slice: per leading axis of the product its
/// stride (0 where broadcast), and the matrices' shape and strides.
pub(super) struct Batch {
    leading: Vec<usize>,
    rows: usize,
    cols: usize,
    offset: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Batch {
    /// The layout as a batch over the product's leading axes `batch`, if each
    /// matrix is a row- or column-major view.
    pub(super) fn of(layout: &Layout, batch: &[usize]) -> Option<Self> {
        let (dims, strides) = (layout.dims(), layout.stride());
        let at = dims.len() - 2;
        let pad = batch.len() - at;
        let leading = (0..batch.len())
            .map(|d| match d.checked_sub(pad) {
                Some(d) if dims[d] > 1 => strides[d],
                _ => 0,
            })
            .collect();
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
            leading,
            rows,
            cols,
            offset: layout.start_offset(),
            row_stride,
            col_stride,
        })
    }

    /// Matrix `i` (row-major over the leading axes `batch`) of `data`.
    pub(super) fn matrix<'d, T>(
        &self,
        data: &'d [T],
        batch: &[usize],
        mut i: usize,
    ) -> Option<MatRef<'d, T>> {
        let mut start = self.offset;
        for (d, &len) in batch.iter().enumerate().rev() {
            start += (i % len) * self.leading[d];
            i /= len;
        }
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
    match product_values::<T>(a, b)? {
        Some((values, shape)) => Tensor::from_vec(values, shape, &Device::Cpu),
        // candle names the mismatch
        None => a.broadcast_matmul(b),
    }
}

/// [`matmul`] of CPU f32 or f64 operands as the values of a new CPU
/// storage and their shape, for ops that hand their output to candle;
/// `None` where faer does not multiply them.
pub(crate) fn matmul_values(a: &Tensor, b: &Tensor) -> Result<Option<(CpuStorage, Shape)>> {
    let plain = a.device().is_cpu() && multiplies(a, b);
    Ok(match a.dtype() {
        DType::F32 if plain => product_values::<f32>(a, b)?.map(|(v, s)| (CpuStorage::F32(v), s)),
        DType::F64 if plain => product_values::<f64>(a, b)?.map(|(v, s)| (CpuStorage::F64(v), s)),
        _ => None,
    })
}

/// The values and shape of [`product`], `None` where the shapes do not
/// multiply (candle's product names the mismatch).
fn product_values<T: WithDType + RealField>(
    a: &Tensor,
    b: &Tensor,
) -> Result<Option<(Vec<T>, Shape)>> {
    let Some(batch) = batch_dims(a.dims(), b.dims()) else {
        return Ok(None);
    };
    let (a, b) = (viewable(a, &batch)?, viewable(b, &batch)?);
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (da, db) = (
        cpu::values::<T>(&sa, "vivit matmul")?,
        cpu::values::<T>(&sb, "vivit matmul")?,
    );
    let (Some(ba), Some(bb)) = (Batch::of(la, &batch), Batch::of(lb, &batch)) else {
        candle_core::bail!("vivit matmul: matrices of layouts {la:?} and {lb:?}");
    };
    let (m, k, n) = (ba.rows, ba.cols, bb.cols);
    if bb.rows != k {
        return Ok(None);
    }
    let count: usize = batch.iter().product();
    let mut out = cpu::zeroed::<T>(count * m * n);
    let one = T::from_f64(1.0);
    let matrices = |i: usize| -> Result<(MatRef<'_, T>, MatRef<'_, T>)> {
        match (ba.matrix(da, &batch, i), bb.matrix(db, &batch, i)) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => candle_core::bail!("vivit matmul: operand out of its storage"),
        }
    };
    if m * n > 0 {
        if count == 1 {
            let (x, y) = matrices(0)?;
            split_inner(&mut out, m, n, k, |dst, range, par| {
                let (x, y) = (
                    x.subcols(range.start, range.len()),
                    y.subrows(range.start, range.len()),
                );
                gemm(dst, Accum::Replace, x, y, one, par);
            });
        } else {
            out.par_chunks_mut(m * n)
                .enumerate()
                .try_for_each(|(i, c)| -> Result<()> {
                    let (x, y) = matrices(i)?;
                    let dst = MatMut::from_row_major_slice_mut(c, m, n);
                    gemm(dst, Accum::Replace, x, y, one, Par::Seq);
                    Ok(())
                })?;
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(Some((out, Shape::from(shape))))
}

/// Products of fewer multiply-adds run on one thread: faer's threads wait
/// for each other at barriers, which costs more than a small product gains
/// (and much more where the other threads are busy, as in the factor passes'
/// parallel backward).
const PARALLEL_PRODUCT_SIZE: usize = 1 << 24;

/// The parallelism of one product of `size` multiply-adds.
fn parallelism(size: usize) -> Par {
    if size < PARALLEL_PRODUCT_SIZE {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

/// Products with at most this many outputs split a long inner dimension
/// across threads: faer parallelizes over blocks of outputs, so a `32 × 32`
/// product over `110,592` terms (a Gram block of cifar10_3c3d's third
/// convolution with one column per sample) ran at a fifth of the machine.
const SPLIT_OUTPUTS: usize = 1 << 14;

/// The row-major `out` `[m, n]` = the product over an inner dimension of
/// `k` terms that `product(dst, range, par)` computes for the terms `range`
/// into `dst` (overwriting it): in one call, or, for few outputs and many
/// terms, over chunks of terms in parallel, the partial products summed in
/// chunk order.
pub(super) fn split_inner<T: RealField + Copy + Send + Sync>(
    out: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    product: impl Fn(MatMut<'_, T>, std::ops::Range<usize>, Par) + Sync,
) {
    let threads = rayon::current_num_threads();
    let chunks = (k / (16 * m.max(n)).max(1)).min(2 * threads);
    if m * n > SPLIT_OUTPUTS || chunks < 2 || m * n * k < PARALLEL_PRODUCT_SIZE {
        product(
            MatMut::from_row_major_slice_mut(out, m, n),
            0..k,
            parallelism(m * n * k),
        );
        return;
    }
    let len = k.div_ceil(chunks);
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut part = vec![T::zero(); m * n];
            let range = c * len..((c + 1) * len).min(k);
            product(
                MatMut::from_row_major_slice_mut(&mut part, m, n),
                range,
                Par::Seq,
            );
            part
        })
        .collect();
    out.copy_from_slice(&partials[0]);
    for part in &partials[1..] {
        for (o, &p) in out.iter_mut().zip(part) {
            *o += p;
        }
    }
}

/// `t`, or a contiguous copy where its matrices are not row- or column-major
/// views.
pub(super) fn viewable(t: &Tensor, batch: &[usize]) -> Result<Tensor> {
    let ok = Batch::of(t.layout(), batch).is_some();
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
            // few outputs over many terms: split along the inner dimension
            let long = Tensor::randn(0f64, 1., (20, 30_000), &dev)?.to_dtype(dtype)?;
            let tall = Tensor::randn(0f64, 1., (40, 30_000), &dev)?.to_dtype(dtype)?;
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
                // several leading axes, broadcast by stride 0
                (x.unsqueeze(0)?.broadcast_as((2, 3, 7, 5))?, y.clone()),
                (
                    x.reshape((3, 1, 7, 5))?,
                    y.unsqueeze(1)?.broadcast_as((3, 2, 5, 4))?,
                ),
                (x.get(0)?, y.unsqueeze(0)?.broadcast_as((2, 3, 5, 4))?),
                (long.clone(), tall.t()?),
            ];
            for (i, (a, b)) in cases.iter().enumerate() {
                let want = a.contiguous()?.broadcast_matmul(&b.contiguous()?)?;
                let got = matmul(a, b)?;
                assert_eq!(got.dims(), want.dims(), "case {i}");
                let diff = (got - want)?.abs()?.flatten_all()?.max(0)?;
                let diff = diff.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                // f32 round-off of sums of k terms of size ~1
                let k = a.dim(candle_core::D::Minus1)? as f64;
                assert!(diff < 1e-6 * k.max(10.0), "case {i} ({dtype:?}): {diff}");
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
