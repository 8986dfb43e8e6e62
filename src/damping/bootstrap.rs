//! Bootstrap damping: `δ_k` per direction from the noise of `γ` and `λ`.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::DampingInput;
use crate::error::{Error, Result};
use crate::linalg::host;

/// Settings of [`super::Damping::bootstrap`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// Candidate `δ` values; default `logspace(−3, 2, 100)`.
    pub grid: Vec<f64>,
    /// Number of resamples; default 100.
    pub resamples: usize,
    /// The gain quantile taken is `(100 − percentile)` %; default 95.
    pub percentile: f64,
    /// Seed of the resampling; without it every step draws afresh.
    pub seed: Option<u64>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            grid: (0..100)
                .map(|i| 10f64.powf(-3.0 + 5.0 * i as f64 / 99.0))
                .collect(),
            resamples: 100,
            percentile: 95.0,
            seed: None,
        }
    }
}

impl Bootstrap {
    /// # Errors
    /// [`Error::InvalidDamping`] for an empty grid, no resamples, or a
    /// percentile outside `[0, 100]`.
    pub(super) fn check(&self) -> Result<()> {
        let fault = if self.grid.is_empty() {
            "the grid is empty".to_string()
        } else if self.resamples == 0 {
            "resamples is 0".to_string()
        } else if !(0.0..=100.0).contains(&self.percentile) {
            format!("percentile {} is not in [0, 100]", self.percentile)
        } else {
            return Ok(());
        };
        Err(Error::InvalidDamping(format!("Bootstrap: {fault}")))
    }

    pub(super) fn deltas(&self, input: &DampingInput<'_>) -> Result<Vec<f64>> {
        let columns = |t: &Tensor| -> Result<Vec<Vec<f64>>> {
            let rows = t.dim(0)?;
            let values = host::read::<f64>(&t.t()?)?;
            Ok(values.chunks(rows.max(1)).map(<[f64]>::to_vec).collect())
        };
        let (gammas, lambdas) = (columns(input.gammas)?, columns(input.lambdas)?);
        let mut rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Ok(gammas
            .iter()
            .zip(&lambdas)
            .map(|(g, l)| self.delta(g, l, &mut rng))
            .collect())
    }

    /// `δ` of one direction from its per-sample `γ` and `λ`.
    fn delta(&self, gammas: &[f64], lambdas: &[f64], rng: &mut StdRng) -> f64 {
        let mut resampled_mean = |v: &[f64]| -> f64 {
            (0..v.len())
                .map(|_| v[rng.random_range(0..v.len())])
                .sum::<f64>()
                / v.len() as f64
        };
        // gains[d][r]: gain of grid value d on resample r
        let mut gains = vec![Vec::with_capacity(self.resamples); self.grid.len()];
        for _ in 0..self.resamples {
            let (g1, l1) = (resampled_mean(gammas), resampled_mean(lambdas));
            let (g2, l2) = (resampled_mean(gammas), resampled_mean(lambdas));
            for (delta, gain) in self.grid.iter().zip(&mut gains) {
                let tau = -g1 / (l1 + delta);
                gain.push(-g2 * tau - 0.5 * l2 * tau * tau);
            }
        }
        let rank = ((100.0 - self.percentile) / 100.0 * (self.resamples.max(1) - 1) as f64).round()
            as usize;
        self.grid
            .iter()
            .zip(gains)
            .map(|(&delta, mut gain)| {
                gain.sort_by(f64::total_cmp);
                (delta, gain.get(rank).copied().unwrap_or(f64::NEG_INFINITY))
            })
            .filter(|&(_, q)| q >= 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(f64::INFINITY, |(delta, _)| delta)
    }
}
