//! The weight factor of a layer formed on the support of its output signals.
//!
//! Behind a ReLU and a max pooling most entries of a convolution's output
//! signals `B[c,n,o,t]` are zero, at the same positions for every column `c`
//! (the support is the forward's: where the ReLU was active and the pooling
//! took its maximum; fmnist_2c2d's second convolution keeps 18 % of them).
//! With `P(n,o) = { t : B[c,n,o,t] ≠ 0 for some c }`,
//!
//! ```text
//! V_W[c,n][o, :] = Σ_{t ∈ P(n,o)} B[c,n,o,t] A[n,:,t]
//! ```
//!
//! costs `C·|P(n,o)|·I` multiply-adds instead of `C·T·I`. Samples whose
//! support is dense are multiplied by faer's gemm as before.

use candle_core::{DType, Device, Result, Tensor, WithDType};
use faer::linalg::matmul::matmul as gemm;
use faer::traits::RealField;
use faer::{Accum, MatMut, MatRef, Par};
use pulp::Simd;
use rayon::prelude::*;

use super::slices as cpu;
use super::{Gathered, Lane};

/// A sample whose support holds more than this fraction of its `len·T`
/// signal entries is multiplied densely. Per multiply-add on the support this
/// formation runs at about half the rate of faer's dense gemm, so the
/// break-even lies near 50 %; 35 % leaves a margin.
const DENSE_FRACTION: f64 = 0.35;

/// Fewer inputs `I` than this go to faer's gemm: the kernel's tiles are 48
/// to 128 columns wide (f32 on AVX-512), the columns left over are summed
/// one by one, and short rows reuse each gathered load little.
const MIN_INPUTS: usize = 128;

/// Fewer loss-factor columns `C` than this go to faer's gemm: each sample's
/// patches are transposed for the gathered rows, a cost shared by its `C`
/// rows (a Monte-Carlo factor with one sample, or the gradient's, has one).
const MIN_COLUMNS: usize = 3;

/// The order of the rows `(c, n)` of a formed factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowOrder {
    /// Row `c·N + n`.
    ClassMajor,
    /// Row `n·C + c`.
    SampleMajor,
}

/// Output channels `start..start + len` of `V_W`, `[C·N, len·I]` in `order`,
/// for inputs `a` `[N, I, T]` and signals `b` `[C, N, O, T]`:
/// `V_W[c,n][o, :] = Σ_{t ∈ P(n,o)} B[c,n,o,t] A[n,:,t]`, sample by sample in
/// parallel, for CPU f32 or f64 tensors. `None` where this does not apply:
/// `T = 1`, `I <` [`MIN_INPUTS`], `C <` [`MIN_COLUMNS`],
/// or signals without zeros to skip (more than [`DENSE_FRACTION`] of them
/// nonzero in every sample).
pub(crate) fn weight_factor(
    a: &Tensor,
    b: &Tensor,
    start: usize,
    len: usize,
    order: RowOrder,
) -> Result<Option<Tensor>> {
    let (c, n, o, t) = b.dims4()?;
    let d = Dims {
        c,
        n,
        o,
        t,
        i: a.dim(1)?,
        start,
        len,
    };
    let applies = a.dtype() == b.dtype() && t > 1 && d.i >= MIN_INPUTS && c >= MIN_COLUMNS;
    if !applies {
        return Ok(None);
    }
    match b.dtype() {
        DType::F32 => formed::<f32>(a, b, d, order),
        DType::F64 => formed::<f64>(a, b, d, order),
        _ => Ok(None),
    }
}

/// The op's name in errors.
const OP: &str = "vivit weight factor on the support";

/// Shapes of one formation: `C`, `N`, `O`, `T`, `I` and the channel slice.
#[derive(Debug, Clone, Copy)]
struct Dims {
    c: usize,
    n: usize,
    o: usize,
    t: usize,
    i: usize,
    start: usize,
    len: usize,
}

