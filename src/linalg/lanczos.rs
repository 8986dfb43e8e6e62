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
//!   read once per `b` vectors (a large `G` makes one product bound by memory
//!   bandwidth, so a block is nearly as cheap as a vector), and the caller's structured products batch over the block. The
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
/// Smallest block size `b` from [`PRODUCT_BOUND`] rows on, where one read of
/// `G` dominates a product and larger blocks converge in fewer products
/// (`docs/performance.md`).
const MIN_BLOCK: usize = 32;
/// Below [`PRODUCT_BOUND`] rows the orthogonalization and the Rayleigh–Ritz
/// steps cost more than the products, and small blocks are cheaper.
const MIN_BLOCK_SMALL: usize = 8;
/// The Gram size from which the products dominate.
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
pub(super) mod tests;
