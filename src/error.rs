//! The crate's error type.
//!
//! Every fallible function of `vivit` returns [`Result`]. The variants name the
//! offending value so that a message alone tells what to fix; candle's own
//! errors pass through as [`Error::Candle`].

use candle_core::DType;

use crate::linalg::host;

/// Everything that can go wrong in `vivit`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// `vivit::record` was called inside another `vivit::record`.
    #[error(
        "vivit::record was called inside another vivit::record closure; recordings cannot nest"
    )]
    NestedRecord,

    /// The recorded closure did not return a loss built with `vivit::loss`.
    #[error(
        "the loss was not built with vivit::loss inside vivit::record{detail}; \
         return the tracked loss (e.g. vivit::loss::cross_entropy) itself from the closure"
    )]
    LossNotTracked {
        /// What was found instead.
        detail: &'static str,
    },

    /// The model output or the targets do not fit the loss.
    #[error("{loss}: {reason}")]
    InvalidTargets {
        /// Name of the loss function.
        loss: &'static str,
        /// What is wrong, with the offending shape, dtype or value.
        reason: String,
    },

    /// An embedding looked up an id outside its `0..vocab` rows.
    #[error("embedding id {id} is outside 0..{vocab}")]
    InvalidIds {
        /// The offending id.
        id: i64,
        /// The number of rows of the embedding.
        vocab: usize,
    },

    /// Every position of a cross-entropy with an ignore index is ignored
    /// (in the batch, or in the samples a computation's subsampling keeps),
    /// so its mean is undefined.
    #[error("every target position is ignored: the mean loss over no position is undefined")]
    AllPositionsIgnored,

    /// The model uses a dtype the computations do not support.
    #[error("unsupported dtype {0:?}: vivit computes in f32 or f64")]
    UnsupportedDType(DType),

    /// A tracked layer is configured in a way the computations do not support.
    #[error("unsupported layer: {0}")]
    UnsupportedLayer(String),

    /// The recorded batch has no samples.
    #[error("the recorded batch is empty (N = 0)")]
    EmptyBatch,

    /// A parameter appears in more than one group.
    #[error(
        "parameter {param} (shape {shape:?}) is in group {first} and in group {second}; \
         a parameter can be in one group only"
    )]
    ParamInTwoGroups {
        /// Position of the parameter in the second group.
        param: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// Index of the first group holding it.
        first: usize,
        /// Index of the second group holding it.
        second: usize,
    },

    /// A group parameter is not the weight or bias of any tracked layer of the recorded pass.
    #[error(
        "parameter {param} (shape {shape:?}) of group {group} was not used by any tracked \
         layer (vivit::nn) in the recorded forward pass"
    )]
    ParamNotRecorded {
        /// Index of the group.
        group: usize,
        /// Position of the parameter in the group.
        param: usize,
        /// Its shape.
        shape: Vec<usize>,
    },

    /// A group has no parameters.
    #[error("group {0} has no parameters")]
    EmptyGroup(usize),

    /// A subsampling index is not a sample of the batch.
    #[error("{name} index {index} is out of range for a batch of {batch_size} samples")]
    SubsamplingOutOfRange {
        /// Which option (`subsampling`, `subsampling_grad`, `subsampling_ggn`).
        name: &'static str,
        /// The bad index.
        index: usize,
        /// The batch size N.
        batch_size: usize,
    },

    /// A subsampling index appears twice.
    #[error("{name} repeats index {index}; each sample can be chosen once")]
    SubsamplingRepeated {
        /// Which option.
        name: &'static str,
        /// The repeated index.
        index: usize,
    },

    /// A subsampling list is empty.
    #[error("{name} is empty; choose at least one sample or pass None for the whole batch")]
    SubsamplingEmpty {
        /// Which option.
        name: &'static str,
    },

    /// A criterion returned an index that is not an eigenvalue index.
    #[error("the criterion returned index {index}, but there are only {len} eigenvalues")]
    CriterionOutOfRange {
        /// The bad index.
        index: usize,
        /// Number of eigenvalues it was given.
        len: usize,
    },

    /// A criterion returned the same index twice.
    #[error("the criterion returned index {0} twice")]
    CriterionRepeated(usize),

    /// Directional derivatives need `λ_k > 0` on every kept direction.
    #[error(
        "kept eigenvalue {index} is {value:e} ≤ 0: directional derivatives divide by √λ; \
         use a criterion that keeps positive eigenvalues (e.g. Criterion::above(1e-6))"
    )]
    NonPositiveEigenvalue {
        /// Position among the kept directions.
        index: usize,
        /// The eigenvalue.
        value: f64,
    },

    /// A damping returned the wrong number of values.
    #[error("the damping returned {got} values for {expected} kept directions")]
    DampingLength {
        /// Number of kept directions.
        expected: usize,
        /// Number of values returned.
        got: usize,
    },

    /// A damping returned a negative or NaN value.
    #[error("the damping returned δ = {value} for direction {index}; δ must be ≥ 0 (+∞ drops the direction)")]
    DampingValue {
        /// The direction.
        index: usize,
        /// The bad value.
        value: f64,
    },

    /// Damping settings that cannot give a step (a `δ_⊥ ≤ 0`, an empty
    /// bootstrap grid, Levenberg–Marquardt bounds that are NaN or crossed, …).
    #[error("invalid damping settings: {0}")]
    InvalidDamping(String),

    /// The complement step was asked for, but the damping has no `δ_⊥`.
    #[error(
        "the complement step needs δ_⊥, which {0} does not define; set it with Damping::with_complement"
    )]
    NoComplementDamping(String),

    /// A Levenberg–Marquardt damping in a step that does not evaluate the
    /// loss after it.
    #[error(
        "Levenberg–Marquardt damping adapts δ from the loss after each step, which {0} does not \
         evaluate: step with DampedNewton::step_with_loss(&recorded, || loss) (or \
         step_with_model(&recorded, &model) with the feature \"optimisers\"), or use \
         Damping::constant"
    )]
    NeedsModel(&'static str),

    /// An optimizer setting out of its range.
    #[error("{what} is {value}: the momentum must be in [0, 1), the weight decay finite and ≥ 0, the trust region finite and > 0")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f64,
    },

    /// `DampedNewton::step` found no recorded loss behind the gradients.
    #[error(
        "no live vivit::record tape produced these gradients: compute the loss inside vivit::record \
         with a vivit::loss, keep the Recorded alive until the step, and call backward on it"
    )]
    NotRecorded,

    /// A value that must be finite is NaN or infinite.
    #[error("{what} is not finite ({value})")]
    NonFinite {
        /// Which quantity.
        what: &'static str,
        /// The first non-finite value found.
        value: f64,
    },

    /// The symmetric eigensolver did not converge.
    #[error("the symmetric eigensolver did not converge on the {size}×{size} Gram matrix")]
    EigenSolver {
        /// Size of the Gram matrix.
        size: usize,
    },

    /// The damped Gram matrix `G̃ + δI` of a Woodbury step is not numerically
    /// positive definite.
    #[error(
        "the Cholesky factorization of the {size}×{size} Gram matrix + δI failed (δ = {delta}): \
         δ is below the rounding level of the Gram matrix; use a larger damping"
    )]
    Cholesky {
        /// Size of the Gram matrix.
        size: usize,
        /// The damping.
        delta: f64,
    },

    /// [`crate::Eigensolver::Partial`] was asked for with a criterion that
    /// needs the whole spectrum.
    #[error(
        "Eigensolver::Partial computes the k largest eigenpairs only, but {0} needs the whole \
         spectrum; use Criterion::top_k or Criterion::top_k_above, or Eigensolver::Auto or Full"
    )]
    PartialEigensolver(String),

    /// A computation has no result for the group asked for.
    #[error("no result for group {0:?}: run compute (or vivit::backward) with this group first")]
    NoResult(crate::GroupId),
}

