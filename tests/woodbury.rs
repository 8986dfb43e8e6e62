//! The Woodbury step (`StepSolver::Woodbury`) against the dense solve of
//! `(G + δI) s = −ḡ` with the explicit GGN of tiny f64 nets, exact and
//! subsampled, in one group and in blocks; and `DampedNewton` reusing its
//! curvature over steps (`curvature_interval`).

mod common;

use anyhow::Result;
use candle_core::Var;
use common::brute_force::{strided_conv, tanh_mlp, Loss, Problem};
use common::{assert_close, to_f64};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use vivit::{
    DampedNewton, DampedNewtonConfig, Damping, DirectionalDampedNewtonComputation, ParamGroup,
    StepSolver,
};

/// Relative to the largest step entry: both sides solve in f64 with a
/// condition number `(λ_max + δ)/δ` of at most a few hundred here, so the
/// rounding errors stay near `1e-14`.
const RTOL: f64 = 1e-10;

fn mlp(loss: Loss) -> Result<Problem> {
    tanh_mlp(loss, 6, 2)
}

/// `s = −(G_S + δI)⁻¹ ḡ` with `G_S` the explicit GGN block of `params` on
/// `ggn_samples` and `ḡ` the mean gradient on `grad_samples`.
fn dense_step(
    problem: &Problem,
    params: &[Var],
    ggn_samples: &[usize],
    grad_samples: &[usize],
    delta: f64,
) -> Result<Vec<f64>> {
    let ggn = problem.ggn(params, ggn_samples)?;
    dense_solve(&ggn, problem, params, grad_samples, delta)
}

/// `s = −(G + δI)⁻¹ ḡ` for the explicit GGN `ggn` (`D×D`, row-major, and
/// `D`) and the problem's mean gradient on `grad_samples` now.
fn dense_solve(
    (g, d): &(Vec<f64>, usize),
    problem: &Problem,
    params: &[Var],
    grad_samples: &[usize],
    delta: f64,
) -> Result<Vec<f64>> {
    let d = *d;
    let grads = problem.sample_gradients(params, grad_samples)?;
    let shifted = Mat::from_fn(d, d, |i, j| g[i * d + j] + if i == j { delta } else { 0.0 });
    let rhs = Mat::from_fn(d, 1, |i, _| {
        -grads.iter().map(|gn| gn[i]).sum::<f64>() / grads.len() as f64
    });
    let s = shifted
        .llt(Side::Lower)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .solve(rhs);
    Ok((0..d).map(|i| s[(i, 0)]).collect())
}

/// Each group's Woodbury step equals its dense solve.
fn check_woodbury(
    problem: &Problem,
    groups: &[Vec<usize>],
    sub_grad: Option<Vec<usize>>,
    sub_ggn: Option<Vec<usize>>,
    delta: f64,
) -> Result<()> {
    let n = problem.batch_size()?;
    let grad_samples = sub_grad.clone().unwrap_or_else(|| (0..n).collect());
    let ggn_samples = sub_ggn.clone().unwrap_or_else(|| (0..n).collect());
    let named = problem.params();
    let param_groups: Vec<ParamGroup> = groups
        .iter()
        .map(|g| {
            ParamGroup::new(g.iter().map(|&i| named[i].1.clone()).collect())
                .damping(Damping::constant(delta))
        })
        .collect();
    let mut newton = DirectionalDampedNewtonComputation::new().step_solver(StepSolver::Woodbury);
    if let Some(s) = sub_grad {
        newton = newton.subsampling_grad(s);
    }
    if let Some(s) = sub_ggn {
        newton = newton.subsampling_ggn(s);
    }
    newton.compute(&problem.record()?, &param_groups)?;
    for group in &param_groups {
        let want = dense_step(problem, group.params(), &ggn_samples, &grad_samples, delta)?;
        let mut got = Vec::new();
        for s in newton.result(group)? {
            got.extend(to_f64(&s)?);
        }
        assert_close("Woodbury step", &got, &want, RTOL);
    }
    Ok(())
}

#[test]
fn woodbury_equals_the_dense_solve_mlp_cross_entropy() -> Result<()> {
    let p = mlp(Loss::CrossEntropy)?;
    check_woodbury(&p, &[vec![0, 1, 2, 3]], None, None, 0.3)?;
    check_woodbury(&p, &[vec![0, 1, 2, 3]], None, None, 1e-3)?;
    check_woodbury(
        &p,
        &[vec![0, 1], vec![2], vec![3]],
        Some(vec![5, 0, 2]),
        None,
        0.3,
    )?;
    check_woodbury(
        &p,
        &[vec![0, 1, 2, 3]],
        Some(vec![1, 4]),
        Some(vec![3, 1, 5]),
        0.1,
    )
}

