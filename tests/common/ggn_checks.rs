//! The comparison of every computation with the explicit GGN of a
//! [`Problem`] (see [`super::brute_force`], also for the tolerances): the
//! eigenpairs, the directional derivatives and the damped Newton steps.

use anyhow::Result;
use candle_core::Tensor;
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use vivit::{
    Criterion, Damping, DirectionalDampedNewtonComputation, DirectionalDerivativesComputation,
    Eigensolver, EighComputation, EigvalshComputation, ParamGroup,
};

use super::brute_force::{Problem, KAPPA, RTOL};
use super::{assert_close, to_f64};

/// Eigenvalues (ascending) of the symmetric row-major `g` `[d, d]`.
fn eigenvalues(g: &[f64], d: usize) -> Vec<f64> {
    let m = Mat::from_fn(d, d, |i, j| g[i * d + j]);
    let evd = m.self_adjoint_eigen(Side::Lower).expect("eigen");
    let s = evd.S().column_vector();
    (0..d).map(|i| s[i]).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec(m: &[f64], v: &[f64]) -> Vec<f64> {
    m.chunks(v.len()).map(|row| dot(row, v)).collect()
}

/// Kept eigenvector `k` flattened over the group's parameters.
fn flat_evec(evecs: &[Tensor], k: usize) -> Result<Vec<f64>> {
    Ok(evecs
        .iter()
        .map(|t| to_f64(&t.get(k)?))
        .collect::<Result<Vec<_>>>()?
        .concat())
}

/// `‖G e − λ e‖∞ ≤ RTOL·λ_max` and, over `e`, `eᵢ·eⱼ = δᵢⱼ`.
fn assert_eigenvectors(what: &str, g: &[f64], evals: &[f64], e: &[Vec<f64>], lmax: f64) {
    for (i, ei) in e.iter().enumerate() {
        let resid = mat_vec(g, ei)
            .iter()
            .zip(ei)
            .map(|(a, b)| (a - evals[i] * b).abs())
            .fold(0.0, f64::max);
        assert!(
            resid <= RTOL * lmax,
            "{what}: ‖G e − λ e‖∞ = {resid:e} for k = {i}"
        );
        for (j, ej) in e.iter().enumerate() {
            let want = if i == j { 1.0 } else { 0.0 };
            let got = dot(ei, ej);
            assert!((got - want).abs() <= RTOL, "{what}: e_{i}·e_{j} = {got}");
        }
    }
}

/// The `k` largest eigenvalues among those above `λ_max / KAPPA`.
pub fn well_conditioned_top_k(k: usize) -> Criterion {
    Criterion::custom(move |evals| {
        let max = evals.iter().fold(0.0f64, |m, &l| m.max(l));
        let above: Vec<usize> = (0..evals.len())
            .filter(|&i| evals[i] > max / KAPPA)
            .collect();
        above[above.len().saturating_sub(k)..].to_vec()
    })
}

/// Eigvalsh and Eigh (top-k) against the explicit GGN block of each group
/// (indices into [`Problem::params`]).
pub fn check_eigen(
    problem: &Problem,
    groups: &[Vec<usize>],
    subsampling: Option<Vec<usize>>,
    top_k: usize,
) -> Result<()> {
    let loss = problem.record()?;
    let samples = subsampling
        .clone()
        .unwrap_or_else(|| (0..problem.batch_size().unwrap_or(0)).collect());
    let param_groups: Vec<ParamGroup> = groups
        .iter()
        .map(|g| ParamGroup::new(problem.group_params(g).1).criterion(Criterion::top_k(top_k)))
        .collect();
    let mut eigvalsh = EigvalshComputation::new();
    let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
    if let Some(s) = &subsampling {
        eigvalsh = eigvalsh.subsampling(s.clone());
        eigh = eigh.subsampling(s.clone());
    }
    // the full solver on the formed Gram matrix, the partial one on its products
    let mut eigh_partial = eigh.clone().eigensolver(Eigensolver::Partial);
    let mut eigh = eigh.eigensolver(Eigensolver::Full);
    vivit::backward(
        &loss,
        &param_groups,
        &mut [&mut eigvalsh, &mut eigh, &mut eigh_partial],
    )?;

    for (group, ids) in param_groups.iter().zip(groups) {
        let names = problem.group_params(ids).0;
        let (g, d) = problem.ggn(group.params(), &samples)?;
        let mut exact = eigenvalues(&g, d);
        exact.reverse(); // descending
        let mut ours = to_f64(&eigvalsh.result(group)?)?;
        ours.reverse();
        let lmax = exact[0].max(0.0);
        let m = exact.len().min(ours.len());
        let what = format!("eigvalsh {names:?}");
        assert_close(&what, &ours[..m], &exact[..m], RTOL);
        for tail in ours[m..].iter().chain(&exact[m..]) {
            assert!(
                tail.abs() <= RTOL * lmax,
                "{what}: eigenvalue {tail} beyond the rank"
            );
        }
        // G (D×D) and the Gram matrix (C·N square) share their non-zero
        // eigenvalues; the larger has zeros in addition
        exact.resize(exact.len().max(ours.len()), 0.0);

        for (solver, eigh) in [("full", &eigh), ("partial", &eigh_partial)] {
            let vivit::Eigenpairs { evals, evecs } = eigh.result(group)?;
            let evals = to_f64(&evals)?;
            let k = evals.len();
            assert_eq!(k, top_k.min(ours.len()));
            let expected: Vec<f64> = exact[..k].iter().rev().copied().collect();
            let what = format!("eigh ({solver} solver) {names:?}");
            assert_close(&format!("{what} evals"), &evals, &expected, RTOL);
            // directions of (numerically) zero curvature are not unique
            let stable: Vec<usize> = (0..k).filter(|&i| evals[i] > lmax / KAPPA).collect();
            let flat: Vec<Vec<f64>> = stable
                .iter()
                .map(|&i| flat_evec(&evecs, i))
                .collect::<Result<_>>()?;
            let stable_evals: Vec<f64> = stable.iter().map(|&i| evals[i]).collect();
            assert_eigenvectors(&what, &g, &stable_evals, &flat, lmax);
        }
    }
    Ok(())
}

/// γ, λ and damped Newton steps (eigenspace with δ > 0 and δ = 0, and the
/// complement step) of each group against its explicit GGN, per-sample GGNs
/// and per-sample gradients, along the top-`k` well-conditioned directions.
pub fn check_newton(
    problem: &Problem,
    groups: &[Vec<usize>],
    sub_grad: Option<Vec<usize>>,
    sub_ggn: Option<Vec<usize>>,
    k: usize,
) -> Result<()> {
    for solver in [Eigensolver::Full, Eigensolver::Partial] {
        check_newton_with(
            solver,
            problem,
            groups,
            sub_grad.clone(),
            sub_ggn.clone(),
            k,
        )?;
    }
    Ok(())
}

/// [`check_newton`] with one eigensolver: the full one on the formed Gram
/// matrix with [`well_conditioned_top_k`], the partial one on its products
/// with the same selection, `top_k_above(k, λ_max / KAPPA)`.
fn check_newton_with(
    solver: Eigensolver,
    problem: &Problem,
    groups: &[Vec<usize>],
    sub_grad: Option<Vec<usize>>,
    sub_ggn: Option<Vec<usize>>,
    k: usize,
) -> Result<()> {
    let n = problem.batch_size()?;
    let grad_samples = sub_grad.clone().unwrap_or_else(|| (0..n).collect());
    let ggn_samples = sub_ggn.clone().unwrap_or_else(|| (0..n).collect());
    let loss = problem.record()?;
    let delta = 0.3;
    let criterion = |g: &Vec<usize>| -> Result<Criterion> {
        Ok(match solver {
            Eigensolver::Partial => {
                let (ggn, d) = problem.ggn(&problem.group_params(g).1, &ggn_samples)?;
                let lmax = eigenvalues(&ggn, d).last().copied().unwrap_or(0.0);
                Criterion::top_k_above(k, lmax / KAPPA)
            }
            _ => well_conditioned_top_k(k),
        })
    };
    let param_groups = |delta: f64| -> Result<Vec<ParamGroup>> {
        groups
            .iter()
            .map(|g| {
                Ok(ParamGroup::new(problem.group_params(g).1)
                    .criterion(criterion(g)?)
                    .damping(Damping::constant(delta)))
            })
            .collect()
    };
    let (damped, undamped) = (param_groups(delta)?, param_groups(0.0)?);

    let mut dd = DirectionalDerivativesComputation::new()
        .warn_small_eigvals(0.0)
        .eigensolver(solver);
    let mut newton = DirectionalDampedNewtonComputation::new()
        .warn_small_eigvals(0.0)
        .eigensolver(solver);
    let mut eigh = EighComputation::new()
        .warn_small_eigvals(0.0)
        .eigensolver(solver);
    if let Some(s) = &sub_grad {
        dd = dd.subsampling_grad(s.clone());
        newton = newton.subsampling_grad(s.clone());
    }
    if let Some(s) = &sub_ggn {
        dd = dd.subsampling_ggn(s.clone());
        newton = newton.subsampling_ggn(s.clone());
        eigh = eigh.subsampling(s.clone());
    }
    let mut lm = newton.clone().complement(true);
    vivit::backward(
        &loss,
        &damped,
        &mut [&mut dd, &mut newton, &mut lm, &mut eigh],
    )?;
    let mut newton_zero = newton.clone();
    newton_zero.compute(&loss, &undamped)?;

    for ((group, group_zero), ids) in damped.iter().zip(&undamped).zip(groups) {
        let names = problem.group_params(ids).0;
        let params = group.params();
        let (g, d) = problem.ggn(params, &ggn_samples)?;
        let lmax = eigenvalues(&g, d).last().copied().unwrap_or(0.0).max(0.0);
        let vivit::Eigenpairs { evals, evecs } = eigh.result(group)?;
        let evals = to_f64(&evals)?;
        let e: Vec<Vec<f64>> = (0..evals.len())
            .map(|i| flat_evec(&evecs, i))
            .collect::<Result<_>>()?;
        assert_eigenvectors(&format!("{names:?}"), &g, &evals, &e, lmax);
        let grads = problem.sample_gradients(params, &grad_samples)?;
        let g_bar: Vec<f64> = (0..d)
            .map(|j| grads.iter().map(|gn| gn[j]).sum::<f64>() / grads.len() as f64)
            .collect();

        // γ[n,k] = e_kᵀ g_n, λ[n,k] = e_kᵀ G_n e_k, mean_n λ[n,k] = λ_k
        let (gammas, lambdas) = dd.result(group)?;
        let (gammas, lambdas) = (gammas.to_vec2::<f64>()?, lambdas.to_vec2::<f64>()?);
        for (row, gn) in gammas.iter().zip(&grads) {
            let want: Vec<f64> = e.iter().map(|ek| dot(ek, gn)).collect();
            assert_close(&format!("γ {names:?}"), row, &want, RTOL);
        }
        for (row, &n) in lambdas.iter().zip(&ggn_samples) {
            let gn = problem.sample_ggn(params, n, &ggn_samples)?;
            let want: Vec<f64> = e.iter().map(|ek| dot(ek, &mat_vec(&gn, ek))).collect();
            assert_close(&format!("λ {names:?}"), row, &want, RTOL);
        }
        let mean_lambda: Vec<f64> = (0..evals.len())
            .map(|j| lambdas.iter().map(|r| r[j]).sum::<f64>() / lambdas.len() as f64)
            .collect();
        assert_close("mean λ = eigenvalues", &mean_lambda, &evals, RTOL);

        let flat = |steps: Vec<Tensor>| -> Result<Vec<f64>> {
            Ok(steps
                .iter()
                .map(to_f64)
                .collect::<Result<Vec<_>>>()?
                .concat())
        };
        let combine = |coef: &dyn Fn(usize) -> f64| -> Vec<f64> {
            (0..d)
                .map(|j| e.iter().enumerate().map(|(i, ei)| coef(i) * ei[j]).sum())
                .collect()
        };
        let slope: Vec<f64> = e.iter().map(|ek| dot(ek, &g_bar)).collect();
        // s = Σ_k −(e_kᵀḡ)/(λ_k + δ) e_k
        let want = combine(&|i| -slope[i] / (mean_lambda[i] + delta));
        let what = format!("Newton step {names:?}");
        assert_close(&what, &flat(newton.result(group)?)?, &want, RTOL);
        // δ = 0: the pseudo-inverse Newton step in the kept eigenspace
        let want = combine(&|i| -slope[i] / evals[i]);
        let what = format!("Newton step, δ = 0, {names:?}");
        assert_close(&what, &flat(newton_zero.result(group_zero)?)?, &want, RTOL);

        // complement: −(G_K + δI)⁻¹ ḡ with G_K = Σ_k λ̄_k e_k e_kᵀ, by a dense solve
        let mut a = Mat::<f64>::from_fn(d, d, |r, c| if r == c { delta } else { 0.0 });
        for (i, ei) in e.iter().enumerate() {
            for r in 0..d {
                for c in 0..d {
                    a[(r, c)] += mean_lambda[i] * ei[r] * ei[c];
                }
            }
        }
        let rhs = Mat::<f64>::from_fn(d, 1, |r, _| -g_bar[r]);
        let x = a.llt(Side::Lower).expect("positive definite").solve(&rhs);
        let want: Vec<f64> = (0..d).map(|r| x[(r, 0)]).collect();
        let what = format!("Levenberg-Marquardt step of the truncated GGN {names:?}");
        assert_close(&what, &flat(lm.result(group)?)?, &want, RTOL);
    }
    Ok(())
}
