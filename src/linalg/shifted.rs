//! Solves with the damped Gram matrix `G̃ + δI`, by Cholesky on the host in f64.

use candle_core::Tensor;
use faer::Mat;

use super::dense::{cholesky_in_place, cholesky_solve_in_place};
use super::host::{to_device, to_host};

use crate::error::{Error, Result};

/// The Cholesky factorization `G̃ + δ I = L Lᵀ` of a symmetric positive
/// semi-definite Gram matrix `G̃` `[n, n]` shifted by `δ > 0`, for solves
/// `c = (G̃ + δ I)⁻¹ r` with as many right-hand sides as wanted.
///
/// `L` is faer's Cholesky factor on one thread (`n³/3` multiply-adds, about a
/// ninth of a symmetric eigendecomposition with eigenvectors) of an f64 copy
/// of the lower triangle on the host; a solve is two triangular solves
/// (`n²` multiply-adds each). The copies to and from the host are the only
/// ones.
#[derive(Debug, Clone)]
pub(crate) struct ShiftedCholesky {
    /// `L` in the lower triangle.
    factor: Mat<f64>,
    delta: f64,
}

impl ShiftedCholesky {
    /// Factorizes `gram + delta · I`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if `gram` holds NaN or ±∞; [`Error::Cholesky`]
    /// if `G̃ + δI` is not numerically positive definite (`δ` below the
    /// rounding level of `G̃`).
    pub fn new(gram: &Tensor, delta: f64) -> Result<Self> {
        let n = gram.dim(0)?;
        let g = to_host::<f64>(gram, "the Gram matrix")?;
        let mut factor = Mat::from_fn(n, n, |i, j| g[i * n + j] + if i == j { delta } else { 0.0 });
        cholesky_in_place(factor.as_mut()).map_err(|_| Error::Cholesky { size: n, delta })?;
        Ok(Self { factor, delta })
    }

    /// The shift `δ`.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// `c = (G̃ + δ I)⁻¹ r` for `rhs` `r` `[n]`, in `rhs`'s dtype and device.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if `rhs` holds NaN or ±∞.
    pub fn solve(&self, rhs: &Tensor) -> Result<Tensor> {
        let n = self.factor.nrows();
        let r = to_host::<f64>(rhs, "the Gram-space gradient Vᵀḡ")?;
        let mut c = Mat::from_fn(n, 1, |i, _| r[i]);
        cholesky_solve_in_place(self.factor.as_ref(), c.as_mut());
        let c: Vec<f64> = (0..n).map(|i| c[(i, 0)]).collect();
        to_device(c, n, rhs.dtype(), rhs.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
        let c = ShiftedCholesky::new(&Tensor::from_vec(g.clone(), (n, n), &dev)?, delta)?
            .solve(&Tensor::from_vec(r.clone(), n, &dev)?)?
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
        assert!(matches!(
            ShiftedCholesky::new(&g, -2.0),
            Err(Error::Cholesky { size: 3, .. })
        ));
        Ok(())
    }
}