#[test]
fn woodbury_equals_the_dense_solve_mlp_mse() -> Result<()> {
    let p = mlp(Loss::Mse)?;
    check_woodbury(&p, &[vec![0, 1, 2, 3]], None, None, 0.01)?;
    check_woodbury(&p, &[vec![0, 2], vec![1, 3]], None, Some(vec![2, 0]), 0.5)
}

#[test]
fn woodbury_equals_the_dense_solve_conv() -> Result<()> {
    let p = strided_conv()?;
    check_woodbury(&p, &[vec![0, 1, 2, 3]], None, None, 0.2)?;
    check_woodbury(
        &p,
        &[vec![0, 1, 2, 3]],
        Some(vec![0, 3]),
        Some(vec![0, 1, 2]),
        0.2,
    )
}

/// Dampings with a `δ` per direction, and `δ ≤ 0`, are refused.
#[test]
fn woodbury_needs_one_positive_delta() -> Result<()> {
    let p = mlp(Loss::CrossEntropy)?;
    let params: Vec<Var> = p.params().into_iter().map(|(_, v)| v).collect();
    let loss = p.record()?;
    for damping in [
        Damping::custom(|input| vec![1.0; input.evals.len()]),
        Damping::constant(0.0),
        Damping::constant(f64::INFINITY),
    ] {
        let groups = [ParamGroup::new(params.clone()).damping(damping)];
        let mut newton =
            DirectionalDampedNewtonComputation::new().step_solver(StepSolver::Woodbury);
        let err = newton.compute(&loss, &groups).expect_err("refused");
        assert!(matches!(err, vivit::Error::InvalidDamping(_)), "{err}");
    }
    Ok(())
}

/// The parameters, flattened and concatenated.
fn values(params: &[Var]) -> Result<Vec<f64>> {
    let mut all = Vec::new();
    for p in params {
        all.extend(to_f64(p.as_tensor())?);
    }
    Ok(all)
}

/// Takes one step of `opt` on `problem` and returns it divided by `lr`:
/// `s` of the update `θ ← θ + lr · s`, flattened as [`values`].
fn step_taken(
    opt: &mut DampedNewton,
    problem: &Problem,
    params: &[Var],
    lr: f64,
) -> Result<Vec<f64>> {
    let before = values(params)?;
    opt.step_recorded(&problem.record()?)?;
    Ok(values(params)?
        .iter()
        .zip(&before)
        .map(|(after, before)| (after - before) / lr)
        .collect())
}

/// The Woodbury step without trust region or curvature budget, so that the
/// update is exactly `lr · s`.
fn plain(delta: f64, interval: usize) -> DampedNewtonConfig {
    let mut config = DampedNewtonConfig::default();
    config.trust_region = None;
    config.curvature_budget = None;
    config
        .damping(Damping::constant(delta))
        .lr(0.5)
        .curvature_interval(interval)
}

/// With `T = 3`, steps 2 and 3 solve with the GGN of step 1 (its parameters)
/// and their own gradients; step 4 computes the curvature afresh. Gradients
/// on 3 of the samples, so the kept factor and the gradients differ in `N`.
fn check_amortized(problem: &Problem) -> Result<()> {
    let (delta, lr, interval) = (0.1, 0.5, 3);
    let params: Vec<Var> = problem.params().into_iter().map(|(_, v)| v).collect();
    let n = problem.batch_size()?;
    let (all, grad_samples): (Vec<usize>, Vec<usize>) = ((0..n).collect(), vec![1, n - 2, n - 1]);
    let config = plain(delta, interval).subsampling_grad(grad_samples.clone());
    let group = ParamGroup::new(params.clone()).damping(Damping::constant(delta));
    let mut opt = DampedNewton::with_groups(vec![group], config);
    let mut ggn = problem.ggn(&params, &all)?;
    for t in 0..5 {
        if t % interval == 0 {
            ggn = problem.ggn(&params, &all)?;
        }
        let want = dense_solve(&ggn, problem, &params, &grad_samples, delta)?;
        let got = step_taken(&mut opt, problem, &params, lr)?;
        assert_close(&format!("step {t} with T = {interval}"), &got, &want, RTOL);
    }
    Ok(())
}

#[test]
fn amortized_steps_solve_with_the_kept_curvature_mlp() -> Result<()> {
    check_amortized(&tanh_mlp(Loss::CrossEntropy, 6, 3)?)?;
    check_amortized(&tanh_mlp(Loss::Mse, 6, 4)?)
}

#[test]
fn amortized_steps_solve_with_the_kept_curvature_conv() -> Result<()> {
    check_amortized(&strided_conv()?)
}

