//! The Levenberg–Marquardt rule that adapts one damping `δ` from how well
//! the quadratic model predicted each step.

use crate::error::{Error, Result};

/// The rule of [`crate::Damping::levenberg_marquardt`]: its starting `δ`
/// and how `δ` moves. The current `δ` of each group is the optimizer's
/// ([`crate::DampedNewton::current_damping`]).
///
/// After a step with predicted change `m(s) = ḡᵀs + ½ sᵀGs` (for the
/// directional step `Σ_k (γ̄_k τ_k + ½ λ̄_k τ_k²)`, plus `ḡᵀ s_⊥` for the
/// complement step) and actual change `ΔL`, with
/// `ρ = ΔL / m(s)`: `δ ← δ · increase` if `ρ < 1/4` (also when the loss rose
/// or no decrease was predicted), `δ ← δ · decrease` if `ρ > 3/4`; `δ` stays in
/// `[min, max]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LevenbergMarquardt {
    /// The starting `δ`; default 1.
    pub delta: f64,
    /// Factor for a poor step; default 3/2.
    pub increase: f64,
    /// Factor for a good step; default 2/3.
    pub decrease: f64,
    /// Lower bound of `δ`; default 1e-8.
    pub min: f64,
    /// Upper bound of `δ`; default 1e8.
    pub max: f64,
}

impl Default for LevenbergMarquardt {
    fn default() -> Self {
        Self {
            delta: 1.0,
            increase: 1.5,
            decrease: 2.0 / 3.0,
            min: 1e-8,
            max: 1e8,
        }
    }
}

impl LevenbergMarquardt {
    /// Starts at `delta` with the default factors.
    pub fn new(delta: f64) -> Self {
        Self {
            delta,
            ..Self::default()
        }
    }

    /// # Errors
    /// [`Error::InvalidDamping`] unless `0 ≤ min ≤ max` and both factors are
    /// finite and positive (NaN fails every comparison).
    pub(crate) fn check(&self) -> Result<()> {
        let factors_ok = [self.increase, self.decrease]
            .iter()
            .all(|f| f.is_finite() && *f > 0.0);
        if 0.0 <= self.min && self.min <= self.max && factors_ok {
            return Ok(());
        }
        Err(Error::InvalidDamping(format!(
            "LevenbergMarquardt needs 0 ≤ min ≤ max and finite positive factors, got {self:?}"
        )))
    }

    /// The `δ` after a step taken with `delta` whose loss changed by
    /// `actual` where the model predicted `predicted`.
    pub(crate) fn next(&self, delta: f64, actual: f64, predicted: f64) -> f64 {
        let rho = if predicted < 0.0 {
            actual / predicted
        } else {
            f64::NEG_INFINITY
        };
        let delta = if rho.is_nan() || rho < 0.25 {
            delta * self.increase
        } else if rho > 0.75 {
            delta * self.decrease
        } else {
            delta
        };
        delta.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenberg_marquardt_rule() {
        let lm = LevenbergMarquardt::new(1.0);
        let delta = lm.next(1.0, -0.9, -1.0); // ρ = 0.9: good model
        assert_eq!(delta, 2.0 / 3.0);
        let delta = lm.next(delta, -0.5, -1.0); // ρ = 0.5: keep
        assert_eq!(delta, 2.0 / 3.0);
        let delta = lm.next(delta, 0.1, -1.0); // loss rose
        assert_eq!(delta, 2.0 / 3.0 * 1.5);
        let delta = lm.next(delta, -0.1, 0.0); // no decrease predicted
        assert_eq!(delta, 2.0 / 3.0 * 1.5 * 1.5);
        assert_eq!(lm.next(1e-8, -1.0, -1.0), 1e-8, "clamped at min");
    }
}
