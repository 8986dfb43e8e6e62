//! Symmetric eigendecomposition of Gram matrices, with its guards: the full
//! one (faer) and a partial one for the few largest eigenpairs ([`lanczos`]).

mod dense;
pub(crate) mod host;
mod lanczos;
mod shifted;

pub(crate) use shifted::ShiftedCholesky;

use std::fmt;

use candle_core::{DType, Device, Tensor, WithDType};
use faer::traits::RealField;
use faer::{Mat, MatRef, Par};

use crate::error::{Error, Result};

/// Eigenpairs of a symmetric matrix: `A = U diag(λ) Uᵀ`, `λ` ascending.
#[derive(Debug)]
pub(crate) struct SymEig {
    /// Eigenvalues, ascending.
    pub evals: Vec<f64>,
    /// Eigenvectors as columns `[n, n]` (`[n, k]` from [`eigh_top`]), in the
    /// input's dtype and device.
    pub evecs: Tensor,
    /// `G̃ x_i` as columns `[n, k]`, where the solver had them ([`eigh_top`]).
    pub images: Option<Tensor>,
}

/// Which symmetric eigensolver computes the kept eigenpairs of a group's Gram
/// matrix `G̃` `[n, n]` (`n = C_eff·N_g`).
///
/// The full solver (faer's dense `self_adjoint_eigen`, `O(n³)`, on the formed
/// `G̃`) computes all `n` eigenpairs. The partial solver (thick-restart block
/// Lanczos with full reorthogonalization, in f64) computes only the `k`
/// largest, from products `G̃ Z`. Where the loss factor has many columns per
/// sample, these never form `G̃` for layers applied once per sample: such a
/// layer (inputs `a_n`, output signals `b_{cn}`) gives
/// `(G̃_l z)[c,n] = b_{cn} · Σ_{n'} K_{nn'} Σ_{c'} z[c',n'] b_{c'n'}` with
/// `K = A Aᵀ + 1`, `O(C N O + N² O)` per vector against `O((C N)² O)` to form
/// its block (chosen for about 400 vectors a solve: from `C ≈ 50` at
/// `N = 64`); other layers contribute their formed Gram blocks. It finds
/// them to
///
/// ```text
/// G̃ x_i = θ_i x_i + r_i,   ‖r_i‖ ≤ tol · ‖G̃‖,   i = n−k+1, …, n,
/// tol = max(ε, 16 √n ε_64)   (ε of the Gram's dtype; the second term is the
///                             rounding floor of the f64 products G̃ Z),
/// ```
///
/// with blocks of `b = max(k, 8)` vectors (`max(k, 32)` from `n = 4096` on).
/// Structured products run on f64 copies of the layer factors (exact copies
/// of an f32 model's); formed blocks are those of the full solver, in the
/// model's dtype, multiplied in f64.
/// It needs a criterion that keeps some of the `k` largest eigenvalues and
/// decides from them alone, [`crate::Criterion::top_k`]`(k)` or
/// [`crate::Criterion::top_k_above`]`(k, x)`, which then keep exactly what they keep
/// from the whole spectrum (the exact cross-entropy factor's omitted zeros
/// included, also when `k` exceeds the number of positive eigenvalues).
///
/// A residual `r` bounds the error of an eigenvalue by `min(‖r‖, ‖r‖²/δ)` and
/// the angle of its eigenvector by `‖r‖/δ` (`δ` the gap to the rest of the
/// spectrum), so the two solvers agree to the rounding level; for an f32 Gram
/// the partial solver is the more accurate one. Eigenvectors of (nearly)
/// repeated eigenvalues are some orthonormal basis of their eigenspace with
/// either solver, and signs are arbitrary. Same input, same bits: the start
/// block comes from a fixed seed. If the partial solver has not converged
/// after `⌈max(n, 1600)/b⌉` products (`⌈n/b⌉` of them cost about what the
/// full solver does), a warning goes to `log` and the full solver runs instead.
///
/// # When the partial solver pays
///
/// The full solver costs `O(n³)`, the partial one `O(n² b)` per product of
/// `G̃` with a block of `b` vectors and `O(n b²)` to orthogonalize it.
/// [`Eigensolver::Auto`] takes the partial solver for `n ≥ 500` and
/// `k ≤ n/50`, where it measured faster (`docs/performance.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eigensolver {
    /// The partial solver when the criterion bounds `k`, `n ≥ 500` and
    /// `k ≤ n/50`; the full one otherwise.
    #[default]
    Auto,
    /// Always the full solver.
    Full,
    /// Always the partial solver; a criterion that needs the whole spectrum
    /// ([`crate::Criterion::all`], [`crate::Criterion::above`], [`crate::Criterion::custom`]) is
    /// refused with [`Error::PartialEigensolver`].
    Partial,
}

