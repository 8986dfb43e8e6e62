//! Dense factorizations with the parallelism chosen by the caller.
//!
//! faer's convenience methods (`Mat::qr`, `self_adjoint_eigen`) run with the
//! global parallelism, by default all of rayon's threads, whose barriers cost
//! more than they save on small matrices (`docs/performance.md`). These run
//! faer's same algorithms with an explicit `Par`.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::cholesky::llt::factor::{LltError, LltRegularization};
use faer::linalg::evd::{self, ComputeEigenvectors, EvdError};
use faer::linalg::householder;
use faer::linalg::qr::no_pivoting::factor as qr;
use faer::traits::RealField;
use faer::{Conj, Mat, MatMut, MatRef, Par};

/// The thin Householder QR `Z = Q R` of `z` `[n, b]`, `n ≥ b`, on one thread:
/// `Q` `[n, b]` with orthonormal columns and `R` `[b, b]` upper triangular.
pub(super) fn thin_qr(z: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
    let (n, b) = z.shape();
    let mut factors = z.to_owned();
    let block = qr::recommended_block_size::<f64>(n, b);
    let mut coefficients = Mat::zeros(block, b);
    qr::qr_in_place(
        factors.as_mut(),
        coefficients.as_mut(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(qr::qr_in_place_scratch::<f64>(
            n,
            b,
            block,
            Par::Seq,
            Default::default(),
        ))),
        Default::default(),
    );
    let r = Mat::from_fn(b, b, |i, j| if i <= j { factors[(i, j)] } else { 0.0 });
    let mut q = Mat::identity(n, b);
    householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        factors.as_ref(),
        coefficients.as_ref(),
        Conj::No,
        q.as_mut(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(
            householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(
                n, block, b,
            ),
        )),
    );
    (q, r)
}

/// Eigenvalues (ascending) and, if `vectors`, eigenvectors of the symmetric
/// `h` `[m, m]`, read from its lower triangle.
pub(super) fn self_adjoint_eigen<T: RealField>(
    h: MatRef<'_, T>,
    vectors: bool,
    par: Par,
) -> Result<(Vec<T>, Option<Mat<T>>), EvdError> {
    let m = h.nrows();
    let mut u = vectors.then(|| Mat::zeros(m, m));
    let mut s = Diag::zeros(m);
    let compute = if vectors {
        ComputeEigenvectors::Yes
    } else {
        ComputeEigenvectors::No
    };
    evd::self_adjoint_evd(
        h,
        s.as_mut(),
        u.as_mut().map(|u| u.as_mut()),
        par,
        MemStack::new(&mut MemBuffer::new(evd::self_adjoint_evd_scratch::<T>(
            m,
            compute,
            par,
            Default::default(),
        ))),
        Default::default(),
    )?;
    let values = (0..m).map(|i| s.column_vector()[i].clone()).collect();
    Ok((values, u))
}

/// Overwrites the lower triangle of the symmetric positive definite `a` with
/// its Cholesky factor `L` (`A = L Lᵀ`), on one thread.
pub(super) fn cholesky_in_place(mut a: MatMut<'_, f64>) -> Result<(), LltError> {
    let n = a.nrows();
    llt::factor::cholesky_in_place(
        a.as_mut(),
        LltRegularization::default(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(
            llt::factor::cholesky_in_place_scratch::<f64>(n, Par::Seq, Default::default()),
        )),
        Default::default(),
    )?;
    Ok(())
}

/// Solves `L Lᵀ x = b` in place for the Cholesky factor `l` of
/// [`cholesky_in_place`] and the right-hand sides `b` (overwritten by `x`),
/// on one thread.
pub(super) fn cholesky_solve_in_place(l: MatRef<'_, f64>, b: MatMut<'_, f64>) {
    let (n, rhs) = (l.nrows(), b.ncols());
    llt::solve::solve_in_place_with_conj(
        l,
        Conj::No,
        b,
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(
            llt::solve::solve_in_place_scratch::<f64>(n, rhs, Par::Seq),
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Side;

    /// The same factorizations as faer's convenience methods.
    #[test]
    fn agree_with_faers_methods() {
        let z = Mat::<f64>::from_fn(300, 20, |i, j| ((i * 7 + j * 13) % 17) as f64 - 8.0);
        let (q, r) = thin_qr(z.as_ref());
        assert!((&q * &r - &z).norm_max() < 1e-12);
        assert!((q.transpose() * &q - Mat::<f64>::identity(20, 20)).norm_max() < 1e-14);
        assert!((0..20).all(|j| (j + 1..20).all(|i| r[(i, j)] == 0.0)));
        let h = z.transpose() * &z;
        let (values, u) = self_adjoint_eigen(h.as_ref(), true, Par::Seq).expect("converges");
        let u = u.expect("eigenvectors");
        let want = h.self_adjoint_eigen(Side::Lower).expect("converges");
        for (i, v) in values.iter().enumerate() {
            assert!((v - want.S().column_vector()[i]).abs() < 1e-9 * values[19]);
        }
        let scaled = Mat::from_fn(20, 20, |i, j| u[(i, j)] * values[j]);
        assert!((&h - &scaled * u.transpose()).norm_max() < 1e-9 * values[19]);
    }
}
