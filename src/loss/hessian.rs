//! The square roots of the tracked losses' Hessians.
//!
//! Every tracked loss is `L = (1/Z) Σ_{n,p} w_{np} φ(f_{np}, y_{np})` over
//! the samples `n` and the positions `p` of an output `[N, …]`, where a
//! position holds `K` entries `f_{np}` (the `K` classes of a cross-entropy,
//! one entry for the entrywise losses), `w_{np} ∈ {0, 1}` (0 at ignored
//! positions) and `Z = Σ w_{np}` (cross-entropy) or the number of entries
//! (MSE, BCE). With the per-sample losses `ℓ_n = (N/Z) Σ_p w_{np} φ_{np}`,
//! `L = (1/N) Σ_n ℓ_n` and the GGN is
//!
//! ```text
//! G = (1/N) Σ_n J_nᵀ H_n J_n = V Vᵀ,   v_{j,n} = J_nᵀ s_{n,j},
//! Σ_j s_{n,j} s_{n,j}ᵀ = H_n / N = Σ_p (w_{np}/Z) ∇²φ_{np}   (block-diagonal in p).
//! ```
//!
//! `s` is the factor of one position's `∇²φ` scaled by `√(w_{np}/Z)`, zero at
//! the other positions:
//!
//! - exact cross-entropy, `∇²φ = diag(p) − p pᵀ`, `K − 1` columns per position
//!   (its null vector `√p` dropped, see [`LossKind::sqrt_hessian`]);
//! - exact MSE, `φ = (f − y)²`: `√2`; exact BCE, `φ = softplus(f) − y f`:
//!   `√(σ(f)(1 − σ(f)))`;
//! - Monte-Carlo with `M` columns: column `m` draws `ŷ_{np}` at **every**
//!   position from the model's predictive distribution and is
//!   `√(w_{np}/(Z M)) ∇_f φ(f_{np}, ŷ_{np})` there: `p − onehot(ŷ)`,
//!   `ŷ ~ Cat(p)` (cross-entropy); `√2 z`, `z ~ N(0, I)` (MSE, BackPACK's
//!   `2(ŷ − f)` with `ŷ ~ N(f, ½)`); `σ(f) − ŷ`, `ŷ ~ Bernoulli(σ(f))` (BCE).
//!   `E[s sᵀ]` is the exact factor's product: the cross terms between
//!   positions vanish, `E[∇φ_{np}] = 0`, and the draws are independent.

use candle_core::{Tensor, D};
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::linalg::host;
use crate::tape::LossKind;

/// An output `[N, …]` as `N` samples of `P` positions of `K` entries.
#[derive(Debug, Clone, Copy)]
struct Positions {
    n: usize,
    p: usize,
    k: usize,
}

impl LossKind {
    fn positions(self, output: &Tensor) -> Result<Positions> {
        let n = output.dim(0)?;
        let k = match self {
            LossKind::CrossEntropy => output.dim(D::Minus1)?,
            LossKind::Mse | LossKind::BinaryCrossEntropyWithLogits => 1,
        };
        Ok(Positions {
            n,
            p: output.elem_count() / (n * k).max(1),
            k,
        })
    }

    /// `w_{np}/Z` `[N, P, 1]` for the rows of `output` and their `mask`
    /// (`[N, T…]`, cross-entropy only).
    ///
    /// # Errors
    /// [`Error::AllPositionsIgnored`] if the mask counts no position.
    fn weights(self, output: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let Positions { n, p, .. } = self.positions(output)?;
        let w = match mask {
            Some(mask) => mask.reshape((n, p, 1))?,
            None => Tensor::ones((n, p, 1), output.dtype(), output.device())?,
        };
        // the counted positions: all `N·P` unless a mask leaves some out
        let z = match (self, mask) {
            (LossKind::CrossEntropy, Some(_)) => host::scalar(&w.sum_all()?)?,
            _ => (n * p) as f64,
        };
        if z == 0.0 {
            return Err(Error::AllPositionsIgnored);
        }
        Ok((w / z)?)
    }

