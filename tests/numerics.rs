//! Numerical robustness: each degenerate case gets the rule the docs state
//! (README "Reliability"): repeated and zero eigenvalues, negative round-off,
//! all-zero gradients, huge logits, tiny curvature in f32.

mod common;

use std::sync::{Mutex, OnceLock};

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::optim::Optimizer;
use candle_nn::{VarBuilder, VarMap};
use common::brute_force::input;
use common::mlp::Mlp;
use common::to_f64;
use vivit::{
    nn as vnn, Criterion, DampedNewton, DampedNewtonConfig, DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation, EighComputation, EigvalshComputation, Error, ParamGroup,
};

/// `fc` (weights from `seed`, scaled by `scale`) and its variables by name.
fn linear(
    varmap: &VarMap,
    name: &str,
    (i, o, bias): (usize, usize, bool),
    dtype: DType,
    scale: f64,
) -> Result<(vnn::Linear, Vec<Var>)> {
    let vb = VarBuilder::from_varmap(varmap, dtype, &Device::Cpu);
    let layer = vnn::linear_b(i, o, bias, vb.pp(name))?;
    Ok((layer, set_layer(varmap, name, dtype, scale)?))
}

/// Sets the variables of layer `name` (by name) from seeds 40, 41, …, scaled
/// by `scale`; returns them.
fn set_layer(varmap: &VarMap, name: &str, dtype: DType, scale: f64) -> Result<Vec<Var>> {
    let prefix = format!("{name}.");
    let vars: Vec<Var> = vnn::vars_by_name(varmap)
        .into_iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .map(|(_, v)| v)
        .collect();
    for (k, var) in vars.iter().enumerate() {
        var.set(&(input(var.dims(), 40 + k as u64)? * scale)?.to_dtype(dtype)?)?;
    }
    Ok(vars)
}

fn values(vars: &[Var]) -> Result<Vec<Vec<f64>>> {
    vars.iter().map(|v| to_f64(v.as_tensor())).collect()
}

/// Repeated eigenvalues: `Eigh` returns an orthonormal basis of the
/// eigenspace (any one, the same on every run). With `X = I₃` and MSE,
/// `G = (2/(C·N)) I ⊗ XᵀX = I/3` on all six weights.
#[test]
fn repeated_eigenvalues_give_an_orthonormal_basis() -> Result<()> {
    let varmap = VarMap::new();
    let (fc, vars) = linear(&varmap, "fc", (3, 2, false), DType::F64, 1.0)?;
    let x = Tensor::eye(3, DType::F64, &Device::Cpu)?;
    let y = input(&[3, 2], 1)?;
    let loss = vivit::record(|| vivit::loss::mse(&fc.forward(&x)?, &y))?;
    let groups = [ParamGroup::new(vars).criterion(Criterion::all())];
    let eigh = || -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
        let mut eigh = EighComputation::new();
        eigh.compute(&loss, &groups)?;
        let vivit::Eigenpairs { evals, evecs } = eigh.result(&groups[0])?;
        let rows = evecs[0].flatten_from(1)?.to_vec2::<f64>()?;
        Ok((to_f64(&evals)?, rows))
    };
    let (evals, e) = eigh()?;
    // f64 round-off of a 6×6 Gram matrix of entries ≤ 1
    let tol = 6.0 * f64::EPSILON;
    for l in &evals {
        assert!((l - 1.0 / 3.0).abs() <= tol, "{evals:?}");
    }
    for (i, ei) in e.iter().enumerate() {
        for (j, ej) in e.iter().enumerate() {
            let dot: f64 = ei.iter().zip(ej).map(|(a, b)| a * b).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() <= tol, "e_{i}·e_{j} = {dot}");
        }
    }
    assert_eq!((evals, e), eigh()?, "the same basis on every run");
    Ok(())
}

/// A 4-5-3 tanh MLP, its weights set by [`set_layer`] (`fc2`'s scaled by
/// `output_scale`).
fn seeded_mlp(dtype: DType, output_scale: f64) -> Result<Mlp> {
    let mlp = Mlp::new(4, 5, 3, dtype)?;
    set_layer(&mlp.varmap, "fc1", dtype, 1.0)?;
    set_layer(&mlp.varmap, "fc2", dtype, output_scale)?;
    Ok(mlp)
}

