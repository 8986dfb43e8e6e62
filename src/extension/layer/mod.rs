//! Per-layer factor algebra: each tracked layer's block of the GGN factor
//! `V` (columns `(c, n)`, index `c·N + n`), its Gram blocks `V_pᵀ U_p` and the
//! products `V_p e` and `V_pᵀ x`.
//!
//! Two representations:
//! - [`OuterFactor`]: a weight that multiplies its inputs (linear layers,
//!   convolutions), `V_W[c,n] = Σ_t B[c,n,:,t] ⊗ A[n,:,t]`, kept as `A` and
//!   `B` and never formed where a structured product exists;
//! - [`FormedFactor`]: `V_p` formed per column, for layers whose per-sample
//!   gradients are small or sparse in structure (norms' scales and shifts,
//!   embedding rows).

mod formed;
mod outer;

use candle_core::{Result, Tensor};

pub(crate) use formed::FormedFactor;
pub(crate) use outer::OuterFactor;

/// Which parameter of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Weight,
    Bias,
}

/// A tracked layer's factor. Cloning shares the tensors, copying nothing.
#[derive(Debug, Clone)]
pub(crate) enum LayerFactor {
    Outer(OuterFactor),
    Formed(FormedFactor),
}

impl LayerFactor {
    /// Keeps a weight factor whole for many products `V·ẽ` where it is
    /// formed lazily ([`OuterFactor::keep_weight_factor`]).
    pub fn keep_weight_factor(&mut self) {
        if let LayerFactor::Outer(factor) = self {
            factor.keep_weight_factor();
        }
    }

    /// `S + Σ_{p∈roles} V_pᵀ U_p` for one factor `U` of this layer.
    pub fn cross_gram(
        &self,
        other: &LayerFactor,
        roles: &[Role],
        sum: Option<Tensor>,
    ) -> Result<Tensor> {
        let mut blocks = self.cross_grams(&[other], roles, vec![sum])?;
        blocks
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("cross_gram of no factor".into()))
    }

    /// `S + Σ_{p∈roles} V_pᵀ U_p` `[C·N, C'·N']` for each factor `U` of
    /// `others` (factors of this layer) and its running sum `S` of `sums`.
    pub fn cross_grams(
        &self,
        others: &[&LayerFactor],
        roles: &[Role],
        sums: Vec<Option<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let mismatch = || candle_core::Error::Msg("factors of one layer differ in kind".into());
        match self {
            LayerFactor::Outer(v) => {
                let us = others
                    .iter()
                    .map(|u| match u {
                        LayerFactor::Outer(u) => Ok(u),
                        LayerFactor::Formed(_) => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                v.cross_grams(&us, roles, sums)
            }
            LayerFactor::Formed(v) => {
                let us = others
                    .iter()
                    .map(|u| match u {
                        LayerFactor::Formed(u) => Ok(u),
                        LayerFactor::Outer(_) => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                v.cross_grams(&us, roles, sums)
            }
        }
    }

    /// `(A [N, I], B [C, N, O])` of a layer whose weight multiplies its
    /// inputs once per sample, for structured Gram products.
    pub fn per_sample(&self) -> Result<Option<(Tensor, Tensor)>> {
        match self {
            LayerFactor::Outer(factor) => factor.per_sample(),
            LayerFactor::Formed(_) => Ok(None),
        }
    }

    /// `V_pᵀ x` `[C·N]` for `x` shaped as the parameter `p` (a leading 1 allowed).
    pub fn transpose_apply(&self, role: Role, x: &Tensor) -> Result<Tensor> {
        match self {
            LayerFactor::Outer(factor) => factor.transpose_apply(role, x),
            LayerFactor::Formed(factor) => factor.transpose_apply(role, x),
        }
    }

    /// `V_p · e` for Gram-space vectors `e` `[K, C·N]`: `[K, *p.shape]`.
    pub fn apply(&self, role: Role, e: &Tensor) -> Result<Tensor> {
        match self {
            LayerFactor::Outer(factor) => factor.apply(role, e),
            LayerFactor::Formed(factor) => factor.apply(role, e),
        }
    }
}

/// `sum + block`, or `block` where there is no sum yet: the running sums of
/// Gram blocks over layers, parameters and slices.
pub(super) fn add(sum: Option<Tensor>, block: Tensor) -> Result<Tensor> {
    match sum {
        Some(sum) => sum + block,
        None => Ok(block),
    }
}
