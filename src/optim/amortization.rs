//! Curvature amortization: the Woodbury curvature of each block, reused for
//! `T` steps ([`crate::DampedNewtonConfig::curvature_interval`]).

use candle_core::TensorId;

use crate::computations::{
    kept_steps, newton_steps, MeanGradient, NewtonStep, Options, WoodburyCurvature,
};
use crate::error::Result;
use crate::extension::Extension;
use crate::group::ParamGroup;

/// The curvature of the last refresh, the blocks it belongs to, how many
/// steps it has served and how many curvatures were computed. Owned by
/// [`crate::DampedNewton`], changed only by a step that was applied
/// ([`Self::commit`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Amortization {
    kept: Vec<WoodburyCurvature>,
    /// The parameters of each block it was computed for.
    blocks: Vec<Vec<TensorId>>,
    /// Steps taken with it, the refresh included.
    age: usize,
    /// Curvatures computed so far (the offset of a budgeted subsample).
    computed: usize,
}

/// The steps of one pass and whether they computed their curvature.
pub(super) struct Steps {
    pub steps: Vec<NewtonStep>,
    /// Whether they computed their curvature (not the kept one).
    refreshed: bool,
}

impl Amortization {
    /// How many curvatures the applied steps have computed.
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// The steps of `groups` in this pass: with the kept curvature while it
    /// is younger than `interval` steps and fits, else with fresh curvature.
    pub fn steps(
        &self,
        ext: &mut Extension<'_>,
        groups: &[ParamGroup],
        o: &Options,
        complement: bool,
        interval: usize,
        gradient: MeanGradient<'_>,
    ) -> Result<Steps> {
        if self.age > 0 && self.age < interval && self.blocks == block_ids(groups) {
            if let Some(steps) = kept_steps(ext, groups, &self.kept, o, gradient)? {
                return Ok(Steps {
                    steps,
                    refreshed: false,
                });
            }
        }
        Ok(Steps {
            steps: newton_steps(ext, groups, o, complement, gradient)?,
            refreshed: true,
        })
    }

    /// Records that `steps` were applied: a refresh keeps its curvature
    /// (where `interval > 1`), a reuse ages the kept one.
    pub fn commit(&mut self, steps: &mut Steps, groups: &[ParamGroup], interval: usize) {
        if !steps.refreshed {
            self.age += 1;
            return;
        }
        let kept: Option<Vec<WoodburyCurvature>> =
            steps.steps.iter_mut().map(|s| s.reusable.take()).collect();
        let computed = self.computed + 1;
        *self = match kept {
            Some(kept) if interval > 1 => Self {
                kept,
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