/// The MLP's cross-entropy on `x`, `y`.
fn record_ce(mlp: &Mlp, x: &Tensor, y: &Tensor) -> Result<vivit::Recorded> {
    Ok(vivit::record(|| {
        vivit::loss::cross_entropy(&mlp.tanh(x)?, y)
    })?)
}

/// Zero eigenvalues: the `N` zeros of the cross-entropy GGN (its Hessian has
/// the null vector `√p`) are exact, and `Eigh` maps them to zero vectors;
/// directional derivatives and Newton steps refuse a kept `λ ≤ 0`.
#[test]
fn zero_eigenvalues() -> Result<()> {
    let mlp = seeded_mlp(DType::F64, 1.0)?;
    let x = input(&[6, 4], 3)?;
    let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2], &Device::Cpu)?;
    let loss = record_ce(&mlp, &x, &y)?;
    let groups = [ParamGroup::new(mlp.vars()).criterion(Criterion::all())];
    let mut eigvalsh = EigvalshComputation::new();
    let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
    vivit::backward(&loss, &groups, &mut [&mut eigvalsh, &mut eigh])?;
    let evals = to_f64(&eigvalsh.result(&groups[0])?)?;
    assert!(
        evals.iter().filter(|l| **l == 0.0).count() >= 6,
        "{evals:?}"
    );
    let vivit::Eigenpairs { evals: kept, evecs } = eigh.result(&groups[0])?;
    let kept = to_f64(&kept)?;
    for (k, l) in kept.iter().enumerate() {
        let norm: f64 = evecs
            .iter()
            .map(|t| Ok(to_f64(&t.get(k)?)?.iter().map(|v| v * v).sum::<f64>()))
            .sum::<Result<f64>>()?;
        let want = if *l == 0.0 { 0.0 } else { 1.0 };
        assert!((norm - want).abs() < 1e-12, "λ = {l}: ‖e‖² = {norm}");
    }
    let err = DirectionalDerivativesComputation::new()
        .compute(&loss, &groups)
        .expect_err("kept zeros are refused");
    assert!(matches!(err, Error::NonPositiveEigenvalue { .. }), "{err}");
    Ok(())
}

/// Negative round-off: a singular Gram matrix in f32 (duplicate samples) has
/// eigenvalues slightly below zero. They are reported as computed (not
/// clamped), within `C·N·ε·λ_max` of zero; `Criterion::above(0.0)` and the
/// optimizer's default threshold leave them out; kept, they are refused.
#[test]
fn negative_round_off_eigenvalues() -> Result<()> {
    let mlp = seeded_mlp(DType::F32, 1.0)?;
    let row = input(&[1, 4], 5)?.to_dtype(DType::F32)?;
    let x = Tensor::cat(&[&row, &row, &row, &row], 0)?;
    let y = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu)?;
    let loss = record_ce(&mlp, &x, &y)?;
    let groups = [ParamGroup::new(mlp.vars())];
    let mut eigvalsh = EigvalshComputation::new();
    eigvalsh.compute(&loss, &groups)?;
    let evals = to_f64(&eigvalsh.result(&groups[0])?)?;
    let lmax = evals.iter().fold(0.0f64, |m, l| m.max(*l));
    let bound = evals.len() as f64 * f64::from(f32::EPSILON) * lmax;
    assert!(evals[0] < 0.0, "the case has negative round-off: {evals:?}");
    assert!(evals[0] >= -bound, "{} below −{bound:e}", evals[0]);

    let keep_smallest = [ParamGroup::new(mlp.vars()).criterion(Criterion::custom(|_| vec![0]))];
    let err = DirectionalDampedNewtonComputation::new()
        .compute(&loss, &keep_smallest)
        .expect_err("a kept negative eigenvalue is refused");
    assert!(
        matches!(err, Error::NonPositiveEigenvalue { value, .. } if value < 0.0),
        "{err}"
    );
    let positive = [ParamGroup::new(mlp.vars()).criterion(Criterion::above(0.0))];
    let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
    eigh.compute(&loss, &positive)?;
    assert!(to_f64(&eigh.result(&positive[0])?.evals)?
        .iter()
        .all(|l| *l > 0.0));
    let before = values(&mlp.vars())?;
    let mut opt = DampedNewton::new(mlp.vars(), DampedNewtonConfig::default())?;
    let report = opt.step_recorded(&loss)?;
    assert!(report.predicted_change.is_finite());
    assert_ne!(values(&mlp.vars())?, before);
    Ok(())
}

