//! Eigvalsh and Eigh against the explicit GGN of tiny f64 nets.
//!
//! The GGN is built from per-sample, per-output Jacobian rows (one candle
//! backward each) and the closed-form loss Hessian:
//! `G_S = (1/|S|) Σ_{n∈S} J_nᵀ H_n J_n`, `H_n = diag(p_n) − p_n p_nᵀ` (cross-entropy)
//! or `(2/C) I` (MSE, mean over N·C).

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Conv1dConfig, Conv2dConfig, VarBuilder, VarMap};
use common::{assert_close, to_f64};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use vivit::nn as vnn;
use vivit::{Criterion, EighComputation, EigvalshComputation, ParamGroup};

#[derive(Clone, Copy)]
enum Loss {
    CrossEntropy,
    Mse,
}

struct Problem {
    varmap: VarMap,
    forward: Box<dyn Fn() -> candle_core::Result<Tensor>>,
    /// The same function for the Jacobians, where candle's gradient of a
    /// tracked layer's own op is wrong (conv1d kernels in candle 0.10.2).
    jacobian_forward: Option<Box<dyn Fn() -> candle_core::Result<Tensor>>>,
    loss: Loss,
    targets: Tensor,
}

impl Problem {
    fn new(
        varmap: VarMap,
        forward: impl Fn() -> candle_core::Result<Tensor> + 'static,
        loss: Loss,
        seed: u64,
    ) -> Result<Self> {
        let dev = Device::Cpu;
        let out = forward()?;
        let (n, c) = out.dims2()?;
        let targets = match loss {
            Loss::CrossEntropy => {
                let t: Vec<u32> = (0..n)
                    .map(|i| ((i as u64 * 7 + seed) % c as u64) as u32)
                    .collect();
                Tensor::new(t.as_slice(), &dev)?
            }
            Loss::Mse => Tensor::randn(0f64, 1., (n, c), &dev)?,
        };
        Ok(Self {
            varmap,
            forward: Box::new(forward),
            jacobian_forward: None,
            loss,
            targets,
        })
    }

