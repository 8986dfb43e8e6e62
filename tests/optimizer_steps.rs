//! The DampedNewton optimizer's steps against the computation they apply:
//! damping per direction, the reference layout the damping sees, the
//! complement step, updates with momentum and weight decay, the trust region
//! and the curvature budget.

mod common;

use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::Module;
use common::tiny::Task;
use vivit::{Criterion, DampedNewton, DampedNewtonConfig, Damping};

/// `+∞` damping drops a direction: the step is that of the other directions.
#[test]
fn infinite_damping_drops_a_direction() -> Result<()> {
    let task = Task::new(true, 6)?;
    let recorded = task.record()?;
    let vars = task.vars();
    let kept_top = Arc::new(Mutex::new(Vec::new()));
    let seen = kept_top.clone();
    let groups = |damping: Damping| {
        [vivit::ParamGroup::new(vars.clone())
            .criterion(Criterion::top_k(2))
            .damping(damping)]
    };
    let step = |damping: Damping| -> Result<Vec<f64>> {
        let g = groups(damping);
        let mut newton = vivit::DirectionalDampedNewtonComputation::new();
        newton.compute(&recorded, &g)?;
        Ok(newton
            .result(&g[0])?
            .iter()
            .map(|t| t.flatten_all()?.to_vec1::<f64>())
            .collect::<candle_core::Result<Vec<_>>>()?
            .concat())
    };
    let dropped = step(Damping::custom(move |input| {
        seen.lock().expect("lock").push(input.evals[1]);
        vec![f64::INFINITY, 1.0]
    }))?;
    let g = groups(Damping::constant(1.0).with_complement(1.0));
    let mut eigh = vivit::EighComputation::new();
    let mut dd = vivit::DirectionalDerivativesComputation::new();
    vivit::backward(&recorded, &g, &mut [&mut eigh, &mut dd])?;
    let vivit::Eigenpairs { evals, evecs } = eigh.result(&g[0])?;
    let (gammas, lambdas) = dd.result(&g[0])?;
    let (gamma_bar, lambda_bar) = (
        gammas.mean(0)?.to_vec1::<f64>()?,
        lambdas.mean(0)?.to_vec1::<f64>()?,
    );
    assert_eq!(
        kept_top.lock().expect("lock")[0],
        evals.to_vec1::<f64>()?[1]
    );
    let tau = -gamma_bar[1] / (lambda_bar[1] + 1.0);
    let top: Vec<f64> = evecs
        .iter()
        .map(|t| t.get(1)?.flatten_all()?.to_vec1::<f64>())
        .collect::<candle_core::Result<Vec<_>>>()?
        .concat();
    for (s, e) in dropped.iter().zip(&top) {
        assert!((s - tau * e).abs() < 1e-12, "{s} vs {}", tau * e);
    }
    Ok(())
}

/// The damping closure sees the Gram eigenvectors in the reference layout
/// `[C·N, K]` (index `c·N + n`): orthonormal, and orthogonal per sample to the
/// cross-entropy Hessian's null vector `√p_n`, as the reference's are.
#[test]
fn damping_sees_gram_eigenvectors_in_the_reference_layout() -> Result<()> {
    let task = Task::new(true, 7)?;
    let recorded = task.record()?;
    let seen: Arc<Mutex<Vec<Vec<f64>>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let damping = Damping::custom(move |input| {
        let e = input
            .gram_evecs
            .t()
            .and_then(|e| e.to_vec2::<f64>())
            .expect("evecs");
        *sink.lock().expect("lock") = e;
        vec![1.0; input.evals.len()]
    });
    let vars = task.vars();
    let groups = [vivit::ParamGroup::new(vars)
        .criterion(Criterion::top_k(4))
        .damping(damping)];
    vivit::DirectionalDampedNewtonComputation::new().compute(&recorded, &groups)?;
    let e = seen.lock().expect("lock").clone();
    let (n, c) = (48, 3);
    assert_eq!((e.len(), e[0].len()), (4, c * n));
    let logits = task.fc2.forward(&task.fc1.forward(&task.x)?.tanh()?)?;
    let p = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f64>()?;
    for (i, ei) in e.iter().enumerate() {
        for (j, ej) in e.iter().enumerate() {
            let dot: f64 = ei.iter().zip(ej).map(|(a, b)| a * b).sum();
            assert!(
                (dot - f64::from(u8::from(i == j))).abs() < 1e-10,
                "ẽ_{i}·ẽ_{j} = {dot}"
            );
        }
        for (s, p_s) in p.iter().enumerate() {
            let null: f64 = (0..c).map(|k| p_s[k].sqrt() * ei[k * n + s]).sum();
            assert!(
                null.abs() < 1e-10,
                "sample {s}: component along √p = {null}"
            );
        }
    }
    Ok(())
}

