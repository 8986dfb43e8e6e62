//! The tracked losses as the brute force sees them, written from their
//! formulas: `L = (1/Z) Σ_{n,p} w_{np} φ(f_{np}, y_{np})` over the samples `n`
//! and positions `p` of an output `[N, …]` (a position holds the `K` classes
//! of a cross-entropy, one entry otherwise), `w ∈ {0, 1}` (0 where the target
//! is the ignore index), `Z = Σ w` (cross-entropy) or the number of entries.

use anyhow::Result;
use candle_core::{Tensor, D};

use super::{brute_force::input, to_f64};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `vivit::loss::cross_entropy` on `[N, T…, C]`.
    CrossEntropy,
    /// `vivit::loss::cross_entropy_with_ignore` with this ignore index; the
    /// targets put it at every third position.
    CrossEntropyIgnoring(i64),
    /// `vivit::loss::mse` on `[N, …]`.
    Mse,
    /// `vivit::loss::binary_cross_entropy_with_logit` on `[N, …]`.
    Bce,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross-entropy",
            Loss::CrossEntropyIgnoring(_) => "cross-entropy with ignored positions",
            Loss::Mse => "mse",
            Loss::Bce => "bce",
        }
    }

    /// Entries of a position: the classes of a cross-entropy, else 1.
    pub fn entries_per_position(self, out: &Tensor) -> Result<usize> {
        Ok(match self {
            Loss::CrossEntropy | Loss::CrossEntropyIgnoring(_) => out.dim(D::Minus1)?,
            Loss::Mse | Loss::Bce => 1,
        })
    }

    /// Targets for the output `out` from `seed`: classes `(7i + seed) mod C`
    /// at position `i` (the ignore index at every third, the first counted),
    /// regression values, or binary targets in `[0, 1]` (some fractional).
    pub fn targets(self, out: &Tensor, seed: u64) -> Result<Tensor> {
        let dims = out.dims();
        Ok(match self {
            Loss::CrossEntropy | Loss::CrossEntropyIgnoring(_) => {
                let c = dims[dims.len() - 1] as u64;
                let positions = &dims[..dims.len() - 1];
                let count: usize = positions.iter().product();
                let t: Vec<i64> = (0..count)
                    .map(|i| match self {
                        Loss::CrossEntropyIgnoring(ignore) if i % 3 == 2 => ignore,
                        _ => ((i as u64 * 7 + seed) % c) as i64,
                    })
                    .collect();
                Tensor::from_vec(t, positions, &super::device())?
            }
            Loss::Mse => input(dims, seed + 1000)?,
            Loss::Bce => {
                let count: usize = dims.iter().product();
                let t: Vec<f64> = (0..count as u64)
                    .map(|i| [1.0, 0.0, 0.3][((i + seed) % 3) as usize])
                    .collect();
                Tensor::from_vec(t, dims, &super::device())?
            }
        })
    }

    /// The tracked loss of `out` against `targets`.
    pub fn record(self, out: &Tensor, targets: &Tensor) -> vivit::Result<Tensor> {
        match self {
            Loss::CrossEntropy => vivit::loss::cross_entropy(out, targets),
            Loss::CrossEntropyIgnoring(ignore) => {
                vivit::loss::cross_entropy_with_ignore(out, targets, ignore)
            }
            Loss::Mse => vivit::loss::mse(out, targets),
            Loss::Bce => vivit::loss::binary_cross_entropy_with_logit(out, targets),
        }
    }

    /// `w_{np}` of the positions of one sample's targets `y` `[1, T…]` or `[1, …]`.
    fn weights(self, y: &Tensor, positions: usize) -> Result<Vec<f64>> {
        Ok(match self {
            Loss::CrossEntropyIgnoring(ignore) => to_f64(y)?
                .iter()
                .map(|&t| if t == ignore as f64 { 0.0 } else { 1.0 })
                .collect(),
            _ => vec![1.0; positions],
        })
    }

    /// `Z` on the samples `samples` of targets `targets` for outputs `out`.
    pub fn normalizer(self, out: &Tensor, targets: &Tensor, samples: &[usize]) -> Result<f64> {
        let n = out.dim(0)?;
        let per_sample = out.elem_count() / n / self.entries_per_position(out)?;
        samples.iter().try_fold(0.0, |z, &s| {
            let w = self.weights(&targets.narrow(0, s, 1)?, per_sample)?;
            Ok(z + w.iter().sum::<f64>())
        })
    }

    /// `Σ_p w_{np} ∇²φ_{np}` `[F][F]` over the `F` entries of one sample's
    /// output `f` `[1, …]` with targets `y` (block-diagonal in positions).
    pub fn hessian(self, f: &Tensor, y: &Tensor) -> Result<Vec<Vec<f64>>> {
        let k = self.entries_per_position(f)?;
        let x = to_f64(f)?;
        let positions = x.len() / k;
        let w = self.weights(y, positions)?;
        let mut h = vec![vec![0.0; x.len()]; x.len()];
        for p in 0..positions {
            let row = &x[p * k..(p + 1) * k];
            for i in 0..k {
                for j in 0..k {
                    h[p * k + i][p * k + j] = w[p]
                        * match self {
                            Loss::CrossEntropy | Loss::CrossEntropyIgnoring(_) => {
                                let max = row.iter().fold(f64::MIN, |a, &b| a.max(b));
                                let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
                                let sum: f64 = e.iter().sum();
                                let (pi, pj) = (e[i] / sum, e[j] / sum);
                                f64::from(u8::from(i == j)) * pi - pi * pj
                            }
                            Loss::Mse => 2.0,
                            Loss::Bce => {
                                let s = 1.0 / (1.0 + (-row[0]).exp());
                                s * (1.0 - s)
                            }
                        };
                }
            }
        }
        Ok(h)
    }

    /// `Σ_p w_{np} φ_{np}` of one sample's output `f` `[1, …]` (with its graph).
    pub fn weighted_sum(self, f: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Loss::CrossEntropy | Loss::CrossEntropyIgnoring(_) => {
                let k = f.dim(D::Minus1)?;
                let rows = f.elem_count() / k;
                let logp = candle_nn::ops::log_softmax(&f.reshape((rows, k))?, 1)?;
                let w = self.weights(y, rows)?;
                let y = to_f64(y)?;
                let mut sum = Tensor::new(0f64, f.device())?;
                for (r, (&t, &wr)) in y.iter().zip(&w).enumerate() {
                    if wr != 0.0 {
                        sum = (sum - logp.get(r)?.get(t as usize)?)?;
                    }
                }
                sum
            }
            Loss::Mse => (f - y)?.sqr()?.sum_all()?,
            Loss::Bce => {
                let softplus = (f.exp()? + 1.0)?.log()?;
                (softplus - (y * f)?)?.sum_all()?
            }
        })
    }
}