    /// Parameters in a stable order (sorted by VarMap name).
    fn params(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut named: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    fn record(&self) -> Result<vivit::Recorded> {
        Ok(vivit::record(|| {
            let out = (self.forward)()?;
            match self.loss {
                Loss::CrossEntropy => vivit::loss::cross_entropy(&out, &self.targets),
                Loss::Mse => vivit::loss::mse(&out, &self.targets),
            }
        })?)
    }

    /// The explicit GGN block of `params` on the samples `samples`, row-major `D×D`.
    fn ggn(&self, params: &[Var], samples: &[usize]) -> Result<(Vec<f64>, usize)> {
        let out = match &self.jacobian_forward {
            Some(forward) => forward()?,
            None => (self.forward)()?,
        };
        let (_, c) = out.dims2()?;
        let d: usize = params.iter().map(|p| p.elem_count()).sum();
        let mut g = vec![0f64; d * d];
        for &n in samples {
            let mut jac = Vec::with_capacity(c); // rows J_n[c, :]
            for k in 0..c {
                let grads = out
                    .narrow(0, n, 1)?
                    .narrow(1, k, 1)?
                    .sum_all()?
                    .backward()?;
                let mut row = Vec::with_capacity(d);
                for p in params {
                    match grads.get(p.as_tensor()) {
                        Some(gp) => row.extend(to_f64(gp)?),
                        None => row.extend(std::iter::repeat_n(0.0, p.elem_count())),
                    }
                }
                jac.push(row);
            }
            let h: Vec<Vec<f64>> = match self.loss {
                Loss::CrossEntropy => {
                    let p = to_f64(&candle_nn::ops::softmax(&out.narrow(0, n, 1)?, D::Minus1)?)?;
                    (0..c)
                        .map(|i| {
                            (0..c)
                                .map(|j| f64::from(u8::from(i == j)) * p[i] - p[i] * p[j])
                                .collect()
                        })
                        .collect()
                }
                Loss::Mse => (0..c)
                    .map(|i| {
                        (0..c)
                            .map(|j| if i == j { 2.0 / c as f64 } else { 0.0 })
                            .collect()
                    })
                    .collect(),
            };
            for (a, row_a) in jac.iter().enumerate() {
                for (b, row_b) in jac.iter().enumerate() {
                    let w = h[a][b] / samples.len() as f64;
                    if w == 0.0 {
                        continue;
                    }
                    for i in 0..d {
                        let wi = w * row_a[i];
                        for j in 0..d {
                            g[i * d + j] += wi * row_b[j];
                        }
                    }
                }
            }
        }
        Ok((g, d))
    }
}

fn sym_eig(g: &[f64], d: usize) -> (Vec<f64>, Mat<f64>) {
    let m = Mat::from_fn(d, d, |i, j| g[i * d + j]);
    let evd = m.self_adjoint_eigen(Side::Lower).expect("eigen");
    let s = evd.S().column_vector();
    ((0..d).map(|i| s[i]).collect(), evd.U().to_owned())
}

/// Compares Eigvalsh and Eigh (top-k) with the explicit GGN for each group.
fn check(
    problem: &Problem,
    groups: &[Vec<usize>],
    subsampling: Option<Vec<usize>>,
    top_k: usize,
) -> Result<()> {
    let named = problem.params();
    let loss = problem.record()?;
    let n = problem.targets.dim(0)?;
    let samples = subsampling.clone().unwrap_or_else(|| (0..n).collect());
    let param_groups: Vec<ParamGroup> = groups
        .iter()
        .map(|g| {
            ParamGroup::new(g.iter().map(|&i| named[i].1.clone()).collect())
                .criterion(Criterion::top_k(top_k))
        })
        .collect();
    let mut eigvalsh = EigvalshComputation::new();
    let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
    if let Some(s) = &subsampling {
        eigvalsh = eigvalsh.subsampling(s.clone());
        eigh = eigh.subsampling(s.clone());
    }
    vivit::backward(&loss, &param_groups, &mut [&mut eigvalsh, &mut eigh])?;

    for (group, ids) in param_groups.iter().zip(groups) {
        let names: Vec<&str> = ids.iter().map(|&i| named[i].0.as_str()).collect();
        let (g, d) = problem.ggn(group.params(), &samples)?;
        let (mut exact, _) = sym_eig(&g, d);
        exact.reverse(); // descending
        let mut ours = to_f64(&eigvalsh.result(group)?)?;
        ours.reverse();
        let lmax = exact[0];
        let m = exact.len().min(ours.len());
        assert_close(
            &format!("eigvalsh {names:?}"),
            &ours[..m],
            &exact[..m],
            1e-9,
        );
        for tail in ours[m..].iter().chain(&exact[m..]) {
            assert!(
                tail.abs() <= 1e-9 * lmax,
                "{names:?}: eigenvalue {tail} beyond the rank"
            );
        }

        let (evals, evecs) = eigh.result(group)?;
        let evals = to_f64(&evals)?;
        let k = evals.len();
        assert_eq!(k, top_k.min(ours.len()));
        let expected: Vec<f64> = exact[..k].iter().rev().copied().collect();
        assert_close(&format!("eigh evals {names:?}"), &evals, &expected, 1e-9);
        // e_k flattened over the group's parameters; directions of (numerically)
        // zero curvature are not unique, so only the others are compared
        let stable: Vec<usize> = (0..k).filter(|&i| evals[i] > 1e-6 * lmax).collect();
        let flat: Vec<Vec<f64>> = stable
            .iter()
            .map(|&i| {
                let mut v = Vec::new();
                for t in &evecs {
                    v.extend(to_f64(&t.get(i)?)?);
                }
                Ok(v)
            })
            .collect::<Result<_>>()?;
        for (&i, e) in stable.iter().zip(&flat) {
            let ge: Vec<f64> = (0..d)
                .map(|r| (0..d).map(|c| g[r * d + c] * e[c]).sum())
                .collect();
            let le: Vec<f64> = e.iter().map(|x| evals[i] * x).collect();
            let resid = ge
                .iter()
                .zip(&le)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                resid <= 1e-9 * lmax,
                "{names:?}: ‖G e − λ e‖∞ = {resid:e} for k = {i}"
            );
            for (&j, f) in stable.iter().zip(&flat) {
                let dot: f64 = e.iter().zip(f).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-9, "{names:?}: e_{i}·e_{j} = {dot}");
            }
        }
    }
    Ok(())
}

fn vb(varmap: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu)
}

