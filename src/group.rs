//! Parameter groups (GGN diagonal blocks) and the criteria that pick eigen-directions.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Var;

use crate::damping::Damping;
use crate::error::{Error, Result};
use crate::linalg::Eigensolver;

/// Identifies a [`ParamGroup`]; clones of a group share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(u64);

impl GroupId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        GroupId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

type Select = dyn Fn(&[f64]) -> Vec<usize> + Send + Sync;

/// Chooses which eigen-directions to keep.
///
/// A criterion receives the eigenvalues of a group's Gram matrix in ascending
/// order and returns the indices to keep, in the order the results should
/// have (the built-in criteria return them ascending, like the seed's
/// `list(range(n - k, n))`).
#[derive(Clone)]
pub struct Criterion {
    name: String,
    select: Arc<Select>,
    /// `Some(k)`: keeps some of the `k` largest eigenvalues and decides from
    /// those alone, so the partial eigensolver can serve it.
    top: Option<usize>,
    /// Drops the kept directions of eigenvalue `λ ≤ 0` ([`Self::positive`]).
    positive_only: bool,
}

impl Criterion {
    /// Keeps every direction: `{0, …, n−1}`.
    pub fn all() -> Self {
        Self::named("all()".into(), None, |evals| (0..evals.len()).collect())
    }

    /// Keeps the `k` largest eigenvalues `{n−k, …, n−1}` (all of them if `k ≥ n`).
    pub fn top_k(k: usize) -> Self {
        Self::named(format!("top_k({k})"), Some(k), move |evals| {
            (evals.len().saturating_sub(k)..evals.len()).collect()
        })
    }

    /// Keeps the eigenvalues strictly above `threshold`: `{i : λ_i > threshold}`.
    pub fn above(threshold: f64) -> Self {
        Self::named(format!("above({threshold})"), None, move |evals| {
            (0..evals.len()).filter(|&i| evals[i] > threshold).collect()
        })
    }

    /// Keeps the `k` largest eigenvalues among those strictly above `threshold`
    /// (the reference test suite's criterion): directional derivatives and
    /// Newton steps need `λ > 0`.
    pub fn top_k_above(k: usize, threshold: f64) -> Self {
        Self::named(
            format!("top_k_above({k}, {threshold})"),
            Some(k),
            move |evals| {
                let above: Vec<usize> =
                    (0..evals.len()).filter(|&i| evals[i] > threshold).collect();
                above[above.len().saturating_sub(k)..].to_vec()
            },
        )
    }

    /// A criterion from a closure `ascending eigenvalues → indices to keep`.
    pub fn custom(select: impl Fn(&[f64]) -> Vec<usize> + Send + Sync + 'static) -> Self {
        Self::named("custom".into(), None, select)
    }

    fn named(
        name: String,
        top: Option<usize>,
        select: impl Fn(&[f64]) -> Vec<usize> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            select: Arc::new(select),
            top,
            positive_only: false,
        }
    }

    /// The `k` of `solver`'s partial solver on an `n × n` Gram matrix for this
    /// criterion, or `None` for the full solver (see
    /// [`Eigensolver::partial_k`]). The partial solver serves criteria that
    /// keep only directions among the `k` largest eigenvalues and decide from
    /// those `k` values alone ([`Self::top_k`], [`Self::top_k_above`]):
    /// applied to the `k` largest of an ascending spectrum, they keep the same
    /// directions as applied to the whole.
    ///
    /// # Errors
    /// [`Error::PartialEigensolver`] where the partial solver is asked for
    /// and this criterion needs the whole spectrum.
    pub(crate) fn partial_k(&self, solver: Eigensolver, n: usize) -> Result<Option<usize>> {
        solver.partial_k(n, self.top, self)
    }

    /// This criterion without the directions of eigenvalue `λ ≤ 0` it would
    /// keep (a damped Newton step divides by `λ`; numerically null
    /// directions carry no curvature), dropped after [`Self::select`] has
    /// checked its answer; same name, same `top` bound.
    pub(crate) fn positive(&self) -> Self {
        Self {
            positive_only: true,
            ..self.clone()
        }
    }

    /// Applies the criterion and checks its answer.
    ///
    /// # Errors
    /// [`Error::CriterionOutOfRange`] or [`Error::CriterionRepeated`].
    pub(crate) fn select(&self, evals: &[f64]) -> Result<Vec<usize>> {
        let keep = (self.select)(evals);
        let mut seen = vec![false; evals.len()];
        for &i in &keep {
            if i >= evals.len() {
                return Err(Error::CriterionOutOfRange {
                    index: i,
                    len: evals.len(),
                });
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(Error::CriterionRepeated(i));
            }
        }
        if self.positive_only {
            return Ok(keep.into_iter().filter(|&i| evals[i] > 0.0).collect());
        }
        Ok(keep)
    }
}

impl Default for Criterion {
    /// [`Criterion::all`].
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Debug for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Criterion::{}", self.name)
    }
}

/// One diagonal block of the GGN: the parameters whose joint curvature a
/// computation looks at, and how to pick directions in it.
///
/// `[ParamGroup::new(all_params)]` is the full GGN; one group per parameter or
/// per layer gives a block-diagonal approximation. A parameter may belong to
/// one group only. Results are keyed by the group's [`GroupId`], which clones
/// keep.
///
/// ```
/// use candle_core::{DType, Device, Var};
/// use vivit::{Criterion, ParamGroup};
/// # fn main() -> candle_core::Result<()> {
/// let w = Var::zeros((3, 4), DType::F32, &Device::Cpu)?;
/// let b = Var::zeros(3, DType::F32, &Device::Cpu)?;
/// let group = ParamGroup::new(vec![w, b]).criterion(Criterion::top_k(2));
/// assert_eq!(group.params().len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ParamGroup {
    id: GroupId,
    params: Vec<Var>,
    criterion: Criterion,
    damping: Damping,
}

impl ParamGroup {
    /// A group of `params` with the default criterion [`Criterion::all`] and
    /// the default damping [`Damping::constant`]`(1.0)`.
    pub fn new(params: Vec<Var>) -> Self {
        Self {
            id: GroupId::next(),
            params,
            criterion: Criterion::default(),
            damping: Damping::default(),
        }
    }

    /// Sets the damping of the damped Newton step.
    pub fn damping(mut self, damping: Damping) -> Self {
        self.damping = damping;
        self
    }

    /// Sets the criterion that picks the directions to keep.
    pub fn criterion(mut self, criterion: Criterion) -> Self {
        self.criterion = criterion;
        self
    }

    /// The group's identity.
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// The parameters, in the order of the per-parameter results.
    pub fn params(&self) -> &[Var] {
        &self.params
    }

    pub(crate) fn criterion_ref(&self) -> &Criterion {
        &self.criterion
    }

    pub(crate) fn damping_ref(&self) -> &Damping {
        &self.damping
    }
}
