//! Symmetric eigendecomposition of Gram matrices (faer), with its guards.

use candle_core::{DType, Device, Tensor, WithDType};
use faer::traits::RealField;
use faer::{MatRef, Side};

use crate::error::{Error, Result};

/// Eigenpairs of a symmetric matrix: `A = U diag(λ) Uᵀ`, `λ` ascending.
#[derive(Debug)]
pub(crate) struct SymEig {
    /// Eigenvalues, ascending.
    pub evals: Vec<f64>,
    /// Eigenvectors as columns `[n, n]`, in the input's dtype and device.
    pub evecs: Tensor,
}

/// Eigenvalues of the symmetric `a` `[n, n]` and `zeros` more zeros, ascending,
/// as a tensor of `a`'s dtype.
///
/// # Errors
/// [`Error::NonFinite`] if `a` holds NaN or ±∞; [`Error::EigenSolver`].
pub(crate) fn eigvalsh(a: &Tensor, zeros: usize) -> Result<Tensor> {
    let mut evals = match a.dtype() {
        DType::F32 => solve::<f32>(a, false)?.0,
        DType::F64 => solve::<f64>(a, false)?.0,
        other => return Err(Error::UnsupportedDType(other)),
    };
    evals.extend(std::iter::repeat_n(0.0, zeros));
    evals.sort_by(f64::total_cmp);
    Ok(Tensor::new(evals.as_slice(), a.device())?.to_dtype(a.dtype())?)
}

/// Eigenvalues (ascending) and eigenvectors of the symmetric `a` `[n, n]`.
///
/// # Errors
/// As [`eigvalsh`].
pub(crate) fn eigh(a: &Tensor) -> Result<SymEig> {
    let (evals, evecs) = match a.dtype() {
        DType::F32 => solve::<f32>(a, true)?,
        DType::F64 => solve::<f64>(a, true)?,
        other => return Err(Error::UnsupportedDType(other)),
    };
    Ok(SymEig {
        evals,
        evecs: evecs
            .expect("asked for eigenvectors")
            .to_device(a.device())?,
    })
}

fn solve<T: RealField + WithDType>(
    a: &Tensor,
    vectors: bool,
) -> Result<(Vec<f64>, Option<Tensor>)> {
    let n = a.dim(0)?;
    let data = a.flatten_all()?.to_vec1::<T>()?;
    if let Some(bad) = data.iter().map(|v| v.to_f64()).find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "the Gram matrix",
            value: bad,
        });
    }
    let mat = MatRef::from_row_major_slice(&data, n, n);
    let failed = |_| Error::EigenSolver { size: n };
    if !vectors {
        let evals = mat.self_adjoint_eigenvalues(Side::Lower).map_err(failed)?;
        return Ok((evals.iter().map(|v| v.to_f64()).collect(), None));
    }
    let evd = mat.self_adjoint_eigen(Side::Lower).map_err(failed)?;
    let s = evd.S().column_vector();
    let evals = (0..n).map(|i| s[i].to_f64()).collect();
    let u = evd.U();
    let flat: Vec<T> = (0..n * n).map(|k| u[(k / n, k % n)]).collect();
    Ok((evals, Some(Tensor::from_vec(flat, (n, n), &Device::Cpu)?)))
}