    /// Per-sample gradients `∇_f ℓ_n = (N/Z) Σ_p w_{np} ∇_f φ_{np}`, shaped as
    /// `output`: `p − onehot(y)` (cross-entropy), `2(f − y)` (MSE),
    /// `σ(f) − y` (BCE) at each position.
    pub(crate) fn gradient(
        self,
        output: &Tensor,
        targets: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let Positions { n, p, k } = self.positions(output)?;
        let f = output.reshape((n, p, k))?;
        let grad = match self {
            LossKind::CrossEntropy => {
                let probs = candle_nn::ops::softmax(&f, D::Minus1)?;
                let onehot = Tensor::eye(k, f.dtype(), f.device())?
                    .index_select(&targets.flatten_all()?, 0)?
                    .reshape((n, p, k))?;
                (probs - onehot)?
            }
            LossKind::Mse => ((f - targets.reshape((n, p, k))?)? * 2.0)?,
            LossKind::BinaryCrossEntropyWithLogits => {
                (candle_nn::ops::sigmoid(&f)? - targets.reshape((n, p, k))?)?
            }
        };
        let scale = (self.weights(output, mask)? * n as f64)?;
        Ok(grad.broadcast_mul(&scale)?.reshape(output.shape())?)
    }

    /// The exact factor `S` `[C_eff, N, …]` of the loss Hessian over the
    /// rows of `output` (already subsampled) and their `mask`, as a column
    /// `(q, j)` per position `q` and column `j` of its factor, nonzero at `q`
    /// only: `Σ_j S[j,n] S[j,n]ᵀ = H_n / N`.
    ///
    /// For MSE and BCE one column per entry (`√2` and `√(σ(1−σ))`, scaled),
    /// no basis. For cross-entropy, whose `diag(p) − p pᵀ` has the null vector
    /// `√p`, `K − 1` columns per position: with an orthonormal basis `U`
    /// `[K, K−1]` of `√p^⊥` (the first columns of the Householder reflection
    /// taking `√p` to `−e_K`), `s_j = U[:,j] ⊙ √p`, since
    /// `diag(√p) U Uᵀ diag(√p) = diag(p) − p pᵀ`. BackPACK's `K` columns
    /// `s_v = √p ⊙ (e_v − √p_v √p)` are `U` times these, so the Gram matrices
    /// agree up to `N·P` zero eigenvalues and the basis change, which the
    /// returned `U` `[N, P, K, K−1]` undoes.
    pub(crate) fn sqrt_hessian(
        self,
        output: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let Positions { n, p, k } = self.positions(output)?;
        let root_w = self.weights(output, mask)?.sqrt()?; // [N, P, 1]
        let (dtype, dev) = (output.dtype(), output.device());
        let f = output.reshape((n * p, k))?;
        // at_positions(x [N, P, K, J]) = [(q, j), N, P, K], nonzero at q only
        let at_positions = |x: Tensor| -> Result<Tensor> {
            let j = x.dim(3)?;
            let x = x.permute((1, 3, 0, 2))?.unsqueeze(3)?; // [P, J, N, 1, K]
            let eye = Tensor::eye(p, dtype, dev)?.reshape((p, 1, 1, p, 1))?;
            let mut dims = vec![p * j];
            dims.extend_from_slice(output.dims());
            Ok(x.broadcast_mul(&eye)?.reshape(dims)?)
        };
        match self {
            LossKind::CrossEntropy => {
                let tau = candle_nn::ops::softmax(&f, D::Minus1)?.sqrt()?; // [NP, K]
                                                                           // v = √p + e_K, U = (I − 2 v vᵀ / ‖v‖²)[:, :K−1]
                let e_last = Tensor::eye(k, dtype, dev)?.narrow(0, k - 1, 1)?;
                let v = tau.broadcast_add(&e_last)?;
                let v_sq = v.sqr()?.sum_keepdim(1)?; // [NP, 1]
                let outer = v
                    .unsqueeze(2)?
                    .broadcast_mul(&v.narrow(1, 0, k - 1)?.unsqueeze(1)?)?;
                let eye = Tensor::eye(k, dtype, dev)?.narrow(1, 0, k - 1)?;
                let basis = eye
                    .unsqueeze(0)?
                    .broadcast_sub(&outer.broadcast_div(&(v_sq / 2.0)?.unsqueeze(2)?)?)?
                    .reshape((n, p, k, k - 1))?;
                let s = basis
                    .broadcast_mul(&tau.reshape((n, p, k, 1))?)?
                    .broadcast_mul(&root_w.unsqueeze(3)?)?;
                Ok((at_positions(s)?, Some(basis)))
            }
            LossKind::Mse => Ok((at_positions((root_w * 2f64.sqrt())?.unsqueeze(3)?)?, None)),
            LossKind::BinaryCrossEntropyWithLogits => {
                let sigma = candle_nn::ops::sigmoid(&f)?.reshape((n, p, 1))?;
                let curvature = (&sigma * (1.0 - &sigma)?)?.sqrt()?;
                Ok((at_positions((root_w * curvature)?.unsqueeze(3)?)?, None))
            }
        }
    }