fn formed<T: Lane>(a: &Tensor, b: &Tensor, dims: Dims, order: RowOrder) -> Result<Option<Tensor>> {
    let Dims {
        c, n, t, i, len, ..
    } = dims;
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let (a_storage, a_layout) = a.storage_and_layout();
    let (b_storage, b_layout) = b.storage_and_layout();
    let av = cpu::contiguous(cpu::values::<T>(&a_storage, OP)?, a_layout, OP)?;
    let bv = cpu::contiguous(cpu::values::<T>(&b_storage, OP)?, b_layout, OP)?;
    let supports: Vec<Support> = (0..n)
        .into_par_iter()
        .map(|s| Support::of(bv, dims, s))
        .collect();
    let dense = (len * t) as f64 * DENSE_FRACTION;
    if supports.iter().all(|s| s.total() as f64 > dense) {
        return Ok(None);
    }
    let row_len = len * i;
    let mut out = cpu::zeroed::<T>(c * n * row_len);
    // the C rows of each sample, in `order`
    let mut rows: Vec<Vec<&mut [T]>> = (0..n).map(|_| Vec::with_capacity(c)).collect();
    for (r, row) in out.chunks_mut(row_len.max(1)).enumerate() {
        let sample = match order {
            RowOrder::ClassMajor => r % n,
            RowOrder::SampleMajor => r / c,
        };
        rows[sample].push(row);
    }
    rows.into_par_iter()
        .zip(supports)
        .enumerate()
        .for_each_init(Vec::new, |at, (s, (mut rows, support))| {
            let a_n = &av[s * i * t..][..i * t];
            if support.total() as f64 > dense {
                dense_sample(&mut rows, a_n, bv, dims, s);
            } else {
                let sample = Sample {
                    rows: &mut rows,
                    a: a_n,
                    at,
                    b: bv,
                    d: dims,
                    s,
                    support: &support,
                };
                // compiled for the CPU's vector extensions (AVX-512 where there is)
                pulp::Arch::new().dispatch(sample);
            }
        });
    Ok(Some(Tensor::from_vec(out, (c * n, row_len), &Device::Cpu)?))
}

/// The support of one sample's signals: for channel `o` of the slice, the
/// positions `index[offsets[o]..offsets[o + 1]]`.
#[derive(Debug)]
struct Support {
    offsets: Vec<usize>,
    index: Vec<usize>,
}

impl Support {
    fn of<T: WithDType>(b: &[T], d: Dims, s: usize) -> Self {
        let mut offsets = Vec::with_capacity(d.len + 1);
        let mut index = Vec::new();
        let mut nonzero = vec![false; d.t];
        offsets.push(0);
        for o in d.start..d.start + d.len {
            nonzero.fill(false);
            for c in 0..d.c {
                let row = &b[((c * d.n + s) * d.o + o) * d.t..][..d.t];
                for (z, &v) in nonzero.iter_mut().zip(row) {
                    *z |= v != T::zero();
                }
            }
            index.extend((0..d.t).filter(|&p| nonzero[p]));
            offsets.push(index.len());
        }
        Self { offsets, index }
    }

    /// Positions in the support, over all channels of the slice.
    fn total(&self) -> usize {
        self.index.len()
    }
}

/// `rows[c] = B[c,s,slice,:] A[s]ᵀ` (`[len, T] × [T, I]`) by faer's gemm.
fn dense_sample<T: WithDType + RealField>(
    rows: &mut [&mut [T]],
    a: &[T],
    b: &[T],
    d: Dims,
    s: usize,
) {
    // A[s]ᵀ: the row-major [I, T] input read column-major
    let at = MatRef::from_column_major_slice(a, d.t, d.i);
    for (c, row) in rows.iter_mut().enumerate() {
        let bc = &b[((c * d.n + s) * d.o + d.start) * d.t..][..d.len * d.t];
        let bc = MatRef::from_row_major_slice(bc, d.len, d.t);
        let dst = MatMut::from_row_major_slice_mut(row, d.len, d.i);
        gemm(dst, Accum::Replace, bc, at, T::from_f64(1.0), Par::Seq);
    }
}

/// One sample's rows on its support: `rows[c][o, :] = Σ_{t ∈ P(s,o)} B[c,s,o,t] A[s,:,t]`
/// from the rows of `A[s]ᵀ` (transposed into `at`), in tiles of rows `c` ×
/// columns summed in vector registers.
struct Sample<'r, 'a, T> {
    rows: &'r mut [&'a mut [T]],
    a: &'r [T],
    at: &'r mut Vec<T>,
    b: &'r [T],
    d: Dims,
    s: usize,
    support: &'r Support,
}

impl<T: Lane> pulp::WithSimd for Sample<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            rows,
            a,
            at,
            b,
            d,
            s,
            support,
        } = self;
        // every entry is written by the transposition
        at.resize(d.t * d.i, T::zero());
        transpose(a, at, d.i, d.t);
        let mut coef = Vec::new();
        for o in 0..d.len {
            let index = &support.index[support.offsets[o]..support.offsets[o + 1]];
            // coef[c·k + j] = B[c,s,o,index[j]]
            coef.clear();
            for c in 0..d.c {
                let bc = &b[((c * d.n + s) * d.o + d.start + o) * d.t..][..d.t];
                coef.extend(index.iter().map(|&p| bc[p]));
            }
            let sums = Gathered {
                x: at,
                width: d.i,
                index,
                coef: &coef,
            };
            sums.write(simd, rows, o * d.i);
        }
    }
}