fn input(shape: &[usize], seed: u64) -> Result<Tensor> {
    let count: usize = shape.iter().product();
    let data: Vec<f64> = (0..count)
        .map(|i| ((i as f64 + 1.0) * (seed as f64 + 0.37)).sin())
        .collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// `[[0, 1, …]]`, one group of every parameter.
fn one_group(problem: &Problem) -> Vec<Vec<usize>> {
    vec![(0..problem.params().len()).collect()]
}

fn per_param(problem: &Problem) -> Vec<Vec<usize>> {
    (0..problem.params().len()).map(|i| vec![i]).collect()
}

fn mlp(loss: Loss) -> Result<Problem> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(5, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, 3, vb(&varmap).pp("fc2"))?;
    let x = input(&[4, 5], 1)?;
    Problem::new(
        varmap,
        move || fc2.forward(&fc1.forward(&x)?.tanh()?),
        loss,
        1,
    )
}

#[test]
fn mlp_cross_entropy() -> Result<()> {
    let p = mlp(Loss::CrossEntropy)?;
    check(&p, &one_group(&p), None, 4)?;
    check(&p, &per_param(&p), None, 2)?;
    check(&p, &one_group(&p), Some(vec![3, 1]), 3)
}

#[test]
fn mlp_mse() -> Result<()> {
    let p = mlp(Loss::Mse)?;
    check(&p, &one_group(&p), None, 5)?;
    check(&p, &[vec![0, 1], vec![2, 3]], Some(vec![2, 0, 1]), 2)
}

/// `h = tanh(fc1 x)`, `r = h + sigmoid(fc2 h)`, `f = fc3 r`: a residual block,
/// which the reference (BackPACK) cannot take without rewriting the model.
#[test]
fn residual_net() -> Result<()> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, 4, vb(&varmap).pp("fc2"))?;
    let fc3 = vnn::linear_no_bias(4, 3, vb(&varmap).pp("fc3"))?;
    let x = input(&[5, 3], 2)?;
    let forward = move || {
        let h = fc1.forward(&x)?.tanh()?;
        let r = (&h + candle_nn::ops::sigmoid(&fc2.forward(&h)?)?)?;
        fc3.forward(&r)
    };
    for loss in [Loss::CrossEntropy, Loss::Mse] {
        let p = Problem::new(varmap.clone(), forward.clone(), loss, 2)?;
        check(&p, &one_group(&p), None, 6)?;
        check(&p, &per_param(&p), Some(vec![4, 0]), 3)?;
    }
    Ok(())
}

/// One linear layer applied twice (shared weights) and to `[N, T, I]` inputs.
#[test]
fn shared_weights_and_extra_axes() -> Result<()> {
    let varmap = VarMap::new();
    let fc = vnn::linear(3, 3, vb(&varmap).pp("fc"))?;
    let head = vnn::linear(6, 2, vb(&varmap).pp("head"))?;
    let x = input(&[4, 2, 3], 3)?;
    let p = Problem::new(
        varmap,
        move || {
            head.forward(
                &fc.forward(&fc.forward(&x)?.tanh()?)?
                    .tanh()?
                    .flatten_from(1)?,
            )
        },
        Loss::CrossEntropy,
        3,
    )?;
    check(&p, &one_group(&p), None, 4)?;
    check(&p, &per_param(&p), Some(vec![1, 2]), 2)
}

#[test]
fn conv2d_stride_padding_dilation() -> Result<()> {
    let varmap = VarMap::new();
    let cfg1 = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let cfg2 = Conv2dConfig {
        padding: 2,
        dilation: 2,
        ..Default::default()
    };
    let conv1 = vnn::conv2d(2, 3, 3, cfg1, vb(&varmap).pp("conv1"))?;
    let conv2 = vnn::conv2d_no_bias(3, 2, 3, cfg2, vb(&varmap).pp("conv2"))?;
    let fc = vnn::linear(8, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[3, 2, 8, 8], 4)?; // square: candle's conv2d backward errs on [7, 8] with stride 2
    let p = Problem::new(
        varmap,
        move || {
            let h = conv1.forward(&x)?.relu()?; // [3, 3, 4, 4]
            let h = vivit::nn::max_pool2d(&conv2.forward(&h)?.tanh()?, 2, 2)?; // [3, 2, 2, 2]
            fc.forward(&h.flatten_from(1)?)
        },
        Loss::CrossEntropy,
        4,
    )?;
    check(&p, &one_group(&p), None, 5)?;
    check(&p, &per_param(&p), Some(vec![2, 0]), 2)
}

