//! The Gram matrix `V Vᵀ` of a CPU tensor by faer's triangular products.

use candle_core::{Device, Result, Tensor, WithDType};
use faer::linalg::matmul::matmul as gemm;
use faer::linalg::matmul::triangular::{matmul as triangular, BlockStructure};
use faer::traits::RealField;
use faer::{Accum, MatMut, MatRef, Par};

use super::gemm::{split_inner, viewable, Batch};
use super::slices as cpu;

/// `V Vᵀ` `[m, m]` of `v` `[m, k]`: the lower triangle by triangular
/// products (half the flops of `matmul(v, vᵀ)`, on several threads by halves
/// of the rows, [`lower_gram`]), then mirrored, so the result is exactly
/// symmetric.
pub(crate) fn gram(v: &Tensor) -> Result<Tensor> {
    match v.dtype() {
        candle_core::DType::F32 => gram_of::<f32>(v),
        candle_core::DType::F64 => gram_of::<f64>(v),
        _ => v.matmul(&v.t()?),
    }
}

fn gram_of<T: WithDType + RealField>(v: &Tensor) -> Result<Tensor> {
    let v = viewable(v, &[])?;
    let (storage, layout) = v.storage_and_layout();
    let data = cpu::values::<T>(&storage, "vivit gram")?;
    let Some(x) = Batch::of(layout, &[]).and_then(|b| b.matrix(data, &[], 0)) else {
        candle_core::bail!("vivit gram: a matrix of layout {layout:?}");
    };
    let m = x.nrows();
    let mut out = vec![T::zero(); m * m];
    split_inner(&mut out, m, m, x.ncols(), |dst, range, par| {
        lower_gram(dst, x.subcols(range.start, range.len()), par);
    });
    mirror_lower(&mut out, m);
    Tensor::from_vec(out, (m, m), &Device::Cpu)
}

/// Rows below which [`lower_gram`] leaves a triangular product to faer whole.
const SPLIT_GRAM_ROWS: usize = 64;

/// The lower triangle of `X Xᵀ` into `dst` `[m, m]` (overwritten; the strict
/// upper triangle is left as it is). On `p ≥ 2` threads, by halves of the
/// rows `X = [X₁; X₂]` (`X₂ = [X₂ₐ; X₂ᵦ]`):
///
/// ```text
/// [ X₁X₁ᵀ      ·    ]      thread 1: X₁X₁ᵀ (lower) and X₂ₐX₁ᵀ,
/// [ X₂X₁ᵀ   X₂X₂ᵀ  ]      thread 2: X₂X₂ᵀ (lower) and X₂ᵦX₁ᵀ,
/// ```
///
/// each half on `p/2` threads (recursively): equal work on each side, where
/// faer's parallel triangular product splits unevenly.
fn lower_gram<T: WithDType + RealField>(dst: MatMut<'_, T>, x: MatRef<'_, T>, par: Par) {
    let (m, threads) = (x.nrows(), par.degree());
    if threads < 2 || m < 2 * SPLIT_GRAM_ROWS {
        triangular(
            dst,
            BlockStructure::TriangularLower,
            Accum::Replace,
            x,
            BlockStructure::Rectangular,
            x.transpose(),
            BlockStructure::Rectangular,
            T::from_f64(1.0),
            par,
        );
        return;
    }
    let (h, q) = (m / 2, (m - m / 2) / 2);
    let (top, bottom) = dst.split_at_row_mut(h);
    let (g11, _) = top.split_at_col_mut(h);
    let (g21, g22) = bottom.split_at_col_mut(h);
    let (g21a, g21b) = g21.split_at_row_mut(q);
    let (x1, x2) = (x.subrows(0, h), x.subrows(h, m - h));
    let (x2a, x2b) = (x2.subrows(0, q), x2.subrows(q, m - h - q));
    let half = |p: usize| if p < 2 { Par::Seq } else { Par::rayon(p) };
    let (pa, pb) = (half(threads / 2), half(threads - threads / 2));
    let one = T::from_f64(1.0);
    rayon::join(
        || {
            lower_gram(g11, x1, pa);
            gemm(g21a, Accum::Replace, x2a, x1.transpose(), one, pa);
        },
        || {
            lower_gram(g22, x2, pb);
            gemm(g21b, Accum::Replace, x2b, x1.transpose(), one, pb);
        },
    );
}

/// Copies the lower triangle of the row-major `a` `[m, m]` onto its upper
/// one, by tiles (the reads run down columns).
fn mirror_lower<T: Copy>(a: &mut [T], m: usize) {
    const TILE: usize = 64;
    for i0 in (0..m).step_by(TILE) {
        for j0 in (i0..m).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                for j in j0.max(i + 1)..(j0 + TILE).min(m) {
                    a[i * m + j] = a[j * m + i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// `V Vᵀ` equal to the plain product and exactly symmetric, f32 and f64,
    /// for sizes around the mirroring tiles and transposed operands.
    #[test]
    fn gram_equals_the_plain_product() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            // (32, 20_000): split along the inner dimension across threads;
            // (300, 200) and (301, 190): by halves of the rows on two threads
            for (m, k) in [
                (1, 3),
                (63, 5),
                (64, 64),
                (130, 20),
                (32, 20_000),
                (300, 200),
                (301, 190),
            ] {
                let v = Tensor::randn(0f64, 1., (m, k), &dev)?.to_dtype(dtype)?;
                for v in [v.clone(), v.t()?.contiguous()?.t()?] {
                    let got = gram(&v)?;
                    let want = v.matmul(&v.t()?)?;
                    let diff = (&got - want)?.abs()?.flatten_all()?.max(0)?;
                    let diff = diff.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    // f32 round-off of sums of k terms of size ~1
                    assert!(diff < 1e-5 * k as f64, "{m}×{k} ({dtype:?}): {diff}");
                    let asym = (&got - got.t()?)?.abs()?.flatten_all()?.max(0)?;
                    assert_eq!(asym.to_dtype(DType::F64)?.to_scalar::<f64>()?, 0.0);
                }
            }
        }
        Ok(())
    }
}