/// The full solver runs on all threads from this size on, on one below
/// (see [`dense`]).
const PARALLEL_EIGEN_SIZE: usize = 1536;

/// [`Eigensolver::Auto`] runs the partial solver from this Gram size on.
const AUTO_MIN_SIZE: usize = 500;
/// … and for `k ≤ n / AUTO_SIZE_PER_PAIR`.
const AUTO_SIZE_PER_PAIR: usize = 50;

impl Eigensolver {
    /// The `k` of the partial solver for an `n × n` Gram matrix whose
    /// `criterion` keeps at most the `top` largest eigenvalues (`None`: it
    /// needs the whole spectrum), or `None` for the full solver.
    ///
    /// # Errors
    /// [`Error::PartialEigensolver`] naming `criterion` for
    /// [`Eigensolver::Partial`] with a criterion that needs the full spectrum.
    pub(crate) fn partial_k(
        self,
        n: usize,
        top: Option<usize>,
        criterion: &dyn fmt::Debug,
    ) -> Result<Option<usize>> {
        Ok(match (self, top) {
            (Eigensolver::Partial, None) => {
                return Err(Error::PartialEigensolver(format!("{criterion:?}")))
            }
            (Eigensolver::Full, _) | (Eigensolver::Auto, None) => None,
            (Eigensolver::Partial, Some(k)) => Some(k.min(n)),
            (Eigensolver::Auto, Some(k)) => {
                (n >= AUTO_MIN_SIZE && k.saturating_mul(AUTO_SIZE_PER_PAIR) <= n).then_some(k)
            }
        })
    }
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
    let len = evals.len();
    host::to_device(evals, len, a.dtype(), a.device())
}

/// Eigenvalues (ascending) and eigenvectors of the symmetric `a` `[n, n]`.
///
/// # Errors
/// As [`eigvalsh`].
pub(crate) fn eigh(a: &Tensor) -> Result<SymEig> {
    match a.dtype() {
        DType::F32 => eigh_of::<f32>(a),
        DType::F64 => eigh_of::<f64>(a),
        other => Err(Error::UnsupportedDType(other)),
    }
}

fn eigh_of<T: RealField + WithDType>(a: &Tensor) -> Result<SymEig> {
    let n = a.dim(0)?;
    let (evals, Some(evecs)) = solve::<T>(a, true)? else {
        return Err(Error::EigenSolver { size: n });
    };
    Ok(SymEig {
        evals,
        evecs: host::to_device(evecs, (n, n), a.dtype(), a.device())?,
        images: None,
    })
}

/// The outcome of the partial solver.
#[derive(Debug)]
pub(crate) enum Partial {
    /// The `k` largest eigenpairs (ascending, eigenvectors `[n, k]`).
    Converged(SymEig, Work),
    /// No convergence within the budget: use [`eigh`].
    Unconverged(Work),
}

/// The work of a partial solve, for `verbose`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Work(lanczos::Stats);

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(
            f,
            "{} products with {}-column blocks, {} restarts",
            s.products, s.block, s.restarts
        )
    }
}

