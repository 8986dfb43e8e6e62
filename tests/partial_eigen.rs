//! The partial eigensolver on Gram matrices the crate builds:
//! `Eigensolver::Partial` against `Eigensolver::Full` through the computations.
//!
//! Tolerances, derived. With `‖G̃‖ = λ_max`:
//!
//! - The partial solver stops at Gram residuals `‖r‖ ≤ tol ‖G̃‖`,
//!   `tol = max(ε, 16 √n ε_64)` (`vivit::Eigensolver`), plus the rounding of
//!   its own products, `√n ε_64 ‖G̃‖ ≤ tol/16`.
//! - faer's dense f64 solver is backward stable; its residuals are at most
//!   `tol ‖G̃‖` too (asserted on random matrices by the unit tests of
//!   `src/linalg`). In f32 its backward error is taken as `√n ε_32 ‖G̃‖_F`:
//!   the rounding errors of its `O(n)`-step reductions add up like a random
//!   walk (the same model as the `√n ε_64` above; the worst case is `n ε`).
//! - A residual `r` puts the Ritz value within `‖r‖` of an eigenvalue, and the
//!   Gram eigenvector within `sin ∠ ≤ ‖r‖/δ` of the true one (`δ` its gap to
//!   the rest of the spectrum); the two solvers' errors add up.
//! - In parameter space `e = V ẽ / ‖V ẽ‖`: a Gram perturbation
//!   `ẽ' = c ẽ + s w` (`w ⊥ ẽ`) moves `e` by `sin ∠ ≤ s ‖V w‖ / ‖V ẽ'‖ ≤
//!   s √(λ_max / λ_k)`.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use common::to_f64;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use vivit::{
    Criterion, DampedNewton, DampedNewtonConfig, DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation, Eigensolver, EighComputation, EigvalshComputation, Error,
    ParamGroup,
};

const INPUTS: usize = 20;
const CLASSES: usize = 10;
/// Samples of the large problem: an exact cross-entropy Gram of
/// `(C − 1) · N = 1080` rows, where `Eigensolver::Auto` picks the partial solver.
const SAMPLES: usize = 120;

/// A seeded 20-`hidden`-10 ReLU MLP with cross-entropy on `samples` samples.
struct Mlp {
    net: common::mlp::Mlp,
    x: Tensor,
    y: Tensor,
}

impl Mlp {
    fn new(dtype: DType, hidden: usize, samples: usize) -> Result<Self> {
        let dev = Device::Cpu;
        let net = common::mlp::Mlp::new(INPUTS, hidden, CLASSES, dtype)?;
        let mut rng = StdRng::seed_from_u64(3);
        let mut normal = |shape: &[usize], std: f64| -> Result<Tensor> {
            let values: Vec<f64> = (0..shape.iter().product())
                .map(|_| std * rng.sample::<f64, _>(StandardNormal))
                .collect();
            Ok(Tensor::from_vec(values, shape, &dev)?.to_dtype(dtype)?)
        };
        for var in net.vars() {
            var.set(&normal(var.dims(), 0.5)?)?;
        }
        let x = normal(&[samples, INPUTS], 1.0)?;
        let labels: Vec<u32> = (0..samples).map(|i| (i * 7 % CLASSES) as u32).collect();
        let y = Tensor::new(labels, &dev)?;
        Ok(Self { net, x, y })
    }

    fn record(&self) -> Result<vivit::Recorded> {
        Ok(vivit::record(|| {
            vivit::loss::cross_entropy(&self.net.relu(&self.x)?, &self.y)
        })?)
    }

    fn group(&self, criterion: Criterion) -> [ParamGroup; 1] {
        [ParamGroup::new(self.net.varmap.all_vars()).criterion(criterion)]
    }

    /// All Gram eigenvalues (the omitted zeros included), ascending.
    fn spectrum(&self) -> Result<Vec<f64>> {
        let groups = self.group(Criterion::all());
        let mut eigvalsh = EigvalshComputation::new();
        eigvalsh.compute(&self.record()?, &groups)?;
        to_f64(&eigvalsh.result(&groups[0])?)
    }

    /// ‖∇L‖ of the mean loss.
    fn gradient_norm(&self) -> Result<f64> {
        let grads = self.record()?.backward()?;
        let mut sq = 0.0;
        for var in self.net.varmap.all_vars() {
            let g = grads.get(var.as_tensor()).expect("a gradient");
            sq += to_f64(g)?.iter().map(|v| v * v).sum::<f64>();
        }
        Ok(sq.sqrt())
    }
}

/// The partial solver's residual bound relative to `‖G̃‖`, with its own
/// rounding: `(1 + 1/16) max(ε, 16 √n ε_64)`.
fn tol(eps: f64, n: usize) -> f64 {
    (1.0 + 1.0 / 16.0) * eps.max(16.0 * (n as f64).sqrt() * f64::EPSILON)
}

