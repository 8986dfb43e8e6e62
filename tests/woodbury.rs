//! The Woodbury step (`StepSolver::Woodbury`) against the dense solve of
//! `(G + δI) s = −ḡ` with the explicit GGN of tiny f64 nets, exact and
//! subsampled, in one group and in blocks; and `DampedNewton` applying it.

mod common;

use anyhow::Result;
use candle_core::{Module, Var};
use candle_nn::{Conv2dConfig, VarMap};
use common::brute_force::{input, tanh_mlp, vb, Loss, Problem};
use common::{assert_close, to_f64};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use vivit::{nn as vnn, Damping, DirectionalDampedNewtonComputation, ParamGroup, StepSolver};

/// Relative to the largest step entry: both sides solve in f64 with a
/// condition number `(λ_max + δ)/δ` of at most a few hundred here, so the
/// rounding errors stay near `1e-14`.
const RTOL: f64 = 1e-10;

fn mlp(loss: Loss) -> Result<Problem> {
    tanh_mlp(loss, 6, 2)
}

fn conv() -> Result<Problem> {
    let varmap = VarMap::new();
    let cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let conv = vnn::conv2d(2, 2, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vnn::linear(8, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 2, 4, 4], 8)?;
    Problem::new(
        varmap,
        move || fc.forward(&conv.forward(&x)?.tanh()?.flatten_from(1)?),
        Loss::CrossEntropy,
        8,
    )
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
    let (g, d) = problem.ggn(params, ggn_samples)?;
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
    let p = conv()?;
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