/// The `k` largest eigenpairs of a symmetric `G̃` `[n, n]` (all `n` if
/// `k ≥ n`), by [`lanczos`] in f64 from the products `product(Z) = Z G̃`
/// with blocks of f64 rows `Z` `[b, n]`; eigenvectors and their images in
/// `dtype`. See [`Eigensolver`] for the tolerance.
///
/// # Errors
/// [`Error::NonFinite`] if a product holds NaN or ±∞, the errors of
/// `product`, [`Error::UnsupportedDType`].
pub(crate) fn eigh_top(
    n: usize,
    k: usize,
    dtype: DType,
    device: &Device,
    mut product: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Partial> {
    let eps = match dtype {
        DType::F32 => f64::from(f32::EPSILON),
        DType::F64 => f64::EPSILON,
        other => return Err(Error::UnsupportedDType(other)),
    };
    // the block Z [n, b] travels as its rows Zᵀ [b, n], and so does Z G̃
    let as_rows = |z: MatRef<'_, f64>| -> Result<Tensor> {
        let rows: Vec<f64> = (0..z.ncols())
            .flat_map(|j| z.col(j).iter().copied())
            .collect();
        host::to_device(rows, (z.ncols(), n), DType::F64, device)
    };
    let as_columns = |t: &Tensor| -> Result<Mat<f64>> {
        let values = host::to_host::<f64>(t, "the Gram matrix")?;
        Ok(Mat::from_fn(n, t.dim(0)?, |i, j| values[j * n + i]))
    };
    let solved = lanczos::top_eigenpairs(n, k, tolerance(eps, n), |z| {
        as_columns(&product(&as_rows(z)?)?)
    })?;
    Ok(match solved {
        Ok(top) => {
            let columns = |m: &Mat<f64>| -> Result<Tensor> {
                let cols = m.ncols();
                let values = (0..n * cols).map(|x| m[(x / cols, x % cols)]).collect();
                host::to_device::<f64>(values, (n, cols), dtype, device)
            };
            Partial::Converged(
                SymEig {
                    evals: top.evals,
                    evecs: columns(&top.evecs)?,
                    images: Some(columns(&top.images)?),
                },
                Work(top.stats),
            )
        }
        Err(stats) => Partial::Unconverged(Work(stats)),
    })
}

/// The residual tolerance `max(ε, 16 √n ε_64)` of an `n × n` matrix whose
/// dtype has machine epsilon `eps`: products in f64 carry rounding errors of
/// about `√n ε_64 ‖G‖`, below which no residual can be certified.
fn tolerance(eps: f64, n: usize) -> f64 {
    eps.max(16.0 * (n as f64).sqrt() * f64::EPSILON)
}

/// The eigenvalues of `a` `[n, n]` (ascending) and, if `vectors`, its
/// eigenvectors as the columns of a row-major `[n, n]`, on the host in `T`.
fn solve<T: RealField + WithDType>(
    a: &Tensor,
    vectors: bool,
) -> Result<(Vec<f64>, Option<Vec<T>>)> {
    let n = a.dim(0)?;
    // A/s has its largest entry in [1/2, 1): dividing by a power of two is
    // exact and keeps tiny (subnormal) entries out of the solver, which does
    // not converge on them; the eigenvalues are s·λ(A/s)
    let data = host::to_host::<T>(a, "the Gram matrix")?;
    let largest = data.iter().fold(0f64, |m, v| m.max(v.to_f64().abs()));
    let s = if largest > 0.0 {
        2f64.powi(largest.log2().floor() as i32 + 1)
    } else {
        1.0
    };
    let data: Vec<T> = data.iter().map(|v| T::from_f64(v.to_f64() / s)).collect();
    let mat = MatRef::from_row_major_slice(&data, n, n);
    // faer reads the lower triangle of `a`
    let par = if n < PARALLEL_EIGEN_SIZE {
        Par::Seq
    } else {
        Par::rayon(0)
    };
    let (values, u) =
        dense::self_adjoint_eigen(mat, vectors, par).map_err(|_| Error::EigenSolver { size: n })?;
    let evals = values.iter().map(|v| s * v.to_f64()).collect();
    let Some(u) = u else {
        return Ok((evals, None));
    };
    let flat: Vec<T> = (0..n * n).map(|k| u[(k / n, k % n)]).collect();
    Ok((evals, Some(flat)))
}

#[cfg(test)]
mod tests {
    use faer::Mat;

    use super::lanczos::tests::{agrees_with_full, residuals, with_spectrum};
    use super::*;

