//! `EighComputation`: the kept eigenpairs of each group's GGN block.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::extension::{say, Computation, Extension, FactorId};
use crate::group::{GroupId, ParamGroup};
use crate::linalg;
use crate::record::Recorded;

/// Kept eigenvalues `[K]` and eigenvectors, one `[K, *param.shape]` tensor per parameter.
pub type Eigenpairs = (Tensor, Vec<Tensor>);

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
/// `[t.get(k) for t in evecs]`. Eigenvalues keep the criterion's order.
/// Directions with `|λ_k| < warn_small_eigvals` are numerically unstable; a
/// warning goes to the `log` crate (0 disables it). Options as
/// [`crate::EigvalshComputation`].
///
/// ```
/// # use candle_core::{DType, Device, Module, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// use vivit::{Criterion, EighComputation, ParamGroup};
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
/// let (evals, evecs) = computation.result(&groups[0])?;
/// assert_eq!(evals.dims(), &[2]);
/// assert_eq!(evecs[0].dims(), &[2, 3, 4]); // [K, *weight.shape]
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EighComputation {
    subsampling: Option<Vec<usize>>,
    mc_samples: usize,
    seed: Option<u64>,
    verbose: bool,
    warn_small_eigvals: f64,
    results: HashMap<GroupId, Eigenpairs>,
}

impl Default for EighComputation {
    fn default() -> Self {
        Self {
            subsampling: None,
            mc_samples: 0,
            seed: None,
            verbose: false,
            warn_small_eigvals: 1e-4,
            results: HashMap::new(),
        }
    }
}

impl EighComputation {
    /// Exact GGN on the whole batch, quiet, warning below `|λ| = 1e-4`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes the curvature on the samples `indices` of the batch only.
    pub fn subsampling(mut self, indices: impl IntoIterator<Item = usize>) -> Self {
        self.subsampling = Some(indices.into_iter().collect());
        self
    }

    /// `0` (the default) for the exact GGN, `M ≥ 1` for a Monte-Carlo GGN.
    pub fn mc_samples(mut self, mc_samples: usize) -> Self {
        self.mc_samples = mc_samples;
        self
    }

    /// Seeds the Monte-Carlo draw.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Prints what happens to stderr.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Warns (through `log`) when a kept eigenvalue has `|λ| <` this; 0 disables.
    pub fn warn_small_eigvals(mut self, threshold: f64) -> Self {
        self.warn_small_eigvals = threshold;
        self
    }

    /// Runs the computation in its own extended backward pass.
    ///
    /// # Errors
    /// As [`crate::EigvalshComputation::compute`], plus criterion errors.
    pub fn compute(&mut self, recorded: &Recorded, groups: &[ParamGroup]) -> Result<()> {
        crate::backward(recorded, groups, &mut [self])
    }

    /// Kept eigenvalues `[K]` and eigenvectors `[K, *param.shape]` per parameter.
    ///
    /// # Errors
    /// [`Error::NoResult`] if the group was not part of a computed pass.
    pub fn result(&self, group: &ParamGroup) -> Result<Eigenpairs> {
        self.results
            .get(&group.id())
            .cloned()
            .ok_or(Error::NoResult(group.id()))
    }
}

impl Computation for EighComputation {
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()> {
        let factor = ext.factor(
            self.mc_samples,
            self.subsampling.as_deref(),
            self.seed,
            "subsampling",
            self.verbose,
        )?;
        for (g, group) in groups.iter().enumerate() {
            let pairs = kept_eigenpairs(ext, factor, g, group, self.verbose)?;
            warn_small(&pairs.evals, self.warn_small_eigvals);
            self.results
                .insert(group.id(), (pairs.evals_tensor()?, pairs.evecs));
        }
        Ok(())
    }
}

/// The kept eigenpairs of a group's Gram matrix, in Gram and parameter space.
pub(crate) struct KeptEigenpairs {
    /// `λ_k`, in the criterion's order.
    pub evals: Vec<f64>,
    /// Gram eigenvectors `ẽ_k` as rows `[K, C·N_g]`.
    pub gram_evecs: Tensor,
    /// `e_k` per parameter, `[K, *p.shape]`, jointly unit-norm.
    pub evecs: Vec<Tensor>,
    dtype: DType,
}

impl KeptEigenpairs {
    fn evals_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::new(self.evals.as_slice(), self.gram_evecs.device())?.to_dtype(self.dtype)?)
    }
}

/// Eigendecomposes a group's Gram matrix, applies its criterion and maps the
/// kept eigenvectors to parameter space: `e_k = V ẽ_k / ‖V ẽ_k‖`.
pub(crate) fn kept_eigenpairs(
    ext: &mut Extension<'_>,
    factor: FactorId,
    g: usize,
    group: &ParamGroup,
    verbose: bool,
) -> Result<KeptEigenpairs> {
    let gram = ext.gram(factor, g, verbose)?;
    say(verbose, || {
        format!("group {g}: eigendecompose the Gram matrix")
    });
    let eig = linalg::eigh(&gram)?;
    let keep = group.criterion_ref().select(&eig.evals)?;
    say(verbose, || {
        format!(
            "group {g}: criterion {:?} keeps {} of {} directions",
            group.criterion_ref(),
            keep.len(),
            eig.evals.len()
        )
    });
    let evals: Vec<f64> = keep.iter().map(|&i| eig.evals[i]).collect();
    let index: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
    let index = Tensor::new(index.as_slice(), gram.device())?;
    let gram_evecs = eig.evecs.index_select(&index, 1)?.t()?.contiguous()?;
    let raw = ext.apply(factor, g, &gram_evecs)?;
    let mut sq_norm: Option<Tensor> = None;
    for v in &raw {
        let s = v.sqr()?.flatten_from(1)?.sum(1)?;
        sq_norm = Some(match sq_norm {
            Some(acc) => (acc + s)?,
            None => s,
        });
    }
    let norm = sq_norm.expect("groups are non-empty").sqrt()?;
    let evecs = raw
        .iter()
        .map(|v| {
            let mut shape = vec![v.dim(0)?];
            shape.extend(std::iter::repeat_n(1, v.rank() - 1));
            v.broadcast_div(&norm.reshape(shape)?)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(KeptEigenpairs {
        evals,
        gram_evecs,
        evecs,
        dtype: ext.dtype(),
    })
}

fn warn_small(evals: &[f64], threshold: f64) {
    if let Some(small) = evals.iter().find(|l| l.abs() < threshold) {
        log::warn!(
            "kept eigenvalue {small:e} is below warn_small_eigvals = {threshold:e}: \
             its eigenvector is numerically unstable and may not be orthogonal to the others"
        );
    }
}
