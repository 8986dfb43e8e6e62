//! The `k` largest eigenpairs of a symmetric matrix given by its products:
//! thick-restart block Lanczos with full reorthogonalization.
//!
//! # Method
//!
//! The basis `Q_m = [Z_1, …, Z_j]` `[n, m]` is orthonormal and grows by blocks
//! of `b` columns; `W_m = G Q_m` is kept beside it. Each step
//!
//! ```text
//! Z_{j+1} = orth((I − Q_m Q_mᵀ) G Z_j),      W ← [W_m, G Z_{j+1}]   (one n×n by n×b product),
//! H_m = Q_mᵀ W_m = Y Θ Yᵀ,                    θ_1 ≤ … ≤ θ_m         (Rayleigh–Ritz, faer),
//! x_i = Q_m y_i,   r_i = G x_i − θ_i x_i = W_m y_i − θ_i Q_m y_i,
//! ```
//!
//! (`H_m` grows by the rows of the new block only) and it stops when the `k`
//! largest Ritz pairs have `‖r_i‖ ≤ tol · ‖G‖`, with
//! `‖G‖ ≥ max_i |θ_i|` (the Ritz values lie in the spectrum, so the test is at
//! least as strict as with the true norm), or when `m = n` (then `Q_m` is a
//! basis of the whole space and the Ritz pairs are the eigenpairs). When the
//! next block does not fit (`m + b > m_max`), the basis restarts thick from the
//! `k + b` largest Ritz vectors, `Q ← Q_m Y_keep`, `W ← W_m Y_keep`,
//! `H ← Y_keepᵀ H_m Y_keep`, and the
//! expansion continues from `(I − Q_m Q_mᵀ) G Z_j`: the Krylov–Schur relation
//! `G Q = Q H + Z Bᵀ` survives the restart, so no information about the wanted
//! pairs is lost.
//!
//! A residual bounds the error (Kahan, Kato–Temple, Davis–Kahan): some
//! eigenvalue `λ` has `|λ − θ_i| ≤ min(‖r_i‖, ‖r_i‖²/δ_i)` and the angle to its
//! eigenvector `sin ∠(x_i, u) ≤ ‖r_i‖/δ_i`, where `δ_i` is the gap between
//! `θ_i` and the rest of the spectrum.
//!
//! # Why this method
//!
//! - The products `G Z` are the cost. Blocks make them gemm: a dense `G` is
//!   read once per `b` vectors (at `n = 6400` an f64 `G` is 328 MB, so one
//!   product is bound by memory bandwidth and a block is nearly as cheap as a
//!   vector), and the caller's structured products batch over the block. The
//!   small products (projections, Ritz vectors) run on one thread.
//! - A block of `b ≥ k` columns finds eigenvalues of multiplicity up to `b`
//!   (degenerate top eigenvalues), which one-vector Krylov methods cannot.
//! - Full reorthogonalization (two block classical Gram–Schmidt passes, then
//!   a Householder QR of the block, `O(n m b)`, small next to the `O(n² b)`
//!   product)
//!   keeps `Q` orthonormal to working precision: no spurious copies of
//!   converged Ritz values.
//! - The explicit Rayleigh–Ritz step on the stored `W` works for any
//!   orthonormal basis, so restarts and the random columns that replace a
//!   breakdown need no bookkeeping, and the residual is available at every
//!   step. It converges to residuals at the rounding level, where LOBPCG's
//!   projected problem becomes ill-conditioned, and much faster than subspace
//!   iteration, whose rate is `θ_{b+1}/θ_k` instead of a Chebyshev rate.
//!
//! The start block and any replacement columns are Gaussian from a fixed seed,
//! so the same matrix gives bit-identical results.

use faer::linalg::matmul::matmul;
use faer::{Accum, Col, Mat, MatRef, Par};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::dense::{self_adjoint_eigen, thin_qr};

