//! The full-rank damped Newton step of a group through its Gram matrix.

use std::collections::HashMap;

use candle_core::{Tensor, TensorId};

use super::damped_newton::NewtonStep;
use super::directions::{mean_gradient, Directional};
use super::options::Options;
use crate::error::{check_finite, Error, Result};
use crate::extension::{mark, Block, Extension, FactorId, KeptFactor, Stage};
use crate::group::ParamGroup;
use crate::linalg::host::scalars;
use crate::linalg::ShiftedCholesky;

/// The Levenberg–Marquardt step `s = −(V Vᵀ + δ I)⁻¹ ḡ` of the group's block
/// `ggn` (`V`) of the GGN factor for its mean gradient `g_bar` (one `[1, *p.shape]`
/// tensor per parameter), by Sherman–Morrison–Woodbury:
///
/// ```text
/// r = Vᵀ ḡ,   (G̃ + δ I) c = r,   s = (V c − ḡ) / δ,
/// ḡᵀ s = (rᵀ c − ‖ḡ‖²) / δ,   Vᵀ s = (G̃ c − r) / δ,   sᵀ G s = ‖Vᵀ s‖².
/// ```
///
/// `r` is one product of `Vᵀ` with `ḡ`, not the mean of the `Vᵀ g_n`. The
/// step carries its [`WoodburyCurvature`] for later gradients.
///
/// # Errors
/// [`Error::InvalidDamping`] unless the group's damping gives one finite
/// `δ > 0` ([`crate::Damping::constant`] or
/// [`crate::Damping::levenberg_marquardt`]); [`Error::Cholesky`];
/// [`Error::NonFinite`] for the step.
pub(super) fn step(
    ggn: Block<'_>,
    g_bar: &[Tensor],
    group: &ParamGroup,
    verbose: bool,
) -> Result<NewtonStep> {
    let delta = scalar_damping(group)?;
    let (g, gram) = (ggn.group(), ggn.gram(verbose)?);
    mark(Stage::Cholesky, verbose, || {
        format!(
            "group {g}: Woodbury step, Cholesky of the {m}×{m} Gram matrix + {delta}·I",
            m = gram.dim(0).unwrap_or(0)
        )
    });
    let curvature = WoodburyCurvature {
        factor: ggn.keep(),
        cholesky: ShiftedCholesky::new(&gram, delta)?,
        gram,
    };
    mark(Stage::Step, verbose, || {
        format!("group {g}: Cholesky factorization done")
    });
    let mut step = curvature.solve(g_bar, g, verbose)?;
    step.reusable = Some(curvature);
    Ok(step)
}

/// Where a pass takes each group's mean gradient `ḡ` from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MeanGradient<'g> {
    /// The mean of the pass's per-sample gradient factor (on the samples of
    /// `subsampling_grad`): one more factor pass.
    Factor,
    /// The gradients of the recorded loss that a backward pass gave, `∇L`
    /// on the whole batch, by parameter id (no factor pass); used where
    /// `subsampling_grad` is not set.
    Given(&'g HashMap<TensorId, Tensor>),
}

impl<'g> MeanGradient<'g> {
    /// The given gradients, where they serve the options `o` (no
    /// `subsampling_grad`).
    fn given(self, o: &Options) -> Option<&'g HashMap<TensorId, Tensor>> {
        match self {
            MeanGradient::Given(store) if o.subsampling_grad.is_none() => Some(store),
            _ => None,
        }
    }
}

/// The GGN factor of the pass and the mean gradient of every group, the
/// Woodbury step's inputs.
pub(super) fn factors(
    ext: &mut Extension<'_>,
    groups: &[ParamGroup],
    o: &Options,
    gradient: MeanGradient<'_>,
) -> Result<(FactorId, Vec<Vec<Tensor>>)> {
    match gradient.given(o) {
        Some(store) => {
            let ggn = o.ggn_factor(ext, "subsampling_ggn")?;
            Ok((ggn, given_means(store, groups)?))
        }
        None => {
            let (ggn, grad) = Directional::factors(ext, o)?;
            Ok((ggn, factor_means(ext, grad, groups.len())?))
        }
    }
}

/// The mean of the gradient factor `grad` for each of `groups` groups.
fn factor_means(ext: &Extension<'_>, grad: FactorId, groups: usize) -> Result<Vec<Vec<Tensor>>> {
    let grad = ext.factor(grad);
    (0..groups).map(|g| mean_gradient(grad.block(g))).collect()
}

/// `∇L` of each group's parameters from `store` (zeros where the loss does
/// not reach a parameter), one `[1, *p.shape]` tensor each.
fn given_means(
    store: &HashMap<TensorId, Tensor>,
    groups: &[ParamGroup],
) -> Result<Vec<Vec<Tensor>>> {
    groups
        .iter()
        .map(|group| {
            group
                .params()
                .iter()
                .map(|p| {
                    let grad = match store.get(&p.id()) {
                        Some(grad) => grad.clone(),
                        None => p.as_tensor().zeros_like()?,
                    };
                    Ok(grad.unsqueeze(0)?)
                })
                .collect()
        })
        .collect()
}

