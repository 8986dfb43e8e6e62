//! Solves with the damped Gram matrix `G̃ + δI`, by Cholesky on the host in f64.

use candle_core::{DType, Device, Tensor};
use faer::Mat;

use super::dense::cholesky_solve_in_place;

use crate::error::{Error, Result};

/// `c = (G̃ + δ I)⁻¹ r` for the symmetric positive semi-definite `gram`
/// `G̃` `[n, n]`, `δ > 0` and `rhs` `r` `[n]`, returned in `rhs`'s dtype and
/// device.
///
/// `G̃ + δI` is factorized as `L Lᵀ` (faer's Cholesky on one thread, `n³/3`
/// multiply-adds, about a ninth of a symmetric eigendecomposition with
/// eigenvectors) from an f64 copy of its lower triangle on the host, then
/// `L Lᵀ c = r` is solved by two triangular solves. The copies to and from
/// the host are the only ones.
///
/// # Errors
/// [`Error::NonFinite`] if `gram` or `rhs` holds NaN or ±∞;
/// [`Error::Cholesky`] if `G̃ + δI` is not numerically positive definite
/// (`δ` below the rounding level of `G̃`).
pub(crate) fn solve_shifted(gram: &Tensor, delta: f64, rhs: &Tensor) -> Result<Tensor> {
    let n = gram.dim(0)?;
    let host = |t: &Tensor, what: &'static str| -> Result<Vec<f64>> {
        let values = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        match values.iter().find(|v| !v.is_finite()) {
            Some(&value) => Err(Error::NonFinite { what, value }),
            None => Ok(values),
        }
    };
    let g = host(gram, "the Gram matrix")?;
    let r = host(rhs, "the Gram-space gradient Vᵀḡ")?;
    let mut shifted = Mat::from_fn(n, n, |i, j| g[i * n + j] + if i == j { delta } else { 0.0 });
    let mut c = Mat::from_fn(n, 1, |i, _| r[i]);
    cholesky_solve_in_place(shifted.as_mut(), c.as_mut())
        .map_err(|_| Error::Cholesky { size: n, delta })?;
    let c: Vec<f64> = (0..n).map(|i| c[(i, 0)]).collect();
    Ok(Tensor::from_vec(c, n, &Device::Cpu)?
        .to_dtype(rhs.dtype())?
        .to_device(rhs.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(G̃ + δI) c = r` holds to rounding for a rank-deficient `G̃ = AᵀA`.
    #[test]
    fn solves_the_shifted_system() -> Result<()> {
        let (n, rank, delta) = (7, 3, 0.3);
        let a: Vec<f64> = (0..rank * n).map(|i| ((i * 5 % 11) as f64) - 5.0).collect();
        let g: Vec<f64> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..rank).map(|k| a[k * n + i] * a[k * n + j]).sum()
            })
            .collect();
        let r: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let dev = Device::Cpu;
        let c = solve_shifted(
            &Tensor::from_vec(g.clone(), (n, n), &dev)?,
            delta,
            &Tensor::from_vec(r.clone(), n, &dev)?,
        )?
        .to_vec1::<f64>()?;
        for i in 0..n {
            let lhs: f64 = (0..n).map(|j| g[i * n + j] * c[j]).sum::<f64>() + delta * c[i];
            assert!((lhs - r[i]).abs() < 1e-12, "row {i}: {lhs} vs {}", r[i]);
        }
        Ok(())
    }

    /// A negative shift that leaves the matrix indefinite is reported.
    #[test]
    fn indefinite_is_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let g = Tensor::eye(3, DType::F64, &dev)?;
        let r = Tensor::ones(3, DType::F64, &dev)?;
        assert!(matches!(
            solve_shifted(&g, -2.0, &r),
            Err(Error::Cholesky { size: 3, .. })
        ));
        Ok(())
    }
}
