//! The factor of a layer formed column by column: `V_p` `[C·N, |p|]` for each
//! of its parameters, for layers whose per-sample gradients are cheap to form
//! whole.
//!
//! - A scale and shift `y = x̂ ⊙ w + b` per feature `d` (LayerNorm, RMSNorm,
//!   BatchNorm in evaluation), applied at `T` positions, with the normalized
//!   inputs `x̂` `[N, D, T]` and the output signals `B` `[C, N, D, T]`:
//!
//!   ```text
//!   V_w[c,n,d] = Σ_t B[c,n,d,t] x̂[n,d,t],   V_b[c,n,d] = Σ_t B[c,n,d,t];
//!   ```
//! - grouped convolutions and transposed convolutions (see [`FormedFactor::grouped`],
//!   [`FormedFactor::transposed`]), whose weights are small;
//! - an embedding `y_{nt} = W[i_{nt}]` of `V` rows, with the ids `i` `[N, T]`
//!   and the signals `B` `[C, N, T, D]`: the signals scattered into the rows
//!   of the ids a sample looked up, summed over repeated ids (no one-hot),
//!
//!   ```text
//!   V_W[c,n,v,:] = Σ_{t : i_{nt} = v} B[c,n,t,:].
//!   ```

use candle_core::{DType, Result, Shape, Tensor};

use super::{add, Role};
use crate::kernels::{gram, matmul};

/// `V_W` `[C·N, |W|]` and `V_b` `[C·N, |b|]`, formed.
#[derive(Debug, Clone)]
pub(crate) struct FormedFactor {
    weight: Tensor,
    bias: Option<Tensor>,
    weight_shape: Shape,
}

impl FormedFactor {
    /// The factor of a scale `w` (and a shift `b` with `bias`) from the sums
    /// over positions `s` `[C, N, 2, D]` of the signals (`s[c,n,0] = V_w[c,n]`,
    /// `s[c,n,1] = V_b[c,n]`, see the module docs).
    pub fn scale(s: &Tensor, bias: bool) -> Result<Self> {
        let (c, n, _, d) = s.dims4()?;
        let part = |i: usize| s.narrow(2, i, 1)?.reshape((c * n, d));
        Ok(Self {
            weight: part(0)?,
            bias: bias.then(|| part(1)).transpose()?,
            weight_shape: Shape::from(d),
        })
    }

    /// The factor of an embedding of `vocab` rows from the ids `ids` `[N, T]`
    /// and signals `b` `[C, N, T, D]`, by one scatter-add into the rows
    /// `(c·N + n)·V + i_{nt}` of a `[C·N·V, D]` zero matrix.
    pub fn embedding(ids: &Tensor, b: &Tensor, vocab: usize) -> Result<Self> {
        let (c, n, t, d) = b.dims4()?;
        let ids = ids.to_dtype(DType::U32)?.reshape((1, n, t))?;
        let offsets =
            Tensor::arange_step(0u32, (c * n * vocab) as u32, vocab as u32, ids.device())?
                .reshape((c, n, 1))?;
        let rows = offsets.broadcast_add(&ids)?.flatten_all()?;
        let zeros = Tensor::zeros((c * n * vocab, d), b.dtype(), b.device())?;
        let weight = zeros
            .index_add(&rows, &b.reshape((c * n * t, d))?, 0)?
            .reshape((c * n, vocab * d))?;
        Ok(Self {
            weight,
            bias: None,
            weight_shape: Shape::from((vocab, d)),
        })
    }