/// The Woodbury steps of all groups for this pass's gradients (`gradient`,
/// option `subsampling_grad`) with the curvature `kept[g]` of an earlier pass, or
/// `None` where a curvature does not fit this pass: another number of
/// groups, or a damping that now gives another `δ`
/// ([`crate::Damping::levenberg_marquardt`] adapts). The caller checks that
/// the groups hold the same parameters.
///
/// # Errors
/// As [`step`], without [`Error::Cholesky`].
pub(super) fn kept_steps(
    ext: &mut Extension<'_>,
    groups: &[ParamGroup],
    kept: &[WoodburyCurvature],
    o: &Options,
    gradient: MeanGradient<'_>,
) -> Result<Option<Vec<NewtonStep>>> {
    if kept.len() != groups.len() {
        return Ok(None);
    }
    for (group, curvature) in groups.iter().zip(kept) {
        if scalar_damping(group)? != curvature.cholesky.delta() {
            return Ok(None);
        }
    }
    let means = match gradient.given(o) {
        Some(store) => given_means(store, groups)?,
        None => {
            let request =
                Extension::gradient_request(o.subsampling_grad.as_deref(), "subsampling_grad");
            let grad = ext.factors(&[request], o.verbose)?[0];
            factor_means(ext, grad, groups.len())?
        }
    };
    kept.iter()
        .zip(&means)
        .enumerate()
        .map(|(g, (curvature, g_bar))| {
            mark(Stage::Step, o.verbose, || {
                format!("group {g}: Woodbury step with the kept curvature")
            });
            curvature.solve(g_bar, g, o.verbose)
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// The one `δ > 0` of the group's damping.
fn scalar_damping(group: &ParamGroup) -> Result<f64> {
    let damping = group.damping_ref();
    let delta = damping.scalar().ok_or_else(|| {
        Error::InvalidDamping(format!(
            "the Woodbury step takes one δ for all directions, {damping:?} chooses one per \
             direction: use Damping::constant or Damping::levenberg_marquardt, or \
             StepSolver::Directional"
        ))
    })?;
    if !(delta.is_finite() && delta > 0.0) {
        return Err(Error::InvalidDamping(format!(
            "δ = {delta} for the Woodbury step of {damping:?}; it must be finite and > 0"
        )));
    }
    Ok(delta)
}

/// What a group's Woodbury step needs of its GGN `G = V Vᵀ`, kept beyond the
/// pass it was computed in: the factor `V`, the Gram matrix `G̃ = Vᵀ V` and
/// the Cholesky factor of `G̃ + δ I`. With it, a later gradient `ḡ'` gets
/// the step `−(V Vᵀ + δ I)⁻¹ ḡ'` of the earlier curvature at the cost of
/// `Vᵀ ḡ'`, two triangular solves and `V c`, without backpropagating the
/// loss-Hessian factor.
#[derive(Debug, Clone)]
pub(crate) struct WoodburyCurvature {
    factor: KeptFactor,
    gram: Tensor,
    cholesky: ShiftedCholesky,
}

impl WoodburyCurvature {
    /// The step for the mean gradient `g_bar` of group `g`.
    fn solve(&self, g_bar: &[Tensor], g: usize, verbose: bool) -> Result<NewtonStep> {
        let delta = self.cholesky.delta();
        let r = self.factor.transpose_apply(g_bar)?;
        let c = self.cholesky.solve(&r)?;
        let v_c = self.factor.apply(&c.unsqueeze(0)?)?;
        let step = v_c
            .iter()
            .zip(g_bar)
            .map(|(vc, gb)| Ok(((vc - gb)? / delta)?.squeeze(0)?))
            .collect::<Result<Vec<_>>>()?;
        check_finite(&step, "the damped Newton step")?;
        let vt_s = ((self.gram.matmul(&c.unsqueeze(1)?)?.squeeze(1)? - &r)? / delta)?;
        // rᵀc, ‖Vᵀs‖² and the ‖ḡ_i‖² of each parameter, read in one copy
        let mut parts = vec![(&r * &c)?.sum_all()?, vt_s.sqr()?.sum_all()?];
        for gb in g_bar {
            parts.push(gb.sqr()?.sum_all()?);
        }
        let read = scalars(&parts)?;
        let g_sq: f64 = read[2..].iter().sum();
        mark(Stage::Other, verbose, || format!("group {g}: step done"));
        Ok(NewtonStep {
            step,
            slope: (read[0] - g_sq) / delta,
            curvature: read[1],
            reusable: None,
        })
    }
}