/// Seed of the start block and of replacement columns.
const SEED: u64 = 0x5eed_1a2c_2052;
/// Smallest block size `b` from [`PRODUCT_BOUND`] rows on. On the 6,336²
/// `mnist_mlp_c100` Gram (top 10) a product took about 38 ms at `b = 10` and
/// 47 ms at `b = 32` (one read of the 321 MB `G` dominates), and convergence
/// took 18 products at `b = 10`, 13 at 16 and 10 at 32; from `b = 48` on the
/// products cost more than they save.
const MIN_BLOCK: usize = 32;
/// Below [`PRODUCT_BOUND`] rows the orthogonalization and the Rayleigh–Ritz
/// steps cost more than the products, and small blocks are cheaper: top 10
/// of `n × n` matrices with eigenvalues `10⁻³ · 1.01ⁱ` took 30 / 62 / 170 ms
/// (`n` = 576 / 1152 / 2304) with `b = 10` against 72 / 118 / 240 ms with
/// `b = 32`.
const MIN_BLOCK_SMALL: usize = 8;
/// The Gram size from which the products dominate (an f64 `G` of 134 MB).
const PRODUCT_BOUND: usize = 4096;
/// `m_max = k + BASIS_BLOCKS · b`: with 4, the same products as with 6 but
/// half the Rayleigh–Ritz work; with 3, more restarts.
const BASIS_BLOCKS: usize = 4;
/// Fewest columns `G z` before giving up, `50` blocks of 32 (where `n` is
/// smaller, the full solver is cheap, so the attempt costs little).
const MIN_BUDGET_COLUMNS: usize = 1600;
/// A column whose norm drops below this fraction in its second Gram–Schmidt
/// pass lies in the span of the basis (Daniel–Gragg–Kaufman–Stewart).
const DGKS: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// The `k` largest eigenpairs, ascending.
#[derive(Debug)]
pub(crate) struct TopEig {
    /// `θ_{m−k+1} ≤ … ≤ θ_m`.
    pub evals: Vec<f64>,
    /// The Ritz vectors as columns `[n, k]`.
    pub evecs: Mat<f64>,
    /// Their images `G x_i` `[n, k]`.
    pub images: Mat<f64>,
    /// What the solver did.
    pub stats: Stats,
}

/// The work of one solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Block size `b`.
    pub block: usize,
    /// Products `G Z` with `n × b` blocks (the iterations).
    pub products: usize,
    /// Thick restarts.
    pub restarts: usize,
}