#[test]
fn conv1d_dilation_avg_pool() -> Result<()> {
    let varmap = VarMap::new();
    let cfg = Conv1dConfig {
        padding: 1,
        stride: 1,
        dilation: 2,
        ..Default::default()
    };
    let conv = vnn::conv1d(2, 3, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vnn::linear(9, 2, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 2, 8], 5)?;
    let head = move |h: Tensor| -> candle_core::Result<Tensor> {
        let h = h
            .tanh()?
            .unsqueeze(2)?
            .avg_pool2d_with_stride((1, 2), (1, 2))?; // [4, 3, 1, 3]
        fc.forward(&h.flatten_from(1)?)
    };
    let (w, b) = (conv.weight().clone(), conv.bias().cloned());
    let (x2, head2) = (x.clone(), head.clone());
    let mut p = Problem::new(varmap, move || head(conv.forward(&x)?), Loss::Mse, 5)?;
    // the same conv as a 2-d one of height 1, whose kernel gradient candle gets right
    p.jacobian_forward = Some(Box::new(move || {
        let h = x2
            .unsqueeze(2)?
            .pad_with_zeros(3, 1, 1)?
            .conv2d(&w.unsqueeze(2)?, 0, 1, 2, 1)?;
        head2(
            h.squeeze(2)?
                .broadcast_add(&b.as_ref().expect("bias").reshape((1, 3, 1))?)?,
        )
    }));
    check(&p, &one_group(&p), None, 4)?;
    check(&p, &per_param(&p), None, 2)
}

