//! `DirectionalDampedNewtonComputation`: the directionally damped Newton step.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Tensor, TensorId};

use super::directions::{mean_gradient, warn_small, Directional, GramEigenpairs};
use super::options::{
    curvature_setters, directional_setters, eigensolver_setter, gradient_setter, lookup,
    step_solver_setter, warn_setter, Options,
};
use super::woodbury::{self, kept_steps, MeanGradient, WoodburyCurvature};
use crate::damping::DampingInput;
use crate::error::{check_finite, Error, Result};
use crate::extension::{mark, Block, Computation, Extension, Stage, Timings};
use crate::group::{GroupId, ParamGroup};
use crate::kernels::matmul;
use crate::linalg::host::scalar;
use crate::record::Recorded;

/// The directionally damped Newton step of each parameter group,
///
/// ```text
/// s = Σ_k τ_k e_k,   τ_k = −γ̄_k / (λ̄_k + δ_k),
/// ```
///
/// with `γ̄_k`, `λ̄_k` the means over samples of the directional derivatives of
/// [`crate::DirectionalDerivativesComputation`] and `δ_k` from the group's
/// [`crate::Damping`] (`δ_k = +∞` drops direction `k`). With `δ_k = 0` this is
/// the Newton step restricted to the kept eigenspace.
///
/// With [`Self::complement`], the step also moves along the gradient's part
/// outside the kept eigenspace, `g_⊥ = ḡ − Σ_k γ̄_k e_k`:
/// `s = Σ_k τ_k e_k − g_⊥ / δ_⊥`. With `δ_k = δ_⊥ = δ` this is the
/// Levenberg–Marquardt step `−(G_K + δ I)⁻¹ ḡ` of the rank-`K` truncated GGN
/// `G_K = Σ_k λ_k e_k e_kᵀ`.
///
/// With [`Self::step_solver`]`(`[`StepSolver::Woodbury`]`)` the step keeps
/// every direction with the group's one `δ` and the complement, the
/// Levenberg–Marquardt step `−(G + δ I)⁻¹ ḡ` of the group's whole GGN,
/// solved through the Gram matrix without an eigendecomposition (the
/// criterion is not used).
///
/// The step is returned, not applied; [`crate::DampedNewton`] applies it.
/// All-zero gradients give an exactly zero step (no error); a step with NaN
/// or ±∞ is refused ([`Error::NonFinite`]). `Send` and `Sync`, like every
/// computation.
#[derive(Debug, Clone, Default)]
pub struct DirectionalDampedNewtonComputation {
    options: Options,
    complement: bool,
    results: HashMap<GroupId, Vec<Tensor>>,
    /// What [`crate::DampedNewton`] adds to a pass, and what it takes back.
    drive: Drive,
}

/// The inputs [`crate::DampedNewton`] gives one pass of the computation, and
/// the steps it takes back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drive {
    /// The Woodbury curvature of an earlier pass, to serve this pass's
    /// gradients where it fits (see [`kept_steps`]); shared with the
    /// optimizer that keeps it, not copied.
    pub kept: Option<Arc<[WoodburyCurvature]>>,
    /// `∇L` of the parameters by id, for the Woodbury step's `ḡ`
    /// ([`MeanGradient::Given`]).
    pub gradients: Option<HashMap<TensorId, Tensor>>,
    /// The steps of the last pass.
    pub steps: Vec<NewtonStep>,
    /// Whether they computed their curvature (not the kept one).
    pub refreshed: bool,
}

impl DirectionalDampedNewtonComputation {
    /// Exact GGN, gradients and curvature on the whole batch, eigenspace step only.
    pub fn new() -> Self {
        Self::default()
    }

    directional_setters!();
    step_solver_setter!();

    /// Also steps along the gradient outside the kept eigenspace, `−g_⊥/δ_⊥`,
    /// with `δ_⊥` from the group's damping.
    pub fn complement(mut self, complement: bool) -> Self {
        self.complement = complement;
        self
    }

