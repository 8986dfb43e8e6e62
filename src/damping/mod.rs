//! Damping policies of the damped Newton step.
//!
//! Along each kept GGN eigenvector `e_k` the step moves by
//! `τ_k = −γ̄_k / (λ̄_k + δ_k)`, where `γ̄_k` and `λ̄_k` are the mean first- and
//! second-order directional derivatives; a [`Damping`] chooses the `δ_k`.
//! `δ_k = +∞` drops direction `k` (`τ_k = 0`); negative or NaN values are refused.
//!
//! A [`Damping`] is a policy and holds no state: the adaptive `δ` of a
//! Levenberg–Marquardt damping belongs to the optimizer that adapts it
//! ([`crate::DampedNewton::current_damping`]).

mod bootstrap;
mod levenberg_marquardt;

pub use bootstrap::Bootstrap;
pub use levenberg_marquardt::LevenbergMarquardt;

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// What a damping closure sees, in the seed's layout.
#[derive(Debug)]
pub struct DampingInput<'a> {
    /// Kept eigenvalues `λ_k` `[K]`.
    pub evals: &'a [f64],
    /// Gram eigenvectors `ẽ_k` as columns `[C·N_ggn, K]` (index `c·N + n`).
    pub gram_evecs: &'a Tensor,
    /// First-order directional derivatives `γ[n,k]` `[N_grad, K]`.
    pub gammas: &'a Tensor,
    /// Second-order directional derivatives `λ[n,k]` `[N_ggn, K]`.
    pub lambdas: &'a Tensor,
}

