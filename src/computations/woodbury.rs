//! The full-rank damped Newton step of a group through its Gram matrix.

use super::damped_newton::NewtonStep;
use super::directions::mean_gradient;
use crate::error::{check_finite, scalar, Error, Result};
use crate::extension::{say, Extension, FactorId};
use crate::group::ParamGroup;
use crate::linalg::solve_shifted;

/// The Levenberg–Marquardt step `s = −(V Vᵀ + δ I)⁻¹ ḡ` of the group's GGN
/// factor `ggn` (`V`), with `ḡ` the mean of the gradient factor `grad`, by
/// Sherman–Morrison–Woodbury:
///
/// ```text
/// r = Vᵀ ḡ,   (G̃ + δ I) c = r,   s = (V c − ḡ) / δ,
/// ḡᵀ s = (rᵀ c − ‖ḡ‖²) / δ,   Vᵀ s = (G̃ c − r) / δ,   sᵀ G s = ‖Vᵀ s‖².
/// ```
///
/// `G̃` and `Vᵀ g_n` are formed together (one pass over each weight factor).
///
/// # Errors
/// [`Error::InvalidDamping`] unless the group's damping gives one finite
/// `δ > 0` ([`crate::Damping::constant`] or
/// [`crate::Damping::levenberg_marquardt`]); [`Error::Cholesky`];
/// [`Error::NonFinite`] for the step.
pub(super) fn step(
    ext: &mut Extension<'_>,
    ggn: FactorId,
    grad: FactorId,
    g: usize,
    group: &ParamGroup,
    verbose: bool,
) -> Result<NewtonStep> {
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
    let grams = ext.cross_grams(ggn, &[ggn, grad], g)?;
    let (gram, vt_g) = (&grams[0], &grams[1]); // G̃ [m, m], Vᵀ g_n [m, N_grad]
    let r = vt_g.mean(1)?;
    say(verbose, || {
        format!(
            "group {g}: Woodbury step, Cholesky of the {m}×{m} Gram matrix + {delta}·I",
            m = r.dim(0).unwrap_or(0)
        )
    });
    let c = solve_shifted(gram, delta, &r)?;
    say(verbose, || format!("group {g}: Cholesky solve done"));
    let g_bar = mean_gradient(ext, grad, g)?;
    let v_c = ext.apply(ggn, g, &c.unsqueeze(0)?)?;
    let mut g_sq = 0.0;
    let mut step = Vec::with_capacity(g_bar.len());
    for (vc, gb) in v_c.iter().zip(&g_bar) {
        g_sq += scalar(&gb.sqr()?.sum_all()?)?;
        let s = ((vc - gb)? / delta)?.squeeze(0)?;
        check_finite(&s, "the damped Newton step")?;
        step.push(s);
    }
    let vt_s = ((gram.matmul(&c.unsqueeze(1)?)?.squeeze(1)? - &r)? / delta)?;
    say(verbose, || format!("group {g}: step done"));
    Ok(NewtonStep {
        step,
        slope: (scalar(&(&r * &c)?.sum_all()?)? - g_sq) / delta,
        curvature: scalar(&vt_s.sqr()?.sum_all()?)?,
    })
}