    /// A Monte-Carlo factor `S` `[M, N, …]` with
    /// `E[Σ_m S[m,n] S[m,n]ᵀ] = H_n / N`, drawn with `rng` from the model's
    /// predictive distribution at every position (see the module docs).
    pub(crate) fn sampled_sqrt_hessian(
        self,
        output: &Tensor,
        mask: Option<&Tensor>,
        m: usize,
        rng: &mut StdRng,
    ) -> Result<Tensor> {
        let Positions { n, p, k } = self.positions(output)?;
        let f = output.reshape((n * p, k))?;
        let scale = host::read::<f64>(&(self.weights(output, mask)? / m as f64)?.sqrt()?)?;
        // the probabilities [rows, k] on the host, where the labels are drawn
        let to_host = |t: Tensor| -> Result<Vec<Vec<f64>>> {
            let values = host::to_host::<f64>(&t, "the probabilities of the Monte-Carlo draws")?;
            Ok(values.chunks(t.dim(1)?).map(<[f64]>::to_vec).collect())
        };
        let rows = n * p;
        let mut s = vec![0f64; m * rows * k];
        match self {
            LossKind::CrossEntropy => {
                let probs = to_host(candle_nn::ops::softmax(&f, D::Minus1)?)?;
                for (row, chunk) in s.chunks_mut(k).enumerate() {
                    let pr = &probs[row % rows];
                    let class = WeightedIndex::new(pr)
                        .map_err(|_| Error::NonFinite {
                            what: "softmax probabilities for Monte-Carlo sampling",
                            value: pr.iter().sum(),
                        })?
                        .sample(rng);
                    for (c, v) in chunk.iter_mut().enumerate() {
                        let onehot = if c == class { 1.0 } else { 0.0 };
                        *v = (pr[c] - onehot) * scale[row % rows];
                    }
                }
            }
            LossKind::Mse => {
                for (row, v) in s.iter_mut().enumerate() {
                    let z: f64 = rng.sample(StandardNormal);
                    *v = 2f64.sqrt() * z * scale[row % rows];
                }
            }
            LossKind::BinaryCrossEntropyWithLogits => {
                let sigma = to_host(candle_nn::ops::sigmoid(&f)?)?;
                for (row, v) in s.iter_mut().enumerate() {
                    let sg = sigma[row % rows][0];
                    let drawn = if rng.random::<f64>() < sg { 1.0 } else { 0.0 };
                    *v = (sg - drawn) * scale[row % rows];
                }
            }
        }
        let mut dims = vec![m];
        dims.extend_from_slice(output.dims());
        host::to_device(s, dims, output.dtype(), output.device())
    }
}

#[cfg(test)]
#[path = "hessian_tests.rs"]
mod tests;
