//! Tests of the block Lanczos solver (and the test matrices `linalg`'s tests
//! share), against faer's full decomposition, with tolerances from a-posteriori
//! bounds: for an orthonormal `X` with residual `R = G X − X Θ`, the
//! sorted `θ` lie within `‖R‖₂ ≤ ‖R‖_F` of `k` eigenvalues (Kahan), and a
//! unit `x` with residual `r` is within `sin ∠ ≤ ‖r‖/δ` of the eigenvector
//! of an eigenvalue separated by `δ` from the others (Davis–Kahan); the
//! errors of the two solvers add up.

use super::*;
use faer::Side;

/// The solver with the products of a dense `g`.
pub(in crate::linalg) fn dense(g: MatRef<'_, f64>, k: usize, tol: f64) -> Result<TopEig, Stats> {
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
pub(in crate::linalg) fn agrees_with_full(g: MatRef<'_, f64>, evals: &[f64], x: MatRef<'_, f64>) {
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
    assert!(
        (0..600).all(|i| (0..10).all(|j| a.evecs[(i, j)].to_bits() == b.evecs[(i, j)].to_bits()))
    );
    assert_eq!(a.stats, b.stats);
}