/// The `k` largest eigenpairs of the symmetric `G` `[n, n]` (`k` is clipped to
/// `n`), with residuals `‖G x − θ x‖ ≤ tol · max|θ|`, from the products
/// `product(Z) = G Z` with `n × b` blocks `Z` (its errors end the solve).
///
/// Blocks have `b = max(k, 8)` columns, `max(k, 32)` from 4096 rows on.
/// Gives up with `Err` (and its statistics) after `⌈max(n, 1600)/b⌉` products
/// (`⌈n/b⌉` products are `2n³` flops, about what the dense solver costs), or
/// if the projected eigenproblem fails.
pub(crate) fn top_eigenpairs<E>(
    n: usize,
    k: usize,
    tol: f64,
    mut product: impl FnMut(MatRef<'_, f64>) -> Result<Mat<f64>, E>,
) -> Result<Result<TopEig, Stats>, E> {
    let k = k.min(n);
    let min_block = if n >= PRODUCT_BOUND {
        MIN_BLOCK
    } else {
        MIN_BLOCK_SMALL
    };
    let block = k.max(min_block).min(n);
    let cap = (k + BASIS_BLOCKS * block).min(n);
    let keep = k + block;
    let budget = n.max(MIN_BUDGET_COLUMNS).div_ceil(block);
    let mut stats = Stats {
        block,
        products: 0,
        restarts: 0,
    };
    if k == 0 {
        return Ok(Ok(TopEig {
            evals: Vec::new(),
            evecs: Mat::zeros(n, 0),
            images: Mat::zeros(n, 0),
            stats,
        }));
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut q = Mat::<f64>::zeros(n, cap);
    let mut w = Mat::<f64>::zeros(n, cap);
    // H = Qᵀ W, lower triangle
    let mut h = Mat::<f64>::zeros(cap, cap);
    let mut m = 0;
    let mut next = Mat::from_fn(n, block, |_, _| rng.sample(StandardNormal));
    loop {
        let b = block.min(cap - m);
        append_orthonormal(&mut q, m, next.subcols(0, b), &mut rng);
        w.subcols_mut(m, b).copy_from(product(q.subcols(m, b))?);
        stats.products += 1;
        matmul(
            h.submatrix_mut(m, 0, b, m + b),
            Accum::Replace,
            w.subcols(m, b).transpose(),
            q.subcols(0, m + b),
            1.0,
            Par::Seq,
        );
        m += b;

        let (basis, images) = (q.subcols(0, m), w.subcols(0, m));
        let Ok((theta, Some(y))) = self_adjoint_eigen(h.submatrix(0, 0, m, m), true, Par::Seq)
        else {
            return Ok(Err(stats));
        };
        let norm = theta[0].abs().max(theta[m - 1].abs());
        let wanted = y.subcols(m - k, k);
        let x = mul(basis, wanted);
        let gx = mul(images, wanted);
        let converged = (0..k).all(|i| {
            let r = gx.col(i) - x.col(i) * theta[m - k + i];
            r.norm_l2() <= tol * norm
        });
        if converged || m == n {
            return Ok(Ok(TopEig {
                evals: theta[m - k..].to_vec(),
                evecs: x,
                images: gx,
                stats,
            }));
        }
        if stats.products >= budget {
            return Ok(Err(stats));
        }
        // the next Krylov block: G times the newest block
        next = images.subcols(m - b, b).to_owned();
        if m + block > cap && cap < n {
            // orthogonal to everything the restart drops, then restart thick:
            // Q ← Q Y, W ← W Y, H ← Yᵀ H Y (= diag θ up to rounding)
            next = project_out(next.as_ref(), basis);
            let kept = y.subcols(m - keep, keep);
            let (qy, wy) = (mul(basis, kept), mul(images, kept));
            let lower = h.submatrix(0, 0, m, m);
            let full = Mat::from_fn(m, m, |i, j| lower[(i.max(j), i.min(j))]);
            let hy = mul(kept.transpose(), mul(full.as_ref(), kept).as_ref());
            q.subcols_mut(0, keep).copy_from(&qy);
            w.subcols_mut(0, keep).copy_from(&wy);
            h.submatrix_mut(0, 0, keep, keep).copy_from(&hy);
            m = keep;
            stats.restarts += 1;
        }
    }
}

/// Writes the columns of `z` `[n, b]`, made orthonormal to the orthonormal
/// `q[:, ..m]` and to each other, into `q[:, m..m+b]`.
///
/// Two block Gram–Schmidt passes against `q[:, ..m]` (gemm), then a
/// Householder QR of the block, `Z'' = Q R` (orthonormal to rounding). Where a
/// pass cancels more than a factor `DGKS` (the second one against `q[:, ..m]`,
/// or the block's own, `|R_jj| < DGKS ‖z''_j‖`), the column is numerically in
/// the span of the others, and it and the columns after it are redone one by
/// one by [`orthonormal_part`] against all columns.
fn append_orthonormal(q: &mut Mat<f64>, m: usize, z: MatRef<'_, f64>, rng: &mut StdRng) {
    let basis = q.subcols(0, m);
    let once = project_out(z, basis);
    let twice = project_out(once.as_ref(), basis);
    let (thin, r) = thin_qr(twice.as_ref());
    let mut clean = true;
    for j in 0..z.ncols() {
        let norm = twice.col(j).norm_l2();
        clean = clean
            && r[(j, j)] != 0.0
            && norm >= DGKS * once.col(j).norm_l2()
            && r[(j, j)].abs() >= DGKS * norm;
        let column = if clean {
            thin.col(j).to_owned()
        } else {
            orthonormal_part(q.subcols(0, m + j), twice.col(j).to_owned(), rng)
        };
        q.col_mut(m + j).copy_from(&column);
    }
}

/// `a b` on one thread: the products besides `G Q` are too small for the
/// thread pool's wake-up latency.
fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    out
}

/// `v − B (Bᵀ v)` for the orthonormal columns `B` of `basis` (one classical
/// Gram–Schmidt pass), on one thread.
fn project_out(v: MatRef<'_, f64>, basis: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = v.to_owned();
    let coefficients = mul(basis.transpose(), v);
    matmul(
        out.as_mut(),
        Accum::Add,
        basis,
        coefficients.as_ref(),
        -1.0,
        Par::Seq,
    );
    out
}

/// `v` orthogonalized against the orthonormal columns of `basis` (two
/// classical Gram–Schmidt passes) and normalized. If it lies numerically in
/// their span (the second pass cancels more than a factor `DGKS`:
/// a breakdown, e.g. an invariant subspace) or is zero, a Gaussian column
/// takes its place.
fn orthonormal_part(basis: MatRef<'_, f64>, mut v: Col<f64>, rng: &mut StdRng) -> Col<f64> {
    loop {
        let once = project_out(v.as_mat(), basis);
        let twice = project_out(once.as_ref(), basis);
        let norm = twice.norm_l2();
        if norm > 0.0 && norm >= DGKS * once.norm_l2() {
            return twice.col(0) * (1.0 / norm);
        }
        v = Col::from_fn(basis.nrows(), |_| rng.sample(StandardNormal));
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Against faer's full decomposition, with tolerances from a-posteriori
    //! bounds: for an orthonormal `X` with residual `R = G X − X Θ`, the
    //! sorted `θ` lie within `‖R‖₂ ≤ ‖R‖_F` of `k` eigenvalues (Kahan), and a
    //! unit `x` with residual `r` is within `sin ∠ ≤ ‖r‖/δ` of the eigenvector
    //! of an eigenvalue separated by `δ` from the others (Davis–Kahan); the
    //! errors of the two solvers add up.

    use super::*;
    use faer::Side;

    /// The solver with the products of a dense `g`.
    pub(in crate::linalg) fn dense(
        g: MatRef<'_, f64>,
        k: usize,
        tol: f64,
    ) -> Result<TopEig, Stats> {
        let product = |z: MatRef<'_, f64>| Ok::<_, std::convert::Infallible>(g * z);
        match top_eigenpairs(g.nrows(), k, tol, product) {
            Ok(result) => result,
            Err(never) => match never {},
        }
    }

    /// `U diag(spectrum) Uᵀ` with `U` the Q factor of a Gaussian matrix.
    pub(in crate::linalg) fn with_spectrum(spectrum: &[f64], seed: u64) -> Mat<f64> {
        let n = spectrum.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let a = Mat::<f64>::from_fn(n, n, |_, _| rng.sample(StandardNormal));
        let u = a.qr().compute_Q();
        let scaled = Mat::from_fn(n, n, |i, j| u[(i, j)] * spectrum[j]);
        let g = &scaled * u.transpose();
        Mat::from_fn(n, n, |i, j| 0.5 * (g[(i, j)] + g[(j, i)]))
    }

    /// `Aᵀ A` for a Gaussian `A` `[rank, n]`: rank-deficient for `rank < n`,
    /// with exact zeros that come out as tiny eigenvalues of either sign.
    fn gram_of_rank(n: usize, rank: usize, seed: u64) -> Mat<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = Mat::<f64>::from_fn(rank, n, |_, _| rng.sample(StandardNormal));
        a.transpose() * &a
    }

    /// `‖G x_i − θ_i x_i‖` of each column.
    pub(in crate::linalg) fn residuals(
        g: MatRef<'_, f64>,
        evals: &[f64],
        x: MatRef<'_, f64>,
    ) -> Vec<f64> {
        let gx = g * x;
        (0..x.ncols())
            .map(|i| (gx.col(i) - x.col(i) * evals[i]).norm_l2())
            .collect()
    }

    /// Checks the top-`k` pairs `(evals, x)` (ascending) of `g` against faer's
    /// full decomposition: eigenvalues within the residual bounds, and
    /// eigenvectors up to sign where the gap bounds their angle below 0.1.
    pub(in crate::linalg) fn agrees_with_full(
        g: MatRef<'_, f64>,
        evals: &[f64],
        x: MatRef<'_, f64>,
    ) {
        let (n, k) = (g.nrows(), evals.len());
        let full = g.self_adjoint_eigen(Side::Lower).expect("faer converges");
        let all: Vec<f64> = (0..n).map(|i| full.S().column_vector()[i]).collect();
        let u = full.U().subcols(n - k, k);
        let r_partial = residuals(g, evals, x);
        let r_full = residuals(g, &all[n - k..], u);
        let frobenius = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>().sqrt();
        // the residual products themselves round at √n ε ‖G‖
        let norm = all[0].abs().max(all[n - 1].abs());
        let slack = 2.0 * (n as f64).sqrt() * f64::EPSILON * norm;
        let bound = frobenius(&r_partial) + frobenius(&r_full) + slack;
        // what tests/partial_eigen.rs assumes of the full solver
        let tol = 16.0 * (n as f64).sqrt() * f64::EPSILON;
        assert!(r_full.iter().all(|&r| r <= tol * norm), "faer: {r_full:?}");
        for i in 0..k {
            let (theta, lambda) = (evals[i], all[n - k + i]);
            assert!(
                (theta - lambda).abs() <= bound,
                "eigenvalue {i} of the top {k}: {theta} vs {lambda} (bound {bound:e})"
            );
            let gap = (0..n)
                .filter(|&j| j != n - k + i)
                .map(|j| (all[j] - lambda).abs())
                .fold(f64::INFINITY, f64::min)
                - bound;
            let angle = (r_partial[i] + r_full[i] + slack) / gap;
            if gap > 0.0 && angle < 0.1 {
                // the part of x orthogonal to u, accurate where 1 − cos² is not
                let cos = x.col(i).transpose() * u.col(i);
                let sin = (x.col(i) - u.col(i) * cos).norm_l2();
                assert!(sin <= angle, "eigenvector {i}: sin ∠ = {sin:e} > {angle:e}");
            }
        }
    }

    /// Runs the solver at the f64 tolerance and checks everything it promises.
    fn check(g: &Mat<f64>, k: usize) {
        let n = g.nrows();
        let tol = 16.0 * (n as f64).sqrt() * f64::EPSILON;
        let top = dense(g.as_ref(), k, tol).expect("converges");
        let k = k.min(n);
        assert_eq!(top.evals.len(), k);
        assert!(top.evals.windows(2).all(|w| w[0] <= w[1]), "ascending");
        // residual: the solver's bound plus the rounding of its product and of
        // the check's (each ≈ √n ε ‖G‖ = tol/16)
        let norm = g.norm_l2();
        for (i, r) in residuals(g.as_ref(), &top.evals, top.evecs.as_ref())
            .iter()
            .enumerate()
        {
            assert!(*r <= (1.0 + 2.0 / 16.0) * tol * norm, "residual {i}: {r:e}");
        }
        let gram = top.evecs.transpose() * &top.evecs;
        let drift = (0..k)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| (gram[(i, j)] - f64::from(u8::from(i == j))).abs())
            .fold(0.0, f64::max);
        assert!(drift <= tol, "orthonormality lost: {drift:e}");
        agrees_with_full(g.as_ref(), &top.evals, top.evecs.as_ref());
    }

    #[test]
    fn decaying_spectra_of_several_sizes() {
        for (n, k) in [(40, 5), (300, 1), (300, 10), (900, 10), (900, 30)] {
            let spectrum: Vec<f64> = (0..n).map(|i| 0.97f64.powi(n - i)).collect();
            check(&with_spectrum(&spectrum, n as u64), k as usize);
        }
    }

    #[test]
    fn clustered_and_repeated_top_eigenvalues() {
        let n = 400;
        let mut spectrum: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
        // a triple eigenvalue, a pair 1e-9 apart, and the k-th inside a cluster
        spectrum[n - 3..].copy_from_slice(&[5.0, 5.0, 5.0]);
        spectrum[n - 5..n - 3].copy_from_slice(&[3.0, 3.0 + 1e-9]);
        spectrum[n - 8..n - 5].copy_from_slice(&[2.0, 2.0, 2.0]);
        let g = with_spectrum(&spectrum, 1);
        for k in [1, 3, 4, 6, 7, 8] {
            check(&g, k);
        }
    }

    #[test]
    fn exact_zeros_and_tiny_negative_eigenvalues() {
        // rank 30 of 500: 470 rounding-level eigenvalues of both signs
        let g = gram_of_rank(500, 30, 2);
        for k in [10, 30, 40] {
            check(&g, k);
        }
        let mut spectrum = vec![0.0; 200];
        spectrum[..5].copy_from_slice(&[-1e-17, -3e-16, -1e-15, 0.0, 0.0]);
        spectrum[195..].copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        check(&with_spectrum(&spectrum, 3), 8);
    }

    #[test]
    fn degenerate_inputs() {
        // the zero matrix: every vector is an eigenvector
        let top = dense(Mat::<f64>::zeros(50, 50).as_ref(), 3, 1e-14).expect("converges");
        assert_eq!(top.evals, vec![0.0; 3]);
        // k = 0, and k ≥ n (clipped to n)
        let g = gram_of_rank(20, 4, 4);
        assert_eq!(dense(g.as_ref(), 0, 1e-14).expect("trivial").evals.len(), 0);
        check(&g, 25);
    }

    #[test]
    fn bit_identical_on_the_same_input() {
        let g = gram_of_rank(600, 300, 5);
        let a = dense(g.as_ref(), 10, 1e-13).expect("converges");
        let b = dense(g.as_ref(), 10, 1e-13).expect("converges");
        assert_eq!(a.evals, b.evals);
        assert!((0..600)
            .all(|i| (0..10).all(|j| a.evecs[(i, j)].to_bits() == b.evecs[(i, j)].to_bits())));
        assert_eq!(a.stats, b.stats);
    }
}