/// With no kept direction, the complement step is the gradient step `−ḡ/δ_⊥`.
#[test]
fn no_kept_direction_leaves_the_gradient_step() -> Result<()> {
    let task = Task::new(false, 8)?;
    let before = task.values()?;
    let grads = task.loss()?.backward()?;
    let expected: Vec<Vec<f64>> = task
        .vars()
        .iter()
        .zip(&before)
        .map(|(v, b)| {
            let g = grads
                .get(v.as_tensor())
                .expect("grad")
                .flatten_all()?
                .to_vec1::<f64>()?;
            Ok(b.iter().zip(g).map(|(x, g)| x - 0.5 * g / 2.0).collect())
        })
        .collect::<Result<_>>()?;
    let config = DampedNewtonConfig::directional()
        .lr(0.5)
        .criterion(Criterion::custom(|_| Vec::new()))
        .damping(Damping::constant(2.0));
    let mut opt = DampedNewton::from_varmap(&task.varmap, config);
    opt.step_recorded(&task.record()?)?;
    for (got, want) in task.values()?.iter().zip(&expected) {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
    Ok(())
}

/// A criterion that keeps directions of zero curvature (`Criterion::all()`
/// on the exact cross-entropy GGN, whose Gram matrix has zero eigenvalues)
/// steps exactly as one that keeps only the positive ones.
#[test]
fn zero_curvature_directions_are_dropped() -> Result<()> {
    let step = |criterion: Criterion| -> Result<Vec<Vec<f64>>> {
        let task = Task::new(true, 9)?;
        let config = DampedNewtonConfig::directional().criterion(criterion);
        let mut opt = DampedNewton::from_varmap(&task.varmap, config);
        opt.step_recorded(&task.record()?)?;
        task.values()
    };
    assert_eq!(step(Criterion::all())?, step(Criterion::above(0.0))?);
    Ok(())
}

/// The optimizer applies `θ ← θ − lr·wd·θ + lr·u`, `u ← μu + s`, with `s` the
/// step of `DirectionalDampedNewtonComputation` on the same settings, bit for
/// bit: momentum 0 and no weight decay give `θ + lr·s` (the step before
/// momentum existed), for the directional and the Woodbury solver (no trust
/// region, no curvature budget).
#[test]
fn updates_apply_the_computed_step() -> Result<()> {
    use candle_core::Tensor;
    use vivit::{DirectionalDampedNewtonComputation, ParamGroup, StepSolver};
    for solver in [StepSolver::Directional, StepSolver::Woodbury] {
        for (momentum, weight_decay) in [(0.0, 0.0), (0.5, 0.0), (0.9, 0.01)] {
            let (lr, delta) = (0.7, 0.5);
            let task = Task::new(true, 10)?;
            let config = DampedNewtonConfig::directional()
                .lr(lr)
                .damping(Damping::constant(delta))
                .step_solver(solver)
                .momentum(momentum)
                .weight_decay(weight_decay);
            let criterion = config.criterion.clone();
            let mut opt = DampedNewton::from_varmap(&task.varmap, config);
            let vars = task.vars();
            let mut velocity: Vec<Option<Tensor>> = vec![None; vars.len()];
            for _ in 0..3 {
                let loss = task.record()?;
                let group = [ParamGroup::new(vars.clone())
                    .criterion(criterion.clone())
                    .damping(Damping::constant(delta))];
                let mut newton = DirectionalDampedNewtonComputation::new()
                    .complement(true)
                    .step_solver(solver);
                newton.compute(&loss, &group)?;
                let mut want = Vec::new();
                for ((var, s), u) in vars
                    .iter()
                    .zip(newton.result(&group[0])?)
                    .zip(&mut velocity)
                {
                    let next = match u.take() {
                        Some(u) if momentum > 0.0 => ((u * momentum)? + &s)?,
                        _ => s,
                    };
                    let theta = var.as_tensor();
                    let decayed = if weight_decay > 0.0 {
                        (theta - (theta * (lr * weight_decay))?)?
                    } else {
                        theta.clone()
                    };
                    want.push((decayed + (&next * lr)?)?.flatten_all()?.to_vec1::<f64>()?);
                    *u = Some(next);
                }
                opt.step_recorded(&loss)?;
                assert_eq!(
                    task.values()?,
                    want,
                    "{solver:?}, μ = {momentum}, wd = {weight_decay}"
                );
            }
        }
    }
    Ok(())
}

/// The trust region scales the step to `lr² ν² |ḡᵀs| = κ` where it is larger,
/// and a curvature budget of 60 Gram rows on 48 samples of 3 outputs takes
/// the curvature on every second sample, from offset 0 and then 1; both
/// against the Woodbury step of the computation on those samples, with `ḡ`
/// from an ordinary backward pass.
#[test]
fn trust_region_and_curvature_budget() -> Result<()> {
    use vivit::{DirectionalDampedNewtonComputation, ParamGroup, StepSolver};
    let (lr, delta, kappa) = (1.0, 0.1, 1e-3);
    let task = Task::new(true, 11)?;
    let config = DampedNewtonConfig::default()
        .lr(lr)
        .damping(Damping::constant(delta))
        .step_solver(StepSolver::Woodbury)
        .trust_region(kappa)
        .curvature_budget(60);
    let mut opt = DampedNewton::from_varmap(&task.varmap, config);
    let vars = task.vars();
    for offset in [0, 1] {
        let loss = task.record()?;
        let grads = loss.backward()?;
        let group = [ParamGroup::new(vars.clone()).damping(Damping::constant(delta))];
        let mut newton = DirectionalDampedNewtonComputation::new()
            .step_solver(StepSolver::Woodbury)
            .subsampling_ggn((0..20).map(|i| offset + 2 * i));
        newton.compute(&loss, &group)?;
        let steps = newton.result(&group[0])?;
        let mut slope = 0.0;
        for (var, s) in vars.iter().zip(&steps) {
            let g = grads.get(var.as_tensor()).expect("gradient");
            slope += (g * s)?.sum_all()?.to_scalar::<f64>()?;
        }
        let size = lr * lr * slope.abs();
        assert!(size > kappa, "the trust region must bind: {size}");
        let nu = (kappa / size).sqrt();
        let want: Vec<Vec<f64>> = vars
            .iter()
            .zip(&steps)
            .map(|(var, s)| {
                let theta = var.flatten_all()?.to_vec1::<f64>()?;
                let s = s.flatten_all()?.to_vec1::<f64>()?;
                Ok(theta.iter().zip(s).map(|(t, s)| t + lr * nu * s).collect())
            })
            .collect::<Result<_>>()?;
        opt.step_recorded(&loss)?;
        for (got, want) in task.values()?.iter().zip(&want) {
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
    Ok(())
}
