//! The square roots of the tracked losses' Hessians.
//!
//! The GGN of the mean loss over the samples `S` used for curvature is
//! `G = (1/|S|) Σ_{n∈S} J_nᵀ H_n J_n = V Vᵀ` with the columns
//! `v_{c,n} = J_nᵀ s_{n,c} / √|S|` for a factor `H_n = Σ_c s_{n,c} s_{n,c}ᵀ`:
//!
//! - exact cross-entropy (BackPACK's factor, `C` columns):
//!   `s_{n,c} = √p_n ⊙ (e_c − √p_{n,c} √p_n)`;
//! - exact MSE (`C` columns): `s_{n,c} = √(2/C) e_c`;
//! - Monte-Carlo with `M` samples: `s_{n,m} = ∇_f(−log p(ŷ_{n,m} | f_n)) / √M` with
//!   `ŷ` drawn from the model's own predictive distribution, so `E[Σ_m s sᵀ] = H_n`:
//!   `p_n − onehot(ŷ)`, `ŷ ~ Cat(p_n)` (cross-entropy) and `√(2/C) z`,
//!   `z ~ N(0, I)` (MSE, BackPACK's `2(ŷ − f)/√C` with `ŷ ~ N(f, ½ I)`).

use candle_core::{DType, Device, Tensor, D};
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::tape::LossKind;

impl LossKind {
    /// Per-sample gradients `∇_f ℓ_n` `[N, C]` of the unreduced losses:
    /// `p_n − onehot(y_n)` (cross-entropy), `(2/C)(f_n − y_n)` (MSE).
    pub(crate) fn gradient(self, output: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (_, c) = output.dims2()?;
        Ok(match self {
            LossKind::CrossEntropy => {
                let p = candle_nn::ops::softmax(output, D::Minus1)?;
                let onehot =
                    Tensor::eye(c, output.dtype(), output.device())?.index_select(targets, 0)?;
                (p - onehot)?
            }
            LossKind::Mse => ((output - targets)? * (2.0 / c as f64))?,
        })
    }

    /// The exact factor `S` of the loss Hessian of the mean over the `N_g` rows
    /// of `output` (already subsampled): `Σ_j S[j,n] S[j,n]ᵀ = H_n / N_g`.
    ///
    /// For MSE, `S` `[C, N_g, C]` and no basis. For cross-entropy, whose Hessian
    /// `diag(p) − p pᵀ` has the null vector `√p`, the factor has only `C − 1`
    /// columns: with an orthonormal basis `U_n` `[C, C−1]` of `√p_n^⊥` (the first
    /// columns of the Householder reflection taking `√p_n` to `−e_C`),
    /// `S[j,n] = U_n[:,j] ⊙ √p_n`, since `diag(√p) U Uᵀ diag(√p) = diag(p) − p pᵀ`.
    /// BackPACK's `C` columns `s_{n,v} = √p ⊙ (e_v − √p_v √p)` are `U_n` times
    /// these, so the Gram matrices agree up to the `N_g` zero eigenvalues and the
    /// basis change, which the returned `U` `[N_g, C, C−1]` undoes.
    pub(crate) fn sqrt_hessian(self, output: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (n, c) = output.dims2()?;
        let scale = 1.0 / (n as f64).sqrt();
        match self {
            LossKind::CrossEntropy => {
                let tau = candle_nn::ops::softmax(output, D::Minus1)?.sqrt()?;
                // v = √p + e_C, U = (I − 2 v vᵀ / ‖v‖²)[:, :C−1]
                let e_last =
                    Tensor::eye(c, output.dtype(), output.device())?.narrow(0, c - 1, 1)?;
                let v = tau.broadcast_add(&e_last)?; // [N, C]
                let v_sq = v.sqr()?.sum_keepdim(1)?; // [N, 1]
                let outer = v
                    .unsqueeze(2)?
                    .broadcast_mul(&v.narrow(1, 0, c - 1)?.unsqueeze(1)?)?;
                let eye = Tensor::eye(c, output.dtype(), output.device())?.narrow(1, 0, c - 1)?;
                let basis = eye
                    .unsqueeze(0)?
                    .broadcast_sub(&outer.broadcast_div(&(v_sq / 2.0)?.unsqueeze(2)?)?)?;
                let factor = basis
                    .broadcast_mul(&tau.unsqueeze(2)?)?
                    .permute((2, 0, 1))?;
                Ok(((factor * scale)?, Some(basis)))
            }
            LossKind::Mse => {
                let eye = Tensor::eye(c, output.dtype(), output.device())?;
                let factor =
                    eye.unsqueeze(1)?.broadcast_as((c, n, c))? * ((2.0 / c as f64).sqrt() * scale);
                Ok((factor?, None))
            }
        }
    }

