//! How the computed steps become parameter changes: the trust-region scale,
//! the momentum buffers and the decoupled weight decay.

use std::collections::HashMap;

use candle_core::{Tensor, TensorId, Var};

use crate::computations::NewtonStep;
use crate::error::{check_finite, Result};

/// The momentum buffer `u` of each variable (empty without momentum).
#[derive(Debug, Clone, Default)]
pub(super) struct Velocity(HashMap<TensorId, Tensor>);

/// The settings of one update.
#[derive(Debug, Clone, Copy)]
pub(super) struct Update {
    /// The learning rate `lr`.
    pub lr: f64,
    /// The momentum `μ`.
    pub momentum: f64,
    /// The weight decay `λ`.
    pub weight_decay: f64,
    /// The trust-region factor `ν` ([`trust_scale`]).
    pub scale: f64,
}

impl Velocity {
    /// Applies the step `s` of each variable:
    ///
    /// ```text
    /// u ← μ u + ν s,   θ ← (1 − lr·λ) θ + lr·u
    /// ```
    ///
    /// (`u = ν s` at the first step or without momentum). All or nothing:
    /// if an updated parameter is not finite, no parameter and no buffer
    /// changes.
    pub fn apply<'a>(
        &mut self,
        steps: impl Iterator<Item = (&'a Var, &'a Tensor)>,
        update: Update,
    ) -> Result<()> {
        let Update {
            lr,
            momentum,
            weight_decay,
            scale,
        } = update;
        let mut updates = Vec::new();
        for (var, s) in steps {
            let s = if scale < 1.0 { (s * scale)? } else { s.clone() };
            let u = match self.0.get(&var.id()) {
                Some(u) if momentum > 0.0 => ((u * momentum)? + &s)?,
                _ => s,
            };
            let theta = var.as_tensor();
            let decayed = if weight_decay > 0.0 {
                (theta - (theta * (lr * weight_decay))?)?
            } else {
                theta.clone()
            };
            updates.push((var, (decayed + (&u * lr)?)?, u));
        }
        let values: Vec<Tensor> = updates.iter().map(|(_, value, _)| value.clone()).collect();
        check_finite(&values, "a parameter after the step")?;
        for (var, value, u) in updates {
            var.set(&value)?;
            if momentum > 0.0 {
                self.0.insert(var.id(), u);
            }
        }
        Ok(())
    }
}

/// The factor `ν = min(1, √(κ / (lr² |ḡᵀs|)))` that keeps
/// `ν² lr² |ḡᵀs| ≤ κ` (K-FAC's KL clipping; for the full-rank step
/// `|ḡᵀs| = sᵀ(G + δI)s`, so `ν lr s` stays in the ball of radius `√κ` of that
/// norm), summed over the groups; 1 without a trust region.
pub(super) fn trust_scale(trust_region: Option<f64>, lr: f64, steps: &[NewtonStep]) -> f64 {
    let Some(kappa) = trust_region else {
        return 1.0;
    };
    let size = lr * lr * steps.iter().map(|s| s.slope).sum::<f64>().abs();
    if size > kappa {
        (kappa / size).sqrt()
    } else {
        1.0
    }
}