/// `at = aᵀ` `[cols, rows]` for a row-major `a` `[rows, cols]`, 16 rows of
/// `a` at a time: each column of them is 16 contiguous values of `at` (twice
/// as fast as square tiles of 16 for fmnist_2c2d's `[800, 196]` patches).
#[inline(always)]
fn transpose<T: Copy>(a: &[T], at: &mut [T], rows: usize, cols: usize) {
    const K: usize = 16;
    let mut r0 = 0;
    while r0 + K <= rows {
        let src: [&[T]; K] = std::array::from_fn(|k| &a[(r0 + k) * cols..][..cols]);
        for (c, dst) in at[r0..].chunks_mut(rows).enumerate() {
            if let Some(dst) = dst.first_chunk_mut::<K>() {
                for (d, src) in dst.iter_mut().zip(&src) {
                    *d = src[c];
                }
            }
        }
        r0 += K;
    }
    for r in r0..rows {
        for (c, &v) in a[r * cols..][..cols].iter().enumerate() {
            at[c * rows + r] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `V_W[c,n][o, :] = B[c,n,o,:] A[n]ᵀ` by candle, `[C·N, len·I]` in `order`.
    fn dense(a: &Tensor, b: &Tensor, start: usize, len: usize, order: RowOrder) -> Result<Tensor> {
        let (c, n, _, _) = b.dims4()?;
        let i = a.dim(1)?;
        let v = b
            .narrow(2, start, len)?
            .broadcast_matmul(&a.transpose(1, 2)?.unsqueeze(0)?)?; // [C, N, len, I]
        let v = match order {
            RowOrder::ClassMajor => v,
            RowOrder::SampleMajor => v.transpose(0, 1)?,
        };
        v.contiguous()?.reshape((c * n, len * i))
    }

    /// Signals `[C, N, O, T]` zero off a support shared by the columns `c`:
    /// sample 0 dense, the others keep one position in `every` (a fixed
    /// pattern that differs between samples and channels).
    fn signals(c: usize, n: usize, o: usize, t: usize, every: usize) -> Result<Tensor> {
        let kept: Vec<f64> = (0..n * o * t)
            .map(|j| {
                let (s, ch, p) = (j / (o * t), j / t % o, j % t);
                let on = s == 0 || (p + 3 * ch + 5 * s) % every == 0;
                if on {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let kept = Tensor::from_vec(kept, (1, n, o, t), &Device::Cpu)?;
        Tensor::randn(0f64, 1., (c, n, o, t), &Device::Cpu)?.broadcast_mul(&kept)
    }

    /// Equal to the dense product for every tile of rows (`C` = 3 to 9: tiles
    /// of 4, 3, 2 and 1 rows), both row orders, channel slices, inputs `I` on
    /// and off the vector width, f32 and f64, with a dense sample among
    /// sparse ones.
    #[test]
    fn equals_the_dense_product() -> Result<()> {
        let (n, o, t) = (3, 5, 12);
        for (c, i) in [(3, 128), (4, 135), (5, 130), (6, 160), (9, 201)] {
            let a = Tensor::randn(0f64, 1., (n, i, t), &Device::Cpu)?;
            let b = signals(c, n, o, t, 5)?;
            for dtype in [DType::F64, DType::F32] {
                let (a, b) = (a.to_dtype(dtype)?, b.to_dtype(dtype)?);
                for (start, len) in [(0, o), (1, 3)] {
                    for order in [RowOrder::ClassMajor, RowOrder::SampleMajor] {
                        let Some(got) = weight_factor(&a, &b, start, len, order)? else {
                            panic!("sparse signals formed densely: C {c} I {i}");
                        };
                        let want = dense(&a, &b, start, len, order)?;
                        let diff = (got - want)?
                            .abs()?
                            .flatten_all()?
                            .max(0)?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?;
                        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-4 };
                        assert!(diff < tol, "C {c} I {i} {dtype:?} {order:?}: {diff}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Dense signals, few inputs, few columns and single positions are left
    /// to faer; sparse signals otherwise alike are formed on the support.
    #[test]
    fn declines_where_it_does_not_pay() -> Result<()> {
        let (c, n, o) = (MIN_COLUMNS, 3, 4);
        let a = Tensor::randn(0f32, 1., (n, MIN_INPUTS, 12), &Device::Cpu)?;
        let sparse = signals(c, n, o, 12, 10)?.to_dtype(DType::F32)?;
        let formed = |a: &Tensor, b: &Tensor| -> Result<bool> {
            Ok(weight_factor(a, b, 0, o, RowOrder::ClassMajor)?.is_some())
        };
        assert!(formed(&a, &sparse)?);
        let dense_signals = Tensor::randn(0f32, 1., (c, n, o, 12), &Device::Cpu)?;
        assert!(!formed(&a, &dense_signals)?);
        assert!(!formed(&a.narrow(1, 0, MIN_INPUTS - 1)?, &sparse)?);
        assert!(!formed(&a, &sparse.narrow(0, 0, MIN_COLUMNS - 1)?)?);
        assert!(!formed(&a.narrow(2, 0, 1)?, &sparse.narrow(3, 0, 1)?)?);
        Ok(())
    }
}