type DampingFn = dyn Fn(&DampingInput<'_>) -> Vec<f64> + Send + Sync;

/// Chooses the damping `δ_k ≥ 0` of each kept direction.
///
/// | strategy | `δ_k` |
/// |---|---|
/// | [`Damping::constant`] | `δ` |
/// | [`Damping::bootstrap`] | per direction, the grid value whose bootstrapped gain is largest and safely positive (`+∞` if none) |
/// | [`Damping::levenberg_marquardt`] | one `δ`, grown or shrunk from the ratio of actual to predicted loss change |
/// | [`Damping::custom`] | a closure of [`DampingInput`] |
///
/// The complement step (`complement(true)` on the computation or the
/// optimizer) also needs `δ_⊥` for the part of the gradient outside the kept
/// eigenspace: the constant, the current Levenberg–Marquardt `δ`, or what
/// [`Damping::with_complement`] sets.
#[derive(Clone)]
pub struct Damping {
    kind: Kind,
    complement: Option<f64>,
}

#[derive(Clone)]
enum Kind {
    Constant(f64),
    Custom(Arc<DampingFn>),
    Bootstrap(Bootstrap),
    LevenbergMarquardt(LevenbergMarquardt),
}

impl Damping {
    /// `δ_k = δ` on every direction (and `δ_⊥ = δ`).
    pub fn constant(delta: f64) -> Self {
        Self {
            kind: Kind::Constant(delta),
            complement: Some(delta),
        }
    }

    /// `δ_k` from a closure; it must return one value per kept direction.
    pub fn custom(f: impl Fn(&DampingInput<'_>) -> Vec<f64> + Send + Sync + 'static) -> Self {
        Self {
            kind: Kind::Custom(Arc::new(f)),
            complement: None,
        }
    }

    /// Bootstrap damping from the noise of `γ` and `λ` (ViViT paper v1, §9.4 of
    /// the reference notes): for each direction and each `δ` on the grid, the
    /// step `τ(δ) = −mean(γ*)/(mean(λ*) + δ)` from one resample is scored by the
    /// gain `−mean(γ**) τ − ½ mean(λ**) τ²` on an independent resample; `δ_k` is
    /// the grid value with the largest `(100 − percentile)`-% quantile of gains
    /// among those whose quantile is non-negative, or `+∞` (drop the direction).
    pub fn bootstrap(config: Bootstrap) -> Self {
        Self {
            kind: Kind::Bootstrap(config),
            complement: None,
        }
    }

    /// One adaptive `δ` for all directions, starting at `config.delta` and
    /// updated after every step from `ρ = (L(θ + s) − L(θ)) / m(s)`, the
    /// actual over the predicted loss change (see [`LevenbergMarquardt`]);
    /// [`crate::DampedNewton::step_with_loss`] also takes back a step that
    /// raised the loss. The optimizer keeps the current `δ` of each group
    /// ([`crate::DampedNewton::current_damping`]): clones of this value given
    /// to several groups or optimizers adapt independently. Measured on the
    /// same mini-batch, `ρ` stays near 1 and `δ` can shrink until a step fails
    /// on the next batch, so keep `min` well above 0 for stochastic training.
    pub fn levenberg_marquardt(config: LevenbergMarquardt) -> Self {
        Self {
            kind: Kind::LevenbergMarquardt(config),
            complement: None,
        }
    }

    /// Sets `δ_⊥ > 0` for the complement step (`+∞` turns it off; a complement
    /// step with `δ_⊥ ≤ 0` or NaN is refused with [`Error::InvalidDamping`]).
    pub fn with_complement(mut self, delta: f64) -> Self {
        self.complement = Some(delta);
        self
    }

    /// `δ_⊥` for the complement step, if known.
    pub(crate) fn complement(&self) -> Option<f64> {
        match &self.kind {
            Kind::LevenbergMarquardt(lm) => self.complement.or(Some(lm.delta)),
            _ => self.complement,
        }
    }

    /// The one `δ` of a damping that damps every direction alike: the
    /// constant, or the Levenberg–Marquardt `δ`; `None` for dampings that
    /// choose per direction.
    pub(crate) fn scalar(&self) -> Option<f64> {
        match &self.kind {
            Kind::Constant(d) => Some(*d),
            Kind::LevenbergMarquardt(lm) => Some(lm.delta),
            Kind::Custom(_) | Kind::Bootstrap(_) => None,
        }
    }

    /// The rule of a damping whose `δ` adapts from the loss after each step
    /// (Levenberg–Marquardt), which only
    /// [`crate::DampedNewton::step_with_loss`] evaluates.
    pub(crate) fn adaptive(&self) -> Option<&LevenbergMarquardt> {
        match &self.kind {
            Kind::LevenbergMarquardt(lm) => Some(lm),
            _ => None,
        }
    }

    /// This damping with its Levenberg–Marquardt `δ` set to `delta` (the
    /// others unchanged).
    pub(crate) fn at(&self, delta: f64) -> Self {
        let mut damping = self.clone();
        if let Kind::LevenbergMarquardt(lm) = &mut damping.kind {
            lm.delta = delta;
        }
        damping
    }

    /// `δ_k` for every kept direction, checked.
    ///
    /// # Errors
    /// [`Error::InvalidDamping`] for bootstrap or Levenberg–Marquardt settings
    /// that cannot work, [`Error::DampingLength`], [`Error::DampingValue`].
    pub(crate) fn deltas(&self, input: &DampingInput<'_>) -> Result<Vec<f64>> {
        let k = input.evals.len();
        let deltas = match &self.kind {
            Kind::Constant(d) => vec![*d; k],
            Kind::Custom(f) => f(input),
            Kind::Bootstrap(b) => {
                b.check()?;
                b.deltas(input)?
            }
            Kind::LevenbergMarquardt(lm) => {
                lm.check()?;
                vec![lm.delta; k]
            }
        };
        if deltas.len() != k {
            return Err(Error::DampingLength {
                expected: k,
                got: deltas.len(),
            });
        }
        if let Some((index, &value)) = deltas
            .iter()
            .enumerate()
            .find(|(_, d)| d.is_nan() || **d < 0.0)
        {
            return Err(Error::DampingValue { index, value });
        }
        Ok(deltas)
    }
}

impl Default for Damping {
    /// [`Damping::constant`]`(1.0)`.
    fn default() -> Self {
        Self::constant(1.0)
    }
}

impl fmt::Debug for Damping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Constant(d) => write!(f, "Damping::constant({d})"),
            Kind::Custom(_) => write!(f, "Damping::custom"),
            Kind::Bootstrap(b) => {
                write!(f, "Damping::bootstrap(grid: ")?;
                match b.grid.as_slice() {
                    short @ ([] | [_] | [_, _] | [_, _, _] | [_, _, _, _]) => {
                        write!(f, "{short:?}")?
                    }
                    long => {
                        let lo = long.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = long.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        write!(f, "{} values in [{lo}, {hi}]", long.len())?
                    }
                }
                write!(
                    f,
                    ", resamples: {}, percentile: {}, seed: {:?})",
                    b.resamples, b.percentile, b.seed
                )
            }
            Kind::LevenbergMarquardt(lm) => {
                write!(f, "Damping::levenberg_marquardt({lm:?})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Debug output (and so the errors naming a damping) summarizes a long
    /// bootstrap grid instead of listing its hundred values.
    #[test]
    fn debug_summarizes_long_grids() {
        let grid = Bootstrap::default().grid;
        let (lo, hi) = (grid[0], grid[grid.len() - 1]);
        assert_eq!(
            format!("{:?}", Damping::bootstrap(Bootstrap::default())),
            format!(
                "Damping::bootstrap(grid: 100 values in [{lo}, {hi}], resamples: 100, \
                 percentile: 95, seed: None)"
            )
        );
        let short = Bootstrap {
            grid: vec![0.1, 1.0],
            seed: Some(3),
            ..Bootstrap::default()
        };
        assert_eq!(
            format!("{:?}", Damping::bootstrap(short)),
            "Damping::bootstrap(grid: [0.1, 1.0], resamples: 100, percentile: 95, seed: Some(3))"
        );
    }

    fn input_deltas(
        damping: &Damping,
        gammas: &[[f64; 2]],
        lambdas: &[[f64; 2]],
    ) -> Result<Vec<f64>> {
        let dev = Device::Cpu;
        let g = Tensor::from_vec(gammas.concat(), (gammas.len(), 2), &dev)?;
        let l = Tensor::from_vec(lambdas.concat(), (lambdas.len(), 2), &dev)?;
        let e = Tensor::zeros((4, 2), DType::F64, &dev)?;
        damping.deltas(&DampingInput {
            evals: &[1.0, 2.0],
            gram_evecs: &e,
            gammas: &g,
            lambdas: &l,
        })
    }

    /// Direction 0 has a clear slope and curvature, so a small `δ` is safe;
    /// direction 1's slope is pure noise (mean ≈ 0, large spread), so every
    /// step risks a loss increase and the direction is dropped (`δ = ∞`).
    #[test]
    fn bootstrap_keeps_signal_and_drops_noise() -> Result<()> {
        let gammas: Vec<[f64; 2]> = (0..40)
            .map(|n| {
                [
                    1.0 + 0.05 * ((n % 5) as f64 - 2.0),
                    if n % 2 == 0 { 3.0 } else { -3.0 },
                ]
            })
            .collect();
        let lambdas: Vec<[f64; 2]> = (0..40).map(|n| [2.0 + 0.1 * (n % 3) as f64, 0.5]).collect();
        let damping = Damping::bootstrap(Bootstrap {
            seed: Some(1),
            ..Bootstrap::default()
        });
        let deltas = input_deltas(&damping, &gammas, &lambdas)?;
        assert!(deltas[0].is_finite() && deltas[0] < 1.0, "{deltas:?}");
        assert!(deltas[1].is_infinite(), "{deltas:?}");
        assert_eq!(deltas, input_deltas(&damping, &gammas, &lambdas)?, "seeded");
        Ok(())
    }
}