    /// Runs the computation in its own extended backward pass; returns where
    /// the pass spent its time.
    ///
    /// # Errors
    /// As [`crate::DirectionalDerivativesComputation::compute`], plus damping
    /// errors ([`Error::DampingLength`], [`Error::DampingValue`],
    /// [`Error::InvalidDamping`] (also for `δ_⊥ ≤ 0`),
    /// [`Error::NoComplementDamping`]) and [`Error::NonFinite`] for the step.
    pub fn compute(&mut self, recorded: &Recorded, groups: &[ParamGroup]) -> Result<Timings> {
        crate::backward(recorded, groups, &mut [self])
    }

    /// The step, one tensor per parameter of the group (same shapes).
    ///
    /// # Errors
    /// [`Error::NoResult`] if the group was not part of a computed pass.
    pub fn result(&self, group: &ParamGroup) -> Result<Vec<Tensor>> {
        lookup(&self.results, group)
    }

    /// The computation of [`crate::DampedNewton`]'s step: `options`, the
    /// complement step, and the pass's `drive`.
    pub(crate) fn driven(options: Options, complement: bool, drive: Drive) -> Self {
        Self {
            options,
            complement,
            results: HashMap::new(),
            drive,
        }
    }

    /// The steps of the last pass and whether they computed their curvature.
    pub(crate) fn into_steps(self) -> (Vec<NewtonStep>, bool) {
        (self.drive.steps, self.drive.refreshed)
    }
}

impl Computation for DirectionalDampedNewtonComputation {
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()> {
        let (o, drive) = (&self.options, &mut self.drive);
        let gradient = match &drive.gradients {
            Some(gradients) => MeanGradient::Given(gradients),
            None => MeanGradient::Factor,
        };
        let kept = match &drive.kept {
            Some(kept) => kept_steps(ext, groups, kept, o, gradient)?,
            None => None,
        };
        (drive.steps, drive.refreshed) = match kept {
            Some(steps) => (steps, false),
            None => (
                newton_steps(ext, groups, o, self.complement, gradient)?,
                true,
            ),
        };
        for (group, step) in groups.iter().zip(&drive.steps) {
            self.results.insert(group.id(), step.step.clone());
        }
        Ok(())
    }
}

/// How a group's damped Newton step is solved.
///
/// Both solve with the group's GGN `G = V Vᵀ` (`V` `[D, m]`, `m = C_eff·N_g`
/// columns) and its Gram matrix `G̃ = Vᵀ V` `[m, m]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepSolver {
    /// `s = Σ_k −γ̄_k/(λ̄_k + δ_k) e_k` along the eigenvectors the criterion
    /// keeps (eigendecomposition of `G̃`), with a damping per direction, plus
    /// `−g_⊥/δ_⊥` with the complement step.
    #[default]
    Directional,
    /// Every direction, one `δ > 0` ([`crate::Damping::constant`], or the
    /// current `δ` of [`crate::Damping::levenberg_marquardt`]), by the
    /// Sherman–Morrison–Woodbury identity:
    ///
    /// ```text
    /// s = −(V Vᵀ + δ I)⁻¹ ḡ = (V c − ḡ) / δ,   (G̃ + δ I) c = Vᵀ ḡ,
    /// ```
    ///
    /// one Cholesky factorization of the `m × m` matrix `G̃ + δI`
    /// (`m³/3` multiply-adds) and no eigendecomposition. It equals
    /// [`StepSolver::Directional`] with [`crate::Criterion::all`], a constant
    /// `δ` and the complement step.
    Woodbury,
}