impl Problem {
    /// Per-sample gradients `∇_θ ℓ_n` of the unreduced losses, flattened over `params`.
    fn sample_gradients(&self, params: &[Var], samples: &[usize]) -> Result<Vec<Vec<f64>>> {
        let out = (self.forward)()?;
        let (_, c) = out.dims2()?;
        samples
            .iter()
            .map(|&n| {
                let f = out.narrow(0, n, 1)?;
                let loss = match self.loss {
                    Loss::CrossEntropy => {
                        let y = self.targets.narrow(0, n, 1)?;
                        candle_nn::loss::cross_entropy(&f, &y)?
                    }
                    Loss::Mse => {
                        ((f - self.targets.narrow(0, n, 1)?)?.sqr()?.sum_all()? / c as f64)?
                    }
                };
                let grads = loss.backward()?;
                let mut g = Vec::new();
                for p in params {
                    match grads.get(p.as_tensor()) {
                        Some(gp) => g.extend(to_f64(gp)?),
                        None => g.extend(std::iter::repeat_n(0.0, p.elem_count())),
                    }
                }
                Ok(g)
            })
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec(m: &[f64], v: &[f64]) -> Vec<f64> {
    m.chunks(v.len()).map(|row| dot(row, v)).collect()
}

/// γ, λ and damped Newton steps (eigenspace and complement) against the
/// explicit GGN, per-sample GGNs and per-sample gradients.
fn check_newton(
    problem: &Problem,
    sub_grad: Option<Vec<usize>>,
    sub_ggn: Option<Vec<usize>>,
    k: usize,
) -> Result<()> {
    let named = problem.params();
    let params: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let n = problem.targets.dim(0)?;
    let grad_samples = sub_grad.clone().unwrap_or_else(|| (0..n).collect());
    let ggn_samples = sub_ggn.clone().unwrap_or_else(|| (0..n).collect());
    let loss = problem.record()?;
    let delta = 0.3;
    let criterion = Criterion::top_k(k);
    let groups = [ParamGroup::new(params.clone())
        .criterion(criterion.clone())
        .damping(vivit::Damping::constant(delta))];
    let zero = [ParamGroup::new(params.clone())
        .criterion(criterion)
        .damping(vivit::Damping::constant(0.0))];

    let mut dd = vivit::DirectionalDerivativesComputation::new().warn_small_eigvals(0.0);
    let mut newton = vivit::DirectionalDampedNewtonComputation::new();
    let mut lm = vivit::DirectionalDampedNewtonComputation::new().complement(true);
    let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
    if let Some(s) = &sub_grad {
        dd = dd.subsampling_grad(s.clone());
        newton = newton.subsampling_grad(s.clone());
        lm = lm.subsampling_grad(s.clone());
    }
    if let Some(s) = &sub_ggn {
        dd = dd.subsampling_ggn(s.clone());
        newton = newton.subsampling_ggn(s.clone());
        lm = lm.subsampling_ggn(s.clone());
        eigh = eigh.subsampling(s.clone());
    }
    vivit::backward(
        &loss,
        &groups,
        &mut [&mut dd, &mut newton, &mut lm, &mut eigh],
    )?;
    let mut newton_zero = newton.clone();
    newton_zero.compute(&loss, &zero)?;

    let (g, d) = problem.ggn(&params, &ggn_samples)?;
    let (evals, evecs) = eigh.result(&groups[0])?;
    let evals = to_f64(&evals)?;
    let lmax = evals.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    let e: Vec<Vec<f64>> = (0..evals.len())
        .map(|i| {
            Ok(evecs
                .iter()
                .map(|t| to_f64(&t.get(i)?))
                .collect::<Result<Vec<_>>>()?
                .concat())
        })
        .collect::<Result<_>>()?;
    for (i, ei) in e.iter().enumerate() {
        let resid: f64 = mat_vec(&g, ei)
            .iter()
            .zip(ei)
            .map(|(a, b)| (a - evals[i] * b).abs())
            .fold(0.0, f64::max);
        assert!(
            resid < 1e-9 * lmax,
            "eigenvector {i} of the explicit GGN: residual {resid:e}"
        );
    }
    let grads = problem.sample_gradients(&params, &grad_samples)?;
    let g_bar: Vec<f64> = (0..d)
        .map(|j| grads.iter().map(|gn| gn[j]).sum::<f64>() / grads.len() as f64)
        .collect();

    // γ[n,k] = e_kᵀ g_n, λ[n,k] = e_kᵀ G_n e_k, mean_n λ[n,k] = λ_k
    let (gammas, lambdas) = dd.result(&groups[0])?;
    let (gammas, lambdas) = (gammas.to_vec2::<f64>()?, lambdas.to_vec2::<f64>()?);
    for (row, gn) in gammas.iter().zip(&grads) {
        let want: Vec<f64> = e.iter().map(|ek| dot(ek, gn)).collect();
        assert_close("γ", row, &want, 1e-9);
    }
    for (row, &n) in lambdas.iter().zip(&ggn_samples) {
        let (gn, _) = problem.ggn(&params, &[n])?;
        let want: Vec<f64> = e.iter().map(|ek| dot(ek, &mat_vec(&gn, ek))).collect();
        assert_close("λ", row, &want, 1e-9);
    }
    let mean_lambda: Vec<f64> = (0..evals.len())
        .map(|j| lambdas.iter().map(|r| r[j]).sum::<f64>() / lambdas.len() as f64)
        .collect();
    assert_close("mean λ = eigenvalues", &mean_lambda, &evals, 1e-9);

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
    assert_close(
        "Newton step",
        &flat(newton.result(&groups[0])?)?,
        &want,
        1e-9,
    );
    // δ = 0: the pseudo-inverse Newton step in the kept eigenspace
    let want = combine(&|i| -slope[i] / evals[i]);
    assert_close(
        "Newton step, δ = 0",
        &flat(newton_zero.result(&zero[0])?)?,
        &want,
        1e-9,
    );

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
    assert_close(
        "Levenberg-Marquardt step of the truncated GGN",
        &flat(lm.result(&groups[0])?)?,
        &want,
        1e-9,
    );
    Ok(())
}

#[test]
fn newton_mlp_cross_entropy() -> Result<()> {
    let p = mlp(Loss::CrossEntropy)?;
    check_newton(&p, None, None, 3)?;
    check_newton(&p, Some(vec![0, 2, 3]), Some(vec![3, 1]), 2)
}

#[test]
fn newton_residual_mse() -> Result<()> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, 4, vb(&varmap).pp("fc2"))?;
    let fc3 = vnn::linear(4, 2, vb(&varmap).pp("fc3"))?;
    let x = input(&[5, 3], 7)?;
    let p = Problem::new(
        varmap,
        move || {
            let h = fc1.forward(&x)?.tanh()?;
            fc3.forward(&(&h + fc2.forward(&h)?.tanh()?)?)
        },
        Loss::Mse,
        7,
    )?;
    check_newton(&p, None, None, 4)?;
    check_newton(&p, Some(vec![4, 1]), None, 3)
}

#[test]
fn newton_conv() -> Result<()> {
    let varmap = VarMap::new();
    let cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let conv = vnn::conv2d(2, 2, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vnn::linear(8, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 2, 4, 4], 8)?;
    let p = Problem::new(
        varmap,
        move || fc.forward(&conv.forward(&x)?.tanh()?.flatten_from(1)?),
        Loss::CrossEntropy,
        8,
    )?;
    check_newton(&p, None, Some(vec![0, 1, 2]), 4)
}
