//! Curvature amortization: the Woodbury curvature of each block, reused for
//! `T` steps ([`crate::DampedNewtonConfig::curvature_interval`]).

use std::sync::Arc;

use candle_core::TensorId;

use crate::computations::{NewtonStep, WoodburyCurvature};
use crate::group::ParamGroup;

/// The curvature of the last refresh, the blocks it belongs to, how many
/// steps it has served and how many curvatures were computed. Owned by
/// [`crate::DampedNewton`], changed only by a step that was applied
/// ([`Self::commit`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Amortization {
    /// Shared with the pass that reuses it (its Cholesky factor is up to
    /// `m²` values).
    kept: Arc<[WoodburyCurvature]>,
    /// The parameters of each block it was computed for.
    blocks: Vec<Vec<TensorId>>,
    /// Steps taken with it, the refresh included.
    age: usize,
    /// Curvatures computed so far (the offset of a budgeted subsample).
    computed: usize,
}

impl Amortization {
    /// How many curvatures the applied steps have computed.
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// The kept curvature, for a step of `groups`, while it is younger than
    /// `interval` steps and belongs to the same blocks (the pass still
    /// computes afresh where it does not fit, e.g. after a change of `δ`).
    pub fn reusable(
        &self,
        groups: &[ParamGroup],
        interval: usize,
    ) -> Option<Arc<[WoodburyCurvature]>> {
        let fits = self.age > 0 && self.age < interval && self.blocks == block_ids(groups);
        fits.then(|| self.kept.clone())
    }

    /// Records that `steps` were applied: a refresh (`refreshed`) keeps its
    /// curvature (where `interval > 1`), a reuse ages the kept one.
    pub fn commit(
        &mut self,
        steps: &mut [NewtonStep],
        refreshed: bool,
        groups: &[ParamGroup],
        interval: usize,
    ) {
        if !refreshed {
            self.age += 1;
            return;
        }
        let kept: Option<Vec<WoodburyCurvature>> =
            steps.iter_mut().map(|s| s.reusable.take()).collect();
        let computed = self.computed + 1;
        *self = match kept {
            Some(kept) if interval > 1 => Self {
                kept: kept.into(),
                blocks: block_ids(groups),
                age: 1,
                computed,
            },
            _ => Self {
                computed,
                ..Self::default()
            },
        };
    }
}

fn block_ids(groups: &[ParamGroup]) -> Vec<Vec<TensorId>> {
    groups
        .iter()
        .map(|g| g.params().iter().map(|v| v.id()).collect())
        .collect()
}
