//! `DirectionalDerivativesComputation`: per-sample slopes and curvatures along
//! the kept GGN eigenvectors.

use std::collections::HashMap;

use candle_core::Tensor;

use super::directions::{warn_small, Directional};
use super::options::{
    curvature_setters, directional_setters, eigensolver_setter, gradient_setter, lookup,
    warn_setter, Options,
};
use crate::error::Result;
use crate::extension::{Computation, Extension, Timings};
use crate::group::{GroupId, ParamGroup};
use crate::record::Recorded;

/// First- and second-order directional derivatives of every sample's loss
/// along each kept GGN eigenvector `e_k` of each parameter group:
///
/// ```text
/// γ[n,k] = e_kᵀ ∇_θ ℓ_n      (n over subsampling_grad)   [N_grad, K]
/// λ[n,k] = e_kᵀ G_n e_k      (n over subsampling_ggn)    [N_ggn, K]
/// ```
///
/// with the per-sample GGN `G_n = J_nᵀ H_n J_n`, so `mean_n λ[n,k] = λ_k` and,
/// without `subsampling_grad`, `mean_n γ[n,k] = e_kᵀ ∇L`. Columns follow the
/// criterion's order; the sign of each `e_k` (hence of `γ[:,k]`) is arbitrary.
/// Kept eigenvalues must be positive ([`crate::Error::NonPositiveEigenvalue`],
/// also for a zero or a negative round-off eigenvalue); all-zero gradients
/// give `γ = 0`, no error. `Send` and `Sync`, like every computation.
///
/// Unlike the reference, `mc_samples_ggn` takes any `M ≥ 1`, and no per-sample
/// factor `V` is formed for linear layers.
///
/// ```
/// # use candle_core::{DType, Device, Module, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// use vivit::{Criterion, DirectionalDerivativesComputation, ParamGroup};
/// # fn main() -> vivit::Result<()> {
/// # let dev = Device::Cpu;
/// # let varmap = VarMap::new();
/// # let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
/// # let fc = vivit::nn::linear(4, 3, vb.pp("fc"))?;
/// # let x = Tensor::randn(0f64, 1., (5, 4), &dev)?;
/// # let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
/// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
/// let groups = [ParamGroup::new(varmap.all_vars()).criterion(Criterion::top_k(2))];
/// let mut computation = DirectionalDerivativesComputation::new().subsampling_grad([0, 1, 2]);
/// computation.compute(&loss, &groups)?;
/// let (gammas, lambdas) = computation.result(&groups[0])?;
/// assert_eq!(gammas.dims(), &[3, 2]);
/// assert_eq!(lambdas.dims(), &[5, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct DirectionalDerivativesComputation {
    options: Options,
    results: HashMap<GroupId, (Tensor, Tensor)>,
}

impl DirectionalDerivativesComputation {
    /// Exact GGN, gradients and curvature on the whole batch.
    pub fn new() -> Self {
        Self::default()
    }

    directional_setters!();

    /// Runs the computation in its own extended backward pass; returns where
    /// the pass spent its time.
    ///
    /// # Errors
    /// As [`crate::EighComputation::compute`], plus [`crate::Error::NonPositiveEigenvalue`].
    pub fn compute(&mut self, recorded: &Recorded, groups: &[ParamGroup]) -> Result<Timings> {
        crate::backward(recorded, groups, &mut [self])
    }

    /// `(γ [N_grad, K], λ [N_ggn, K])` of the group, in the model's dtype.
    ///
    /// # Errors
    /// [`crate::Error::NoResult`] if the group was not part of a computed pass.
    pub fn result(&self, group: &ParamGroup) -> Result<(Tensor, Tensor)> {
        lookup(&self.results, group)
    }
}

impl Computation for DirectionalDerivativesComputation {
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()> {
        let o = &self.options;
        let (ggn, grad) = Directional::factors(ext, o)?;
        let (ggn, grad) = (ext.factor(ggn), ext.factor(grad));
        for (g, group) in groups.iter().enumerate() {
            let d = Directional::compute(ggn.block(g), grad, group, o)?;
            warn_small(&d.pairs.evals, o.warn_small_eigvals);
            self.results.insert(group.id(), (d.gammas, d.lambdas));
        }
        Ok(())
    }
}