    /// A Monte-Carlo factor `S` `[M, N_g, C]` with `E[Σ_m S[m,n] S[m,n]ᵀ] = H_n / N_g`,
    /// drawn with `rng` from the model's predictive distribution.
    pub(crate) fn sampled_sqrt_hessian(
        self,
        output: &Tensor,
        m: usize,
        rng: &mut StdRng,
    ) -> Result<Tensor> {
        let (n, c) = output.dims2()?;
        let scale = 1.0 / ((m * n) as f64).sqrt();
        let s: Vec<f64> = match self {
            LossKind::CrossEntropy => {
                let p = candle_nn::ops::softmax(output, D::Minus1)?
                    .to_dtype(DType::F64)?
                    .to_vec2::<f64>()?;
                let mut s = vec![0f64; m * n * c];
                for (row, chunk) in s.chunks_mut(c).enumerate() {
                    let p_n = &p[row % n];
                    let class = WeightedIndex::new(p_n)
                        .map_err(|_| Error::NonFinite {
                            what: "softmax probabilities for Monte-Carlo sampling",
                            value: p_n.iter().sum(),
                        })?
                        .sample(rng);
                    for (k, v) in chunk.iter_mut().enumerate() {
                        let onehot = if k == class { 1.0 } else { 0.0 };
                        *v = (p_n[k] - onehot) * scale;
                    }
                }
                s
            }
            LossKind::Mse => {
                let std = (2.0 / c as f64).sqrt() * scale;
                (0..m * n * c)
                    .map(|_| std * rng.sample::<f64, _>(StandardNormal))
                    .collect()
            }
        };
        Ok(Tensor::from_vec(s, (m, n, c), &Device::Cpu)?
            .to_dtype(output.dtype())?
            .to_device(output.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn hessians(kind: LossKind, f: &Tensor) -> Result<Vec<Vec<Vec<f64>>>> {
        let p = candle_nn::ops::softmax(f, D::Minus1)?.to_vec2::<f64>()?;
        let c = p[0].len();
        Ok(p.iter()
            .map(|p| {
                (0..c)
                    .map(|i| {
                        (0..c)
                            .map(|j| match kind {
                                LossKind::CrossEntropy => {
                                    (if i == j { p[i] } else { 0.0 }) - p[i] * p[j]
                                }
                                LossKind::Mse => {
                                    if i == j {
                                        2.0 / c as f64
                                    } else {
                                        0.0
                                    }
                                }
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }

    /// `N · Σ_c S[c,n] S[c,n]ᵀ` per sample, `[N][C][C]`.
    fn outer_sums(s: &Tensor) -> Result<Vec<Vec<Vec<f64>>>> {
        let (m, n, c) = s.dims3()?;
        let s = s.to_vec3::<f64>()?;
        Ok((0..n)
            .map(|k| {
                (0..c)
                    .map(|i| {
                        (0..c)
                            .map(|j| {
                                (0..m).map(|v| s[v][k][i] * s[v][k][j]).sum::<f64>() * n as f64
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }

    #[test]
    fn exact_factors_square_to_the_hessian() -> Result<()> {
        let f = Tensor::new(
            &[
                [0.3f64, -1.2, 2.0, 0.1],
                [5.0, -3.0, 0.0, 1.0],
                [0.0, 0.0, 0.0, 0.0],
            ],
            &Device::Cpu,
        )?;
        for kind in [LossKind::CrossEntropy, LossKind::Mse] {
            let got = outer_sums(&kind.sqrt_hessian(&f)?.0)?;
            let want = hessians(kind, &f)?;
            for (g, w) in got
                .iter()
                .flatten()
                .flatten()
                .zip(want.iter().flatten().flatten())
            {
                assert!((g - w).abs() < 1e-14, "{kind:?}: {g} vs {w}");
            }
        }
        Ok(())
    }

    /// `E[Σ_m s sᵀ] = H`: with `M` samples every entry of the average is within
    /// six standard deviations of the exact Hessian. Entries of `s sᵀ` are in
    /// `[−1, 1]` for cross-entropy (`s = p − e_y`) and have variance at most
    /// `2 (2/C)²` for MSE (`s = √(2/C) z`), so the standard deviation of the
    /// mean is at most `σ/√M`.
    #[test]
    fn monte_carlo_factors_average_to_the_hessian() -> Result<()> {
        let f = Tensor::new(&[[0.3f64, -1.2, 2.0], [1.0, 0.5, -0.5]], &Device::Cpu)?;
        let m = 40_000;
        let mut rng = StdRng::seed_from_u64(7);
        for (kind, sigma) in [
            (LossKind::CrossEntropy, 1.0),
            (LossKind::Mse, 2f64.sqrt() * 2.0 / 3.0),
        ] {
            let got = outer_sums(&kind.sampled_sqrt_hessian(&f, m, &mut rng)?)?;
            let want = hessians(kind, &f)?;
            let tol = 6.0 * sigma / (m as f64).sqrt();
            for (g, w) in got
                .iter()
                .flatten()
                .flatten()
                .zip(want.iter().flatten().flatten())
            {
                assert!((g - w).abs() < tol, "{kind:?}: {g} vs {w} (tol {tol})");
            }
        }
        Ok(())
    }
}
