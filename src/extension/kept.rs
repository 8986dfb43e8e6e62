//! A group's factor kept beyond its backward pass, for the passes that follow.

use candle_core::Tensor;

use super::layer::{add, LayerFactor, Role};
use crate::error::Result;

/// The factor `V` of one group, taken out of its [`super::Extension`]: each tracked
/// layer's inputs and signals (shared, not copied), so that `V · c` and
/// `Vᵀ x` need no new backpropagation in later passes.
#[derive(Debug, Clone)]
pub(crate) struct KeptFactor {
    /// The factors of the group's layers.
    layers: Vec<LayerFactor>,
    /// Per group parameter: its layer (index into `layers`) and role.
    members: Vec<(usize, Role)>,
}

impl KeptFactor {
    pub(super) fn new(layers: Vec<LayerFactor>, members: Vec<(usize, Role)>) -> Self {
        Self { layers, members }
    }

    /// `V_p · e` for every parameter `p` of the group, `e` `[K, C·N_g]`:
    /// `[K, *p.shape]` each (as [`super::Block::apply`] in the factor's own pass).
    pub fn apply(&self, e: &Tensor) -> Result<Vec<Tensor>> {
        self.members
            .iter()
            .map(|&(layer, role)| Ok(self.layers[layer].apply(role, e)?))
            .collect()
    }

    /// `Vᵀ x = Σ_p V_pᵀ x_p` `[C·N_g]` for `x` one tensor per parameter of
    /// the group, shaped as it (a leading 1 allowed).
    pub fn transpose_apply(&self, x: &[Tensor]) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for (&(layer, role), x) in self.members.iter().zip(x) {
            sum = Some(add(sum, self.layers[layer].transpose_apply(role, x)?)?);
        }
        Ok(sum.expect("groups are checked to be non-empty"))
    }
}