    /// `g` as a row-major tensor of `dtype`, and the matrix that tensor holds
    /// (rounded to `dtype`) back in f64.
    fn as_tensor(g: &Mat<f64>, dtype: DType) -> (Tensor, Mat<f64>) {
        let n = g.nrows();
        let flat: Vec<f64> = (0..n * n).map(|i| g[(i / n, i % n)]).collect();
        let t = Tensor::from_vec(flat, (n, n), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("a tensor");
        let back = t
            .to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("its values");
        (t, Mat::from_fn(n, n, |i, j| back[i * n + j]))
    }

    /// The partial solver with the products of the symmetric `t`.
    fn top(t: &Tensor, k: usize) -> Result<Partial> {
        let dense = t.to_dtype(DType::F64)?;
        eigh_top(t.dim(0)?, k, t.dtype(), t.device(), |z| {
            Ok(z.matmul(&dense)?)
        })
    }

    fn converged(t: &Tensor, k: usize) -> SymEig {
        match top(t, k).expect("no error") {
            Partial::Converged(eig, _) => eig,
            Partial::Unconverged(work) => panic!("no convergence after {work}"),
        }
    }

    fn columns(evecs: &Tensor) -> Mat<f64> {
        let rows = evecs
            .to_dtype(DType::F64)
            .and_then(|t| t.to_vec2::<f64>())
            .expect("eigenvectors");
        Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
    }

    #[test]
    fn f32_and_f64_grams_against_the_f64_decomposition() {
        let n = 300;
        let mut spectrum: Vec<f64> = (0..n).map(|i| 0.95f64.powi((n - i) as i32)).collect();
        spectrum[..3].copy_from_slice(&[-1e-9, 0.0, 0.0]);
        spectrum[n - 2] = spectrum[n - 1];
        let g = with_spectrum(&spectrum, 11);
        for (dtype, eps) in [
            (DType::F32, f64::from(f32::EPSILON)),
            (DType::F64, f64::EPSILON),
        ] {
            let (t, rounded) = as_tensor(&g, dtype);
            let eig = converged(&t, 10);
            assert_eq!(eig.evecs.dims(), &[n, 10]);
            assert_eq!(eig.evecs.dtype(), dtype);
            let x = columns(&eig.evecs);
            // the solver's bound, the eigenvectors' rounding to the dtype
            // (‖(G − θ) δx‖ ≤ ‖G‖ ε/2) and the check's f64 products
            let norm = rounded.norm_l2();
            let bound =
                (tolerance(eps, n) + eps / 2.0 + 2.0 * (n as f64).sqrt() * f64::EPSILON) * norm;
            for r in residuals(rounded.as_ref(), &eig.evals, x.as_ref()) {
                assert!(r <= bound, "{dtype:?}: residual {r:e} > {bound:e}");
            }
            agrees_with_full(rounded.as_ref(), &eig.evals, x.as_ref());
            // the images G x, up to the rounding of the products and to dtype
            let images = columns(eig.images.as_ref().expect("images"));
            let gx = &rounded * &x;
            let slack = (eps + 2.0 * (n as f64).sqrt() * f64::EPSILON) * norm;
            assert!((images - gx).norm_max() <= slack, "{dtype:?}: images");
        }
    }

    #[test]
    fn refuses_non_finite_grams() {
        let t = Tensor::new(&[[1f32, f32::NAN], [f32::NAN, 1.0]], &Device::Cpu).expect("tensor");
        assert!(matches!(top(&t, 1), Err(Error::NonFinite { .. })));
    }

    #[test]
    fn auto_picks_the_partial_solver_for_few_pairs_of_a_large_gram() {
        let k = |solver: Eigensolver, n, top| solver.partial_k(n, top, &"c").expect("allowed");
        assert_eq!(k(Eigensolver::Auto, 499, Some(5)), None);
        assert_eq!(k(Eigensolver::Auto, 500, Some(10)), Some(10));
        assert_eq!(k(Eigensolver::Auto, 999, Some(20)), None);
        assert_eq!(k(Eigensolver::Auto, 2000, Some(41)), None);
        assert_eq!(k(Eigensolver::Auto, 6400, None), None);
        assert_eq!(k(Eigensolver::Full, 6400, Some(10)), None);
        assert_eq!(k(Eigensolver::Partial, 5, Some(10)), Some(5));
        assert!(matches!(
            Eigensolver::Partial.partial_k(100, None, &"Criterion::above(0.1)"),
            Err(Error::PartialEigensolver(name)) if name == "\"Criterion::above(0.1)\""
        ));
    }
}