/// `T = 1` steps equal those of optimizers built afresh for every step (no
/// state at all) bit for bit, and the first step of `T = 3` equals them too.
#[test]
fn interval_one_is_unamortized_bit_for_bit() -> Result<()> {
    let problem = tanh_mlp(Loss::CrossEntropy, 6, 2)?;
    let params: Vec<Var> = problem.params().into_iter().map(|(_, v)| v).collect();
    let initial: Vec<candle_core::Tensor> = params
        .iter()
        .map(|p| p.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let run = |interval: usize, fresh: bool| -> Result<Vec<Vec<f64>>> {
        for (p, v) in params.iter().zip(&initial) {
            p.set(v)?;
        }
        let build = || {
            let group = ParamGroup::new(params.clone()).damping(Damping::constant(0.1));
            DampedNewton::with_groups(vec![group], plain(0.1, interval))
        };
        let mut opt = build();
        let mut trace = Vec::new();
        for _ in 0..3 {
            if fresh {
                opt = build();
            }
            opt.step_recorded(&problem.record()?)?;
            trace.push(values(&params)?);
        }
        Ok(trace)
    };
    let unamortized = run(1, true)?;
    assert_eq!(run(1, false)?, unamortized);
    let amortized = run(3, false)?;
    assert_eq!(amortized[0], unamortized[0]);
    assert_ne!(
        amortized[1], unamortized[1],
        "the second step reuses the curvature"
    );
    Ok(())
}

/// A changed `δ` makes the next step compute its curvature afresh (the
/// configuration changes through candle-optimisers' `OptimParams`).
#[cfg(feature = "optimisers")]
#[test]
fn a_new_delta_refreshes_the_curvature() -> Result<()> {
    use candle_nn::optim::Optimizer;
    use candle_optimisers::OptimParams;
    let problem = tanh_mlp(Loss::CrossEntropy, 6, 5)?;
    let params: Vec<Var> = problem.params().into_iter().map(|(_, v)| v).collect();
    let all: Vec<usize> = (0..6).collect();
    let mut opt = DampedNewton::new(params.clone(), plain(0.1, 5))?;
    opt.step_recorded(&problem.record()?)?;
    opt.set_params(plain(0.3, 5));
    let want = dense_step(&problem, &params, &all, &all, 0.3)?;
    let got = step_taken(&mut opt, &problem, &params, 0.5)?;
    assert_close("step after δ changed", &got, &want, RTOL);
    Ok(())
}

/// An interval of 0, or above 1 with the directional solver, is refused
/// before anything changes.
#[test]
fn bad_intervals_are_refused() -> Result<()> {
    let problem = tanh_mlp(Loss::CrossEntropy, 6, 2)?;
    let params: Vec<Var> = problem.params().into_iter().map(|(_, v)| v).collect();
    let before = values(&params)?;
    for config in [
        plain(0.1, 0),
        DampedNewtonConfig::directional().curvature_interval(2),
    ] {
        let mut opt = DampedNewton::with_groups(vec![ParamGroup::new(params.clone())], config);
        let err = opt.step_recorded(&problem.record()?).expect_err("refused");
        assert!(
            matches!(err, vivit::Error::InvalidConfig { what, .. } if what.contains("curvature interval")),
            "{err}"
        );
        assert_eq!(values(&params)?, before);
    }
    Ok(())
}

/// Under a curvature budget the subsample's offset advances with each
/// computed curvature, not with each step: with `T = 2` the third step's
/// curvature is on the other half of the batch.
#[test]
fn the_budget_rotates_with_each_computed_curvature() -> Result<()> {
    let (delta, lr) = (0.1, 0.5);
    let problem = tanh_mlp(Loss::CrossEntropy, 6, 7)?;
    let params: Vec<Var> = problem.params().into_iter().map(|(_, v)| v).collect();
    let all: Vec<usize> = (0..6).collect();
    // 3 outputs: 9 rows are 3 samples, every second one
    let config = plain(delta, 2).curvature_budget(9);
    let group = ParamGroup::new(params.clone()).damping(Damping::constant(delta));
    let mut opt = DampedNewton::with_groups(vec![group], config);
    for (t, curvature) in [Some([0, 2, 4]), None, Some([1, 3, 5])]
        .into_iter()
        .enumerate()
    {
        let want = match curvature {
            Some(samples) => Some(dense_step(&problem, &params, &samples, &all, delta)?),
            None => None,
        };
        let got = step_taken(&mut opt, &problem, &params, lr)?;
        if let Some(want) = want {
            assert_close(&format!("step {t}"), &got, &want, RTOL);
        }
    }
    Ok(())
}