/// `Result` with [`Error`] as the error type.
pub type Result<T> = std::result::Result<T, Error>;

/// [`Error::NonFinite`] with the first NaN or ±∞ of the tensors `ts` (in
/// order), named `what`.
///
/// The test runs on the tensors' device: `Σ 0·x_i = 0` exactly when every
/// entry of `x_i` is finite (`0·NaN` and `0·∞` are NaN, which the sum
/// keeps), the sums of all the tensors read in one copy; only on a fault are
/// the tensors copied to find the offending value.
pub(crate) fn check_finite(ts: &[candle_core::Tensor], what: &'static str) -> Result<()> {
    if ts.is_empty() {
        return Ok(());
    }
    let probes = ts
        .iter()
        .map(|t| (t * 0.0)?.sum_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let probe: f64 = host::scalars(&probes)?.into_iter().sum();
    if probe == 0.0 {
        return Ok(());
    }
    for t in ts {
        if let Some(value) = host::read::<f64>(t)?.into_iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what, value });
        }
    }
    Err(Error::NonFinite { what, value: probe })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The probe over several tensors passes finite ones and names the
    /// first non-finite entry of the first tensor that has one.
    #[test]
    fn check_finite_names_the_first_non_finite_entry() -> Result<()> {
        let dev = Device::Cpu;
        let finite = Tensor::new(&[1f32, -2.0, 3.5], &dev)?;
        let faulty = Tensor::new(&[[0f64, f64::NEG_INFINITY], [f64::NAN, 1.0]], &dev)?;
        check_finite(&[], "nothing")?;
        check_finite(&[finite.clone(), finite.clone()], "finite")?;
        match check_finite(&[finite, faulty.clone(), faulty.neg()?], "these") {
            Err(Error::NonFinite { what, value }) => {
                assert_eq!((what, value), ("these", f64::NEG_INFINITY));
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
        Ok(())
    }
}
