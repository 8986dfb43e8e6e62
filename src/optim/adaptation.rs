//! The adaptive damping state of [`crate::DampedNewton`]: the current
//! Levenberg–Marquardt `δ` of each parameter group.

use crate::damping::LevenbergMarquardt;
use crate::group::ParamGroup;

/// The current `δ_g` of each group `g` whose damping adapts, in group order,
/// owned and changed only by the optimizer: after a step with predicted change
/// `m(s)` and actual change `ΔL`, `δ_g ← next_g(δ_g, ΔL, m(s))` (the group's
/// [`LevenbergMarquardt`] rule). A group seen for the first time starts at its
/// rule's starting `δ`.
#[derive(Debug, Clone, Default)]
pub(super) struct Adaptation {
    groups: Vec<Option<Adaptive>>,
}

/// One group's rule and current `δ`.
#[derive(Debug, Clone)]
struct Adaptive {
    rule: LevenbergMarquardt,
    delta: f64,
}

impl Adaptation {
    /// `groups` with each adaptive damping at its group's current `δ`.
    pub(super) fn apply(&mut self, groups: Vec<ParamGroup>) -> Vec<ParamGroup> {
        if self.groups.len() < groups.len() {
            self.groups.resize(groups.len(), None);
        }
        groups
            .into_iter()
            .zip(&mut self.groups)
            .map(|(group, state)| {
                let Some(rule) = group.damping_ref().adaptive() else {
                    return group;
                };
                let state = state.get_or_insert_with(|| Adaptive {
                    rule: rule.clone(),
                    delta: rule.delta,
                });
                let damping = group.damping_ref().at(state.delta);
                group.damping(damping)
            })
            .collect()
    }

    /// Moves every adaptive group's `δ` by its rule, from the loss changes of
    /// the step just taken.
    pub(super) fn observe(&mut self, actual: f64, predicted: f64) {
        for state in self.groups.iter_mut().flatten() {
            state.delta = state.rule.next(state.delta, actual, predicted);
        }
    }

    /// The current `δ` of each group seen so far (`None`: it does not adapt).
    pub(super) fn deltas(&self) -> Vec<Option<f64>> {
        self.groups
            .iter()
            .map(|state| state.as_ref().map(|s| s.delta))
            .collect()
    }
}
