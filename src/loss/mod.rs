//! Tracked losses and the square roots of their Hessians.
//!
//! Both losses reduce with a **mean**, as PyTorch's `reduction="mean"`:
//!
//! - [`cross_entropy`]: `L = (1/N) Σ_n −log softmax(f_n)[y_n]`, per-sample Hessian
//!   `H_n = diag(p_n) − p_n p_nᵀ`, `p_n = softmax(f_n)`;
//! - [`mse`]: `L = (1/(N·C)) Σ_{n,c} (f_{n,c} − y_{n,c})²`, so that with
//!   `ℓ_n = (1/C)‖f_n − y_n‖²` the Hessian is `H_n = (2/C) I`.
//!
//! The square roots of their Hessians, exact and Monte-Carlo, are in
//! `hessian.rs`.

mod hessian;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::record;
use crate::tape::{LossKind, LossRecord};

/// Mean cross-entropy of logits `[N, C]` against class indices `[N]`.
///
/// `L = (1/N) Σ_n −log softmax(f_n)[y_n]`, the value of
/// [`candle_nn::loss::cross_entropy`]. Inside [`crate::record()`] it is the loss
/// the computations work with.
///
/// Softmax and log-softmax subtract each row's maximum, so huge logits give a
/// finite loss and a Hessian that underflows to zero, never NaN; a loss that
/// still overflows is refused by the computations ([`Error::NonFinite`]).
///
/// # Errors
/// [`Error::InvalidTargets`] if the logits are not a float `[N, C]` with
/// `C ≥ 2` (with one class the loss is identically zero), or the targets are
/// not integer class indices `[N]` in `0..C`; [`Error::EmptyBatch`] if `N = 0`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let invalid = |reason: String| Error::InvalidTargets {
        loss: "cross_entropy",
        reason,
    };
    let (n, c) = match logits.dims() {
        &[n, c] if logits.dtype().is_float() && c >= 2 => (n, c),
        _ => {
            return Err(invalid(format!(
                "logits must be a float tensor [N, C] with C ≥ 2 classes, got {:?} {:?}",
                logits.dtype(),
                logits.dims()
            )))
        }
    };
    if !targets.dtype().is_int() || targets.dims() != [n] {
        return Err(invalid(format!(
            "targets must be integer class indices of shape [{n}], got {:?} {:?}",
            targets.dtype(),
            targets.dims()
        )));
    }
    if n == 0 {
        return Err(Error::EmptyBatch);
    }
    let targets = targets.to_dtype(DType::U32)?;
    if let Some(&bad) = targets.to_vec1::<u32>()?.iter().find(|&&t| t as usize >= c) {
        return Err(invalid(format!(
            "target {bad} is not a class index in 0..{c}"
        )));
    }
    let loss = candle_nn::loss::cross_entropy(logits, &targets)?;
    remember(LossKind::CrossEntropy, logits, &targets, &loss);
    Ok(loss)
}

/// Mean squared error of outputs `[N, C]` against targets `[N, C]`.
///
/// `L = (1/(N·C)) Σ_{n,c} (f_{n,c} − y_{n,c})²`, like PyTorch's `MSELoss()` and
/// [`candle_nn::loss::mse`].
///
/// # Errors
/// [`Error::InvalidTargets`] if the output is not a float `[N, C]` or the
/// targets differ from it in shape or dtype; [`Error::EmptyBatch`] if `N = 0`.
pub fn mse(output: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let invalid = |reason: String| Error::InvalidTargets {
        loss: "mse",
        reason,
    };
    if output.rank() != 2 || !output.dtype().is_float() {
        return Err(invalid(format!(
            "output must be a float tensor [N, C], got {:?} {:?}",
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
    let loss = candle_nn::loss::mse(output, targets)?;
    remember(LossKind::Mse, output, targets, &loss);
    Ok(loss)
}

fn remember(kind: LossKind, output: &Tensor, targets: &Tensor, loss: &Tensor) {
    if record::recording() {
        record::push_loss(LossRecord {
            kind,
            output: output.clone(),
            targets: targets.clone(),
            loss: loss.id(),
        });
    }
}