/// All-zero gradients (MSE targets equal to the outputs): no error, `γ = 0`
/// and the step is exactly zero, so the optimizer leaves every bit in place.
/// The targets are the outputs of a recorded forward (a recorded linear layer
/// computes `x Wᵀ + b` by faer, candle's values up to round-off).
#[test]
fn all_zero_gradients_give_a_zero_step() -> Result<()> {
    let mlp = seeded_mlp(DType::F32, 1.0)?;
    let x = input(&[5, 4], 7)?.to_dtype(DType::F32)?;
    let recorded = std::cell::RefCell::new(None);
    vivit::record(|| {
        let out = mlp.tanh(&x)?;
        *recorded.borrow_mut() = Some(out.detach());
        vivit::loss::mse(&out, &out.detach())
    })?;
    let y = recorded.into_inner().expect("the closure ran");
    let loss = vivit::record(|| vivit::loss::mse(&mlp.tanh(&x)?, &y))?;
    assert_eq!(loss.to_scalar::<f32>()?, 0.0);
    let groups = [ParamGroup::new(mlp.vars()).criterion(Criterion::top_k_above(3, 1e-6))];
    let mut dd = DirectionalDerivativesComputation::new();
    let mut newton = DirectionalDampedNewtonComputation::new().complement(true);
    vivit::backward(&loss, &groups, &mut [&mut dd, &mut newton])?;
    assert!(to_f64(&dd.result(&groups[0])?.0)?.iter().all(|g| *g == 0.0));
    for s in newton.result(&groups[0])? {
        assert!(to_f64(&s)?.iter().all(|v| *v == 0.0));
    }
    let before = values(&mlp.vars())?;
    let mut opt = DampedNewton::new(mlp.vars(), DampedNewtonConfig::default())?;
    assert_eq!(opt.step_recorded(&loss)?.predicted_change, 0.0);
    assert_eq!(values(&mlp.vars())?, before);
    Ok(())
}

/// Huge logits (up to ±1e30 in f32): softmax and log-softmax subtract the
/// row maximum, so the loss stays finite and the saturated samples' Hessian
/// is zero rather than NaN; every result and the optimizer's step are finite.
#[test]
fn huge_logits_stay_finite() -> Result<()> {
    for scale in [1e4, 1e30] {
        let mlp = seeded_mlp(DType::F32, scale)?;
        let x = input(&[6, 4], 11)?.to_dtype(DType::F32)?;
        let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2], &Device::Cpu)?;
        let loss = record_ce(&mlp, &x, &y)?;
        assert!(loss.to_scalar::<f32>()?.is_finite(), "scale {scale:e}");
        let groups = [ParamGroup::new(mlp.vars()).criterion(Criterion::top_k(3))];
        let mut eigvalsh = EigvalshComputation::new();
        let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
        vivit::backward(&loss, &groups, &mut [&mut eigvalsh, &mut eigh])?;
        let vivit::Eigenpairs { evals, evecs } = eigh.result(&groups[0])?;
        let mut all = to_f64(&eigvalsh.result(&groups[0])?)?;
        all.extend(to_f64(&evals)?);
        for e in &evecs {
            all.extend(to_f64(e)?);
        }
        assert!(all.iter().all(|v| v.is_finite()), "scale {scale:e}");
        let mut opt = DampedNewton::new(mlp.vars(), DampedNewtonConfig::default())?;
        opt.step_recorded(&loss)?;
        for v in values(&mlp.vars())?.concat() {
            assert!(v.is_finite(), "scale {scale:e}");
        }
    }
    Ok(())
}