/// A group's step and what the quadratic model predicts of it.
#[derive(Debug, Clone)]
pub(crate) struct NewtonStep {
    /// One tensor per parameter.
    pub step: Vec<Tensor>,
    /// `ḡᵀ s` (along the kept directions and the complement).
    pub slope: f64,
    /// `sᵀ G s` of the GGN the step is solved with (`G_K` for the directional step).
    pub curvature: f64,
    /// The curvature of a Woodbury step, for the gradients of later passes.
    pub reusable: Option<WoodburyCurvature>,
}

impl NewtonStep {
    /// The change of the quadratic model for the step `lr · s`:
    /// `lr ḡᵀs + ½ lr² sᵀ G s`.
    pub fn predicted_change(&self, lr: f64) -> f64 {
        lr * self.slope + 0.5 * lr * lr * self.curvature
    }
}

/// The steps of all groups, all checked finite before any is returned. The
/// Woodbury step takes `ḡ` from `gradient`; the directional step needs the
/// per-sample gradients (for `γ`) and always backpropagates their factor.
fn newton_steps(
    ext: &mut Extension<'_>,
    groups: &[ParamGroup],
    o: &Options,
    complement: bool,
    gradient: MeanGradient<'_>,
) -> Result<Vec<NewtonStep>> {
    match o.step_solver {
        StepSolver::Directional => {
            let (ggn, grad) = Directional::factors(ext, o)?;
            let (ggn, grad) = (ext.factor(ggn), ext.factor(grad));
            groups
                .iter()
                .enumerate()
                .map(|(g, group)| {
                    let d = Directional::compute(ggn.block(g), grad, group, o)?;
                    warn_small(&d.pairs.evals, o.warn_small_eigvals);
                    let blocks = (ggn.block(g), grad.block(g));
                    newton_step(blocks, group, &d, complement, o.verbose)
                })
                .collect()
        }
        StepSolver::Woodbury => {
            let (ggn, means) = woodbury::factors(ext, groups, o, gradient)?;
            let ggn = ext.factor(ggn);
            groups
                .iter()
                .zip(&means)
                .enumerate()
                .map(|(g, (group, g_bar))| woodbury::step(ggn.block(g), g_bar, group, o.verbose))
                .collect()
        }
    }
}

/// The directional step of a group along its kept directions `d`, with the
/// group's blocks of the GGN and gradient factors `(ggn, grad)`:
///
/// ```text
/// τ_k = −γ̄_k / (λ̄_k + δ_k),   s = Σ_k (τ_k + γ̄_k/δ_⊥) e_k − ḡ/δ_⊥,
/// ```
///
/// the complement terms `−g_⊥/δ_⊥ = −(ḡ − Σ_k γ̄_k e_k)/δ_⊥` only with
/// `complement`; `e_k = V ẽ_k / √λ_k`, so the eigenspace part is one product
/// of `V` with Gram-space coefficients.
fn newton_step(
    (ggn, grad): (Block<'_>, Block<'_>),
    group: &ParamGroup,
    d: &Directional,
    complement: bool,
    verbose: bool,
) -> Result<NewtonStep> {
    // γ̄ and λ̄ `[K]`, read in one copy
    let means = Tensor::cat(&[d.gammas.mean(0)?, d.lambdas.mean(0)?], 0)?;
    let mut gamma_bar = crate::linalg::host::read::<f64>(&means)?;
    let lambda_bar = gamma_bar.split_off(gamma_bar.len() / 2);
    let (deltas, delta_perp) = dampings(ggn, group, d, complement)?;
    let g = ggn.group();
    mark(Stage::Step, verbose, || {
        format!("group {g}: damped Newton step with δ = {deltas:?}")
    });
    let tau: Vec<f64> = (0..deltas.len())
        .map(|k| match deltas[k] {
            delta if delta.is_infinite() => 0.0,
            delta => -gamma_bar[k] / (lambda_bar[k] + delta),
        })
        .collect();
    let mut step = eigenspace_step(ggn, &d.pairs, &tau, &gamma_bar, delta_perp)?;
    let complement_decrease = match delta_perp {
        Some(dp) => subtract_complement(grad, &mut step, &gamma_bar, dp)?,
        None => 0.0,
    };
    check_finite(&step, "the damped Newton step")?;
    mark(Stage::Other, verbose, || format!("group {g}: step done"));
    let eigenspace_slope: f64 = gamma_bar.iter().zip(&tau).map(|(g, t)| g * t).sum();
    Ok(NewtonStep {
        step,
        slope: eigenspace_slope - complement_decrease,
        curvature: lambda_bar.iter().zip(&tau).map(|(l, t)| l * t * t).sum(),
        reusable: None,
    })
}

