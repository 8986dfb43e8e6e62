//! `EigvalshComputation`: all eigenvalues of each group's GGN block.

use std::collections::HashMap;

use candle_core::Tensor;

use super::options::{curvature_setters, lookup, Options};
use crate::error::Result;
use crate::extension::{mark, Computation, Extension, Stage, Timings};
use crate::group::{GroupId, ParamGroup};
use crate::linalg;
use crate::record::Recorded;

/// Eigenvalues of the GGN block of each parameter group, from its Gram matrix.
///
/// With the GGN factor `V` `[D, C_eff·N_g]` of a group (`G = V Vᵀ`, see
/// [`crate::loss`] for the columns), the Gram matrix `G̃ = Vᵀ V` has the same
/// non-zero eigenvalues as `G`. The result holds **all** `C_eff·N_g`
/// eigenvalues of `G̃`, ascending, including the (numerically) zero ones.
///
/// Options, as in the seed: `subsampling` (curvature from a subset of the
/// batch, `G = (1/|S|) Σ_{n∈S} J_nᵀ H_n J_n`), `mc_samples` (0: exact factor,
/// `M ≥ 1`: Monte-Carlo factor with `M` columns per sample; see [`Self::seed`]),
/// `verbose`.
///
/// Eigenvalues come back as the symmetric eigensolver gives them, not
/// clamped: the `N_g` zeros the exact cross-entropy factor leaves out are
/// exact, while the (numerically) zero eigenvalues of a singular Gram matrix
/// may be slightly negative, within about `C·N_g·ε·λ_max` (`ε` of the model's
/// dtype); criteria see these values as they are.
///
/// A computation holds only its options and results (tensors), so it is
/// `Send` and `Sync`; each `compute` runs on the calling thread.
///
/// ```
/// # use candle_core::{DType, Device, Module, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// use vivit::{EigvalshComputation, ParamGroup};
/// # fn main() -> vivit::Result<()> {
/// # let dev = Device::Cpu;
/// # let varmap = VarMap::new();
/// # let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
/// # let fc = vivit::nn::linear(4, 3, vb.pp("fc"))?;
/// # let x = Tensor::randn(0f64, 1., (5, 4), &dev)?;
/// # let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
/// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
/// let groups = [ParamGroup::new(varmap.all_vars())];
/// let mut computation = EigvalshComputation::new().subsampling([0, 2, 4]);
/// computation.compute(&loss, &groups)?;
/// let evals = computation.result(&groups[0])?; // [C·N_g] = [9], ascending
/// assert_eq!(evals.dims(), &[9]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct EigvalshComputation {
    options: Options,
    results: HashMap<GroupId, Tensor>,
}

impl EigvalshComputation {
    /// Exact GGN on the whole batch, quiet.
    pub fn new() -> Self {
        Self::default()
    }

    curvature_setters!(subsampling, mc_samples);

    /// Runs the computation on `groups` in its own extended backward pass and
    /// returns where it spent its time; use [`crate::backward`] to share one
    /// pass between computations.
    ///
    /// # Errors
    /// See [`crate::backward`]; subsampling errors; [`crate::Error::NonFinite`] for a
    /// non-finite Gram matrix.
    pub fn compute(&mut self, recorded: &Recorded, groups: &[ParamGroup]) -> Result<Timings> {
        crate::backward(recorded, groups, &mut [self])
    }

    /// All `C_eff·N_g` eigenvalues of the group's Gram matrix, ascending, in the
    /// model's dtype.
    ///
    /// # Errors
    /// [`crate::Error::NoResult`] if the group was not part of a computed pass.
    pub fn result(&self, group: &ParamGroup) -> Result<Tensor> {
        lookup(&self.results, group)
    }
}

impl Computation for EigvalshComputation {
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()> {
        let o = &self.options;
        let factor = o.ggn_factor(ext, "subsampling")?;
        let factor = ext.factor(factor);
        for (g, group) in groups.iter().enumerate() {
            let gram = factor.block(g).gram(o.verbose)?;
            mark(Stage::Eigensolver, o.verbose, || {
                format!("group {g}: eigenvalues of the Gram matrix")
            });
            self.results
                .insert(group.id(), linalg::eigvalsh(&gram, factor.omitted_zeros())?);
        }
        Ok(())
    }
}