/// Warnings logged through `log`, for the test that looks for one.
struct Warnings(Mutex<Vec<String>>);

impl log::Log for Warnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut seen = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

fn warnings() -> &'static Warnings {
    static WARNINGS: OnceLock<&'static Warnings> = OnceLock::new();
    WARNINGS.get_or_init(|| {
        let warnings: &'static Warnings = Box::leak(Box::new(Warnings(Mutex::new(Vec::new()))));
        log::set_logger(warnings).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Warn);
        warnings
    })
}

/// Tiny curvature in f32 (inputs of size 1e-4, so `λ ≈ 1e-9`): `Eigh` warns
/// through `log` below `warn_small_eigvals` (default 1e-4); the directional optimizer's
/// default criterion (`λ > 1e-6`) keeps no direction, never divides by such a
/// `λ`, and takes the complement step `−ḡ/δ`: a gradient step.
#[test]
fn tiny_curvature_in_f32() -> Result<()> {
    let varmap = VarMap::new();
    let (fc, vars) = linear(&varmap, "fc", (4, 3, false), DType::F32, 1.0)?;
    let x = (input(&[5, 4], 13)? * 1e-4)?.to_dtype(DType::F32)?;
    let y = Tensor::new(&[0u32, 1, 2, 0, 1], &Device::Cpu)?;
    let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
    let groups = [ParamGroup::new(vars.clone()).criterion(Criterion::top_k(1))];
    let mut eigh = EighComputation::new();
    let warnings = warnings();
    eigh.compute(&loss, &groups)?;
    let top = to_f64(&eigh.result(&groups[0])?.evals)?[0];
    assert!(top > 0.0 && top < 1e-6, "λ_max = {top:e}");
    let seen = warnings.0.lock().expect("warnings");
    assert!(
        seen.iter().any(|w| w.contains("warn_small_eigvals")),
        "{seen:?}"
    );
    drop(seen);

    let grad = loss.backward()?;
    let gradient = to_f64(grad.get(vars[0].as_tensor()).expect("gradient"))?;
    let before = to_f64(vars[0].as_tensor())?;
    let mut opt = DampedNewton::new(vars.clone(), DampedNewtonConfig::directional())?;
    opt.step_recorded(&loss)?;
    let moved: Vec<f64> = to_f64(vars[0].as_tensor())?
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let want: Vec<f64> = gradient.iter().map(|g| -g).collect(); // lr = δ = 1
                                                                // f32: the step and the parameter update each round once, relative to the weights
    common::assert_close(
        "gradient step",
        &moved,
        &want,
        4.0 * f64::from(f32::EPSILON) * common::max_abs(&before) / common::max_abs(&want),
    );
    Ok(())
}

/// Subnormal curvature in f32 (inputs of size 1e-20, so Gram entries near
/// 1e-40): the eigenvalues come back (numerically) zero and the optimizer
/// takes its complement step, as with tiny curvature. (The Gram matrix is
/// scaled by a power of two before the eigensolver, which does not converge
/// on subnormal entries.)
#[test]
fn subnormal_curvature_in_f32() -> Result<()> {
    let varmap = VarMap::new();
    let (fc, vars) = linear(&varmap, "fc", (6, 3, false), DType::F32, 1.0)?;
    let x = (input(&[16, 6], 5)? * 1e-20)?.to_dtype(DType::F32)?;
    let y: Vec<u32> = (0..16).map(|n| n % 3).collect();
    let y = Tensor::new(y.as_slice(), &Device::Cpu)?;
    let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
    let groups = [ParamGroup::new(vars.clone())];
    let mut eigvalsh = EigvalshComputation::new();
    eigvalsh.compute(&loss, &groups)?;
    let evals = to_f64(&eigvalsh.result(&groups[0])?)?;
    assert!(evals.iter().all(|l| l.abs() < 1e-30), "{evals:?}");
    let mut opt = DampedNewton::new(vars, DampedNewtonConfig::directional())?;
    opt.step_recorded(&loss)?;
    Ok(())
}