/// `Σ_k (τ_k + γ̄_k/δ_⊥) e_k` (the `δ_⊥` term with `delta_perp` only), one
/// tensor per parameter: with `e_k = V ẽ_k / √λ_k` it is `V ẽ` for the
/// Gram-space vector `ẽ = Σ_k (τ_k + γ̄_k/δ_⊥)/√λ_k ẽ_k`, one product of `V`.
fn eigenspace_step(
    ggn: Block<'_>,
    pairs: &GramEigenpairs,
    tau: &[f64],
    gamma_bar: &[f64],
    delta_perp: Option<f64>,
) -> Result<Vec<Tensor>> {
    let coefficients: Vec<f64> = (0..tau.len())
        .map(|k| (tau[k] + delta_perp.map_or(0.0, |dp| gamma_bar[k] / dp)) / pairs.evals[k].sqrt())
        .collect();
    let e = matmul(&pairs.row(&coefficients)?.unsqueeze(0)?, &pairs.gram_evecs)?;
    Ok(ggn
        .apply(&e)?
        .into_iter()
        .map(|s| s.squeeze(0))
        .collect::<candle_core::Result<_>>()?)
}

/// `s ← s − ḡ/δ_⊥` (the eigenspace part of `ḡ` is in `s`'s coefficients
/// already); returns the model decrease `‖g_⊥‖²/δ_⊥` of the complement step,
/// `‖g_⊥‖² = ‖ḡ‖² − Σ_k γ̄_k²` with `‖ḡ‖² = (1/N²) Σ_{n,n'} g_nᵀ g_n'`.
fn subtract_complement(
    grad: Block<'_>,
    step: &mut [Tensor],
    gamma_bar: &[f64],
    dp: f64,
) -> Result<f64> {
    let n = grad.factor().samples();
    for (s, gb) in step.iter_mut().zip(mean_gradient(grad)?) {
        *s = (&*s - (gb.squeeze(0)? / dp)?)?;
    }
    let g_sq = scalar(&grad.gram(false)?.sum_all()?)? / (n * n) as f64;
    let perp_sq = (g_sq - gamma_bar.iter().map(|x| x * x).sum::<f64>()).max(0.0);
    Ok(perp_sq / dp)
}

/// The group's damping `δ_k` of each kept direction and, with `complement`,
/// `δ_⊥ > 0` of the complement step (`+∞` turns it off).
fn dampings(
    ggn: Block<'_>,
    group: &ParamGroup,
    d: &Directional,
    complement: bool,
) -> Result<(Vec<f64>, Option<f64>)> {
    let damping = group.damping_ref();
    let deltas = damping.deltas(&DampingInput {
        evals: &d.pairs.evals,
        gram_evecs: &ggn.factor().reference_layout(&d.pairs.gram_evecs)?.t()?,
        gammas: &d.gammas,
        lambdas: &d.lambdas,
    })?;
    if !complement {
        return Ok((deltas, None));
    }
    let dp = damping
        .complement()
        .ok_or_else(|| Error::NoComplementDamping(format!("{damping:?}")))?;
    if dp.is_nan() || dp <= 0.0 {
        return Err(Error::InvalidDamping(format!(
            "δ_⊥ = {dp} for the complement step of {damping:?}; it must be > 0"
        )));
    }
    Ok((deltas, Some(dp)))
}