/// Eigenvalues `[K]` and the eigenvectors as rows `[K, D]` (parameters
/// concatenated) of an Eigh computation with `solver`.
fn eigh(
    mlp: &Mlp,
    groups: &[ParamGroup],
    solver: Eigensolver,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let mut eigh = EighComputation::new().eigensolver(solver);
    eigh.compute(&mlp.record()?, groups)?;
    let vivit::Eigenpairs { evals, evecs } = eigh.result(&groups[0])?;
    let evals = to_f64(&evals)?;
    let rows = (0..evals.len())
        .map(|k| {
            let mut row = Vec::new();
            for e in &evecs {
                row.extend(to_f64(&e.get(k)?)?);
            }
            Ok(row)
        })
        .collect::<Result<_>>()?;
    Ok((evals, rows))
}

/// `sin ∠(a, b)` of unit vectors: the norm of `a`'s part orthogonal to `b`.
fn sin_angle(a: &[f64], b: &[f64]) -> f64 {
    let cos: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - cos * y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Bounds on the parameter-space angle between the two solvers' eigenvectors
/// of the top `evals` (ascending) within `spectrum`, from residuals of at most
/// `err` each, `None` where the gap does not separate the eigenvalue.
fn angle_bounds(evals: &[f64], spectrum: &[f64], err: f64) -> Vec<Option<f64>> {
    let (n, k) = (spectrum.len(), evals.len());
    let lambda_max = spectrum[n - 1];
    (0..k)
        .map(|i| {
            let at = n - k + i;
            let gap = (0..n)
                .filter(|&j| j != at)
                .map(|j| (spectrum[j] - spectrum[at]).abs())
                .fold(f64::INFINITY, f64::min)
                - 2.0 * err;
            let gram = 2.0 * err / gap;
            (gap > 0.0 && gram < 0.1).then(|| gram * (lambda_max / evals[i]).sqrt())
        })
        .collect()
}

#[test]
fn eigh_partial_equals_full_on_an_mlp_gram() -> Result<()> {
    let mlp = Mlp::new(DType::F64, 30, SAMPLES)?;
    let spectrum = mlp.spectrum()?;
    let n = (CLASSES - 1) * SAMPLES;
    assert_eq!(spectrum.len(), n + SAMPLES);
    let err = tol(f64::EPSILON, n) * spectrum[spectrum.len() - 1];
    let groups = mlp.group(Criterion::top_k(10));
    let (partial_evals, partial_evecs) = eigh(&mlp, &groups, Eigensolver::Partial)?;
    let (full_evals, full_evecs) = eigh(&mlp, &groups, Eigensolver::Full)?;
    for (p, f) in partial_evals.iter().zip(&full_evals) {
        assert!((p - f).abs() <= 2.0 * err, "eigenvalue {p} vs {f}");
    }
    // the mapping e = V ẽ / ‖V ẽ‖ rounds at √D ε_64 (a sum over D parameters)
    let rounding = (partial_evecs[0].len() as f64).sqrt() * f64::EPSILON;
    let bounds = angle_bounds(&partial_evals, &spectrum, err);
    assert!(
        bounds.iter().flatten().count() >= 5,
        "gaps too small: {bounds:?}"
    );
    for (k, bound) in bounds.iter().enumerate() {
        if let Some(bound) = bound {
            let sin = sin_angle(&partial_evecs[k], &full_evecs[k]);
            assert!(
                sin <= bound + rounding,
                "eigenvector {k}: sin ∠ = {sin:e} > {bound:e}"
            );
        }
    }
    Ok(())
}

#[test]
fn eigh_partial_equals_full_in_f32() -> Result<()> {
    let mlp = Mlp::new(DType::F32, 30, SAMPLES)?;
    let spectrum = mlp.spectrum()?;
    let n = (CLASSES - 1) * SAMPLES;
    let frobenius = spectrum.iter().map(|l| l * l).sum::<f64>().sqrt();
    let eps = f64::from(f32::EPSILON);
    // partial: tol ‖G̃‖; full f32: √n ε ‖G̃‖_F; both values are then rounded
    // to f32 (ε/2 relative each)
    let lambda_max = spectrum[spectrum.len() - 1];
    let bound = tol(eps, n) * lambda_max + (n as f64).sqrt() * eps * frobenius + eps * lambda_max;
    let groups = mlp.group(Criterion::top_k(10));
    let (partial, _) = eigh(&mlp, &groups, Eigensolver::Partial)?;
    let (full, _) = eigh(&mlp, &groups, Eigensolver::Full)?;
    for (p, f) in partial.iter().zip(&full) {
        assert!(
            (p - f).abs() <= bound,
            "eigenvalue {p} vs {f} (bound {bound:e})"
        );
    }
    Ok(())
}

#[test]
fn newton_step_partial_equals_full() -> Result<()> {
    let mlp = Mlp::new(DType::F64, 30, SAMPLES)?;
    let spectrum = mlp.spectrum()?;
    let n = (CLASSES - 1) * SAMPLES;
    let lambda_max = spectrum[spectrum.len() - 1];
    let err = tol(f64::EPSILON, n) * lambda_max;
    let groups = mlp.group(Criterion::top_k(10)); // damping δ = 1
    let step = |solver| -> Result<Vec<f64>> {
        let mut newton = DirectionalDampedNewtonComputation::new().eigensolver(solver);
        newton.compute(&mlp.record()?, &groups)?;
        let mut flat = Vec::new();
        for s in newton.result(&groups[0])? {
            flat.extend(to_f64(&s)?);
        }
        Ok(flat)
    };
    let (partial, full) = (step(Eigensolver::Partial)?, step(Eigensolver::Full)?);
    // s = Σ_k −P_k ḡ / (λ̄_k + δ), P_k = e_k e_kᵀ. Per direction, with the
    // eigenvector angle φ_k (‖P − P'‖ = sin φ) and λ̄ = eᵀ G e (which moves by
    // ≤ 2 λ_max ‖e − e'‖ ≤ 2√2 λ_max sin φ), plus the eigenvalue error of the
    // normalization e = V ẽ / √λ (relative err/λ_k):
    // ‖Δ‖ ≤ ‖ḡ‖ (sin φ (1/a + 2√2 λ_max/a²) + err/(λ_k a)),  a = λ_k + δ − 2 err.
    let evals = &spectrum[spectrum.len() - 10..];
    let g = mlp.gradient_norm()?;
    let mut bound = 0.0;
    for (lambda, angle) in evals.iter().zip(angle_bounds(evals, &spectrum, err)) {
        // an unseparated direction may turn by up to 90°
        let sin = angle.unwrap_or(1.0);
        let a = lambda + 1.0 - 2.0 * err;
        bound +=
            g * (sin * (1.0 / a + 2.0 * 2f64.sqrt() * lambda_max / (a * a)) + err / (lambda * a));
    }
    let rounding = (partial.len() as f64).sqrt() * f64::EPSILON * g;
    let diff = partial
        .iter()
        .zip(&full)
        .map(|(p, f)| (p - f).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(diff <= bound + rounding, "‖Δs‖ = {diff:e} > {bound:e}");
    assert!(
        bound < 1e-6 * g,
        "the gaps make the comparison vacuous: {bound:e}"
    );
    Ok(())
}

#[test]
fn more_pairs_than_positive_eigenvalues() -> Result<()> {
    // 3 hidden units: D = 103 parameters, so G̃ [1080, 1080] has rank ≤ 103
    let mlp = Mlp::new(DType::F64, 3, SAMPLES)?;
    let spectrum = mlp.spectrum()?;
    let n = (CLASSES - 1) * SAMPLES;
    let err = tol(f64::EPSILON, n) * spectrum[spectrum.len() - 1];
    let rank = spectrum.iter().filter(|&&l| l > 1e3 * err).count();
    assert!(rank <= 103);
    for criterion in [
        Criterion::top_k(rank + 20),
        Criterion::top_k_above(rank + 20, 1e3 * err),
    ] {
        let groups = mlp.group(criterion);
        let (partial, _) = eigh(&mlp, &groups, Eigensolver::Partial)?;
        let (full, _) = eigh(&mlp, &groups, Eigensolver::Full)?;
        assert_eq!(partial.len(), full.len());
        for (p, f) in partial.iter().zip(&full) {
            assert!((p - f).abs() <= 2.0 * err, "eigenvalue {p} vs {f}");
        }
    }
    Ok(())
}

#[test]
fn auto_is_partial_for_a_large_gram_and_full_for_a_small_one() -> Result<()> {
    for (samples, like) in [(SAMPLES, Eigensolver::Partial), (40, Eigensolver::Full)] {
        let mlp = Mlp::new(DType::F64, 30, samples)?;
        let groups = mlp.group(Criterion::top_k(10));
        let auto = eigh(&mlp, &groups, Eigensolver::Auto)?;
        // bit-identical: the same solver ran (and it is deterministic)
        assert_eq!(auto, eigh(&mlp, &groups, like)?, "{samples} samples");
    }
    Ok(())
}

#[test]
fn partial_refuses_criteria_that_need_the_whole_spectrum() -> Result<()> {
    let mlp = Mlp::new(DType::F64, 30, 40)?;
    let recorded = mlp.record()?;
    let groups = mlp.group(Criterion::above(0.1));
    let refused =
        |e: Error| matches!(e, Error::PartialEigensolver(name) if name == "Criterion::above(0.1)");
    let mut eigh = EighComputation::new().eigensolver(Eigensolver::Partial);
    assert!(refused(
        eigh.compute(&recorded, &groups).expect_err("refused")
    ));
    let mut derivatives =
        DirectionalDerivativesComputation::new().eigensolver(Eigensolver::Partial);
    assert!(refused(
        derivatives
            .compute(&recorded, &groups)
            .expect_err("refused")
    ));
    // the optimizer's option reaches the computation too
    let config = DampedNewtonConfig::directional()
        .criterion(Criterion::above(0.1))
        .eigensolver(Eigensolver::Partial);
    let mut opt = DampedNewton::from_varmap(&mlp.net.varmap, config);
    assert!(refused(opt.step_recorded(&recorded).expect_err("refused")));
    Ok(())
}
