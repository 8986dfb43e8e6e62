//! `EighComputation`: the kept eigenpairs of each group's GGN block.

use std::collections::HashMap;

use candle_core::Tensor;

use super::directions::{warn_small, GramEigenpairs};
use super::options::{curvature_setters, eigensolver_setter, lookup, warn_setter, Options};
use crate::error::Result;
use crate::extension::{mark, Computation, Extension, Stage, Timings};
use crate::group::{GroupId, ParamGroup};
use crate::record::Recorded;

/// The kept eigenpairs `G e_k = λ_k e_k` of a group's GGN block.
#[derive(Debug, Clone)]
pub struct Eigenpairs {
    /// `λ_k` `[K]`, in the criterion's order, in the model's dtype.
    pub evals: Tensor,
    /// `e_k`, one `[K, *param.shape]` tensor per parameter of the group
    /// (eigenvector `k` is `[t.get(k) for t in evecs]`, unit norm over the group).
    pub evecs: Vec<Tensor>,
}

impl From<Eigenpairs> for (Tensor, Vec<Tensor>) {
    /// The seed's `(evals, evecs)`: `let (evals, evecs) = eigh.result(&group)?.into();`.
    fn from(pairs: Eigenpairs) -> Self {
        (pairs.evals, pairs.evecs)
    }
}

/// Eigenvalues and eigenvectors of the GGN block of each parameter group.
///
/// The group's criterion picks `K` of the Gram eigenpairs `G̃ ẽ_k = λ_k ẽ_k`;
/// each is mapped to parameter space and normalized jointly over the group,
///
/// ```text
/// e_k = V ẽ_k / ‖V ẽ_k‖   (= V ẽ_k / √λ_k),   G e_k = λ_k e_k,
/// ```
///
/// and returned per parameter, `[K, *param.shape]`, so that eigenvector `k` is
/// `[t.get(k) for t in evecs]`. Eigenvalues keep the criterion's order. The
/// criterion sees all `C_eff·N_g` eigenvalues; for the exact cross-entropy
/// factor `N_g` of them are exactly zero (its Hessian is singular) and are not
/// computed: a kept one comes back as a zero vector. A repeated eigenvalue's
/// eigenvectors are an orthonormal basis of its eigenspace (which basis is the
/// eigensolver's choice, the same on every run on the same input); a kept
/// negative round-off eigenvalue's vector is `V ẽ_k` normalized by its norm.
/// Directions with `|λ_k| < warn_small_eigvals` are numerically unstable; a
/// warning goes to the `log` crate (0 disables it). Options as
/// [`crate::EigvalshComputation`]; `Send` and `Sync` like it.
///
/// ```
/// # use candle_core::{DType, Device, Module, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// use vivit::{Criterion, Eigenpairs, EighComputation, ParamGroup};
/// # fn main() -> vivit::Result<()> {
/// # let dev = Device::Cpu;
/// # let varmap = VarMap::new();
/// # let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
/// # let fc = vivit::nn::linear(4, 3, vb.pp("fc"))?;
/// # let x = Tensor::randn(0f64, 1., (5, 4), &dev)?;
/// # let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
/// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
/// let weight = varmap.data().lock().unwrap()["fc.weight"].clone();
/// let groups = [ParamGroup::new(vec![weight]).criterion(Criterion::top_k(2))];
/// let mut computation = EighComputation::new();
/// computation.compute(&loss, &groups)?;
/// let Eigenpairs { evals, evecs } = computation.result(&groups[0])?;
/// assert_eq!(evals.dims(), &[2]);
/// assert_eq!(evecs[0].dims(), &[2, 3, 4]); // [K, *weight.shape]
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct EighComputation {
    options: Options,
    results: HashMap<GroupId, Eigenpairs>,
}

impl EighComputation {
    /// Exact GGN on the whole batch, quiet, warning below `|λ| = 1e-4`.
    pub fn new() -> Self {
        Self::default()
    }

    curvature_setters!(subsampling, mc_samples);
    warn_setter!();
    eigensolver_setter!();

    /// Runs the computation in its own extended backward pass; returns where
    /// the pass spent its time.
    ///
    /// # Errors
    /// As [`crate::EigvalshComputation::compute`], plus criterion errors.
    pub fn compute(&mut self, recorded: &Recorded, groups: &[ParamGroup]) -> Result<Timings> {
        crate::backward(recorded, groups, &mut [self])
    }

    /// Kept eigenvalues `[K]` and eigenvectors `[K, *param.shape]` per parameter.
    ///
    /// # Errors
    /// [`crate::Error::NoResult`] if the group was not part of a computed pass.
    pub fn result(&self, group: &ParamGroup) -> Result<Eigenpairs> {
        lookup(&self.results, group)
    }
}

impl Computation for EighComputation {
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()> {
        let o = &self.options;
        let factor = o.ggn_factor(ext, "subsampling")?;
        // K eigenvectors to parameter space: keep large weight factors
        ext.keep_weight_factors(factor);
        let factor = ext.factor(factor);
        for (g, group) in groups.iter().enumerate() {
            let pairs = GramEigenpairs::kept(factor.block(g), group, o)?;
            warn_small(&pairs.evals, o.warn_small_eigvals);
            let evecs = pairs.parameter_evecs(factor.block(g))?;
            mark(Stage::Eigenvectors, o.verbose, || {
                format!(
                    "group {g}: {} eigenvectors in parameter space",
                    pairs.evals.len()
                )
            });
            let pairs = Eigenpairs {
                evals: pairs.evals_tensor()?,
                evecs,
            };
            self.results.insert(group.id(), pairs);
        }
        Ok(())
    }
}
