//! Losses of every entry on its own: squared error and binary cross-entropy.

use candle_core::Tensor;

use super::remember;
use crate::error::{Error, Result};
use crate::linalg::host;
use crate::tape::LossKind;

/// Mean squared error of outputs `[N, …]` against targets of the same shape.
///
/// `L = (1/E) Σ (f − y)²` over all `E` entries, like PyTorch's `MSELoss()`
/// and [`candle_nn::loss::mse`].
///
/// # Errors
/// [`Error::InvalidTargets`] if the output is not a float `[N, …]` or the
/// targets differ from it in shape or dtype; [`Error::EmptyBatch`] if `N = 0`.
pub fn mse(output: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check("mse", output, targets)?;
    let loss = candle_nn::loss::mse(output, targets)?;
    remember(LossKind::Mse, output, targets, None, &loss);
    Ok(loss)
}

/// Mean binary cross-entropy of logits `[N, …]` (`[N]`, `[N, 1]`, or `[N, C]`
/// for `C` labels at once) against targets in `[0, 1]` of the same shape.
///
/// `L = (1/E) Σ softplus(f) − y f = (1/E) Σ −y log σ(f) − (1 − y) log(1 − σ(f))`
/// over all `E` entries, the value of
/// [`candle_nn::loss::binary_cross_entropy_with_logit`] and PyTorch's
/// `BCEWithLogitsLoss()`, computed as
/// `softplus(f) = (f + |f|)/2 + log(1 + e^{−|f|})`: finite for any finite
/// logit, with the gradient `(σ(f) − y)/E` also at `f = 0`.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// # fn main() -> vivit::Result<()> {
/// let logits = Tensor::new(&[[0f64, 800.]], &Device::Cpu)?;
/// let targets = Tensor::new(&[[1f64, 1.]], &Device::Cpu)?;
/// let loss = vivit::loss::binary_cross_entropy_with_logit(&logits, &targets)?;
/// assert!((loss.to_scalar::<f64>()? - 2f64.ln() / 2.).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::InvalidTargets`] if the logits are not a float `[N, …]`, the
/// targets differ from them in shape or dtype, or a target is outside
/// `[0, 1]` (named with its position); [`Error::EmptyBatch`] if `N = 0`.
pub fn binary_cross_entropy_with_logit(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let name = "binary_cross_entropy_with_logit";
    check(name, logits, targets)?;
    // one flag reduced on the targets' device; the targets only on a fault
    if host::scalar(&host::any_outside(targets, 0.0, 1.0)?)? > 0.0 {
        let values = host::read::<f64>(targets)?;
        let bad = values
            .iter()
            .enumerate()
            .find(|(_, t)| !(0.0..=1.0).contains(*t))
            .map_or_else(
                || "a target".into(),
                |(i, t)| format!("target {t} (entry {i})"),
            );
        return Err(Error::InvalidTargets {
            loss: name,
            reason: format!("{bad} is outside [0, 1]"),
        });
    }
    let magnitude = logits.abs()?;
    let softplus =
        (((logits + &magnitude)? * 0.5)? + magnitude.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let loss = (softplus - (targets * logits)?)?.mean_all()?;
    remember(
        LossKind::BinaryCrossEntropyWithLogits,
        logits,
        targets,
        None,
        &loss,
    );
    Ok(loss)
}

/// A float output `[N, …]` with `N > 0` and targets of its shape and dtype.
fn check(loss: &'static str, output: &Tensor, targets: &Tensor) -> Result<()> {
    let invalid = |reason: String| Error::InvalidTargets { loss, reason };
    if output.rank() == 0 || !output.dtype().is_float() {
        return Err(invalid(format!(
            "output must be a float tensor [N, …], got {:?} {:?}",
            output.dtype(),
            output.dims()
        )));
    }
    if targets.dims() != output.dims() || targets.dtype() != output.dtype() {
        return Err(invalid(format!(
            "targets must match the output {:?} {:?}, got {:?} {:?}",
            output.dtype(),
            output.dims(),
            targets.dtype(),
            targets.dims()
        )));
    }
    if output.dim(0)? == 0 {
        return Err(Error::EmptyBatch);
    }
    Ok(())
}