    /// The factor of a grouped convolution (weight `[O, I/G, k…]` of shape
    /// `weight_shape`) from its patches `a` `[N, I·K, P]` and signals `b`
    /// `[C, N, O, P]`: group `γ`'s output channels see its input channels,
    /// `V_W[c,n][γ] = B_γ[c,n] A_γ[n]ᵀ`, `V_b[c,n] = Σ_p B[c,n,:,p]`.
    pub fn grouped(
        a: &Tensor,
        b: &Tensor,
        groups: usize,
        bias: bool,
        weight_shape: &Shape,
    ) -> Result<Self> {
        let (c, n, o, _) = b.dims4()?;
        let (rows, per_group) = (a.dim(1)? / groups, o / groups);
        let parts = (0..groups)
            .map(|g| {
                let a_g = a.narrow(1, g * rows, rows)?.transpose(1, 2)?.unsqueeze(0)?;
                matmul(&b.narrow(2, g * per_group, per_group)?, &a_g) // [C, N, O/G, I/G·K]
            })
            .collect::<Result<Vec<_>>>()?;
        let weight = Tensor::cat(&parts, 2)?.reshape((c * n, o * rows))?;
        Ok(Self {
            weight,
            bias: bias.then(|| b.sum(3)?.reshape((c * n, o))).transpose()?,
            weight_shape: weight_shape.clone(),
        })
    }

    /// The factor of a transposed convolution (weight `[I, O, k…]` of shape
    /// `weight_shape`) from its inputs `x` `[N, I, P]` and the patches `bp`
    /// `[C, N, O·K, P]` of its output signals with the forward's geometry
    /// (patch `p` holds the outputs input position `p` reaches):
    /// `V_W[c,n] = x[n] bp[c,n]ᵀ`; `V_b[c,n] = Σ_q b[c,n,:,q]` from the
    /// signals `b` `[C, N, O, Q]`.
    pub fn transposed(
        x: &Tensor,
        bp: &Tensor,
        b: Option<&Tensor>,
        weight_shape: &Shape,
    ) -> Result<Self> {
        let (c, n, ok, _) = bp.dims4()?;
        let i = x.dim(1)?;
        let weight = matmul(&x.unsqueeze(0)?, &bp.transpose(2, 3)?)?.reshape((c * n, i * ok))?;
        let bias = match b {
            Some(b) => Some(b.sum(3)?.reshape((c * n, b.dim(2)?))?),
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            weight_shape: weight_shape.clone(),
        })
    }

    /// The factors of two calls of one layer added (shared parameters).
    pub fn plus(&self, other: &FormedFactor) -> Result<Self> {
        let bias = match (&self.bias, &other.bias) {
            (Some(a), Some(b)) => Some((a + b)?),
            _ => None,
        };
        Ok(Self {
            weight: (&self.weight + &other.weight)?,
            bias,
            weight_shape: self.weight_shape.clone(),
        })
    }

    fn factor(&self, role: Role) -> Result<&Tensor> {
        match role {
            Role::Weight => Ok(&self.weight),
            Role::Bias => self
                .bias
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("the layer has no bias".into())),
        }
    }

    /// `S + Σ_{p∈roles} V_p U_pᵀ` for each `U` of `others`.
    pub fn cross_grams(
        &self,
        others: &[&FormedFactor],
        roles: &[Role],
        sums: Vec<Option<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        others
            .iter()
            .zip(sums)
            .map(|(other, mut sum)| {
                for &role in roles {
                    let v = self.factor(role)?;
                    let block = if std::ptr::eq(self, *other) {
                        gram(v)?
                    } else {
                        matmul(v, &other.factor(role)?.t()?)?
                    };
                    sum = Some(add(sum, block)?);
                }
                sum.ok_or_else(|| candle_core::Error::Msg("cross_gram of no parameter".into()))
            })
            .collect()
    }

    /// `V_pᵀ x` `[C·N]` for `x` shaped as the parameter (a leading 1 allowed).
    pub fn transpose_apply(&self, role: Role, x: &Tensor) -> Result<Tensor> {
        let v = self.factor(role)?;
        let rows = v.dim(0)?;
        matmul(v, &x.reshape((v.dim(1)?, 1))?)?.reshape(rows)
    }

    /// `e · V_p` for `e` `[K, C·N]`: `[K, *p.shape]`.
    pub fn apply(&self, role: Role, e: &Tensor) -> Result<Tensor> {
        let v = self.factor(role)?;
        let product = matmul(e, v)?;
        match role {
            Role::Weight => {
                let mut shape = vec![e.dim(0)?];
                shape.extend_from_slice(self.weight_shape.dims());
                product.reshape(shape)
            }
            Role::Bias => Ok(product),
        }
    }
}
