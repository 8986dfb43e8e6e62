//! Softmax cross-entropy over the last axis, at every position.

use candle_core::{DType, Tensor};

use super::remember;
use crate::error::{Error, Result};
use crate::tape::LossKind;

/// Mean cross-entropy of logits `[N, T…, C]` against class indices `[N, T…]`.
///
/// `L = (1/(N·T)) Σ_{n,t} −log softmax(f_{nt})[y_{nt}]` over the `T` positions
/// of each sample (`T = 1` for logits `[N, C]`), as PyTorch's
/// `CrossEntropyLoss` with extra dimensions; for `[N, C]` the value of
/// [`candle_nn::loss::cross_entropy`]. Inside [`crate::record()`] it is the
/// loss the computations work with. Its exact GGN factor has `(C − 1)·T`
/// columns per sample; a Monte-Carlo column draws a label at every position.
///
/// Softmax and log-softmax subtract each row's maximum, so huge logits give a
/// finite loss and a Hessian that underflows to zero, never NaN; a loss that
/// still overflows is refused by the computations ([`Error::NonFinite`]).
///
/// ```
/// # use candle_core::{Device, Tensor};
/// # fn main() -> vivit::Result<()> {
/// let logits = Tensor::zeros((2, 3, 4), candle_core::DType::F64, &Device::Cpu)?;
/// let targets = Tensor::new(&[[0u32, 1, 2], [3, 0, 1]], &Device::Cpu)?;
/// let loss = vivit::loss::cross_entropy(&logits, &targets)?;
/// assert!((loss.to_scalar::<f64>()? - 4f64.ln()).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::InvalidTargets`] if the logits are not a float `[N, T…, C]` with
/// `C ≥ 2` (with one class the loss is identically zero), or the targets are
/// not integer class indices `[N, T…]` in `0..C`; [`Error::EmptyBatch`] if
/// `N = 0`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, c) = check(logits, targets)?;
    let classes = classes(targets, None, c)?;
    let loss =
        candle_nn::loss::cross_entropy(&logits.reshape((rows, c))?, &classes.flatten_all()?)?;
    remember(LossKind::CrossEntropy, logits, &classes, None, &loss);
    Ok(loss)
}

/// [`cross_entropy`] without the positions whose target is `ignore_index`
/// (padding): they contribute nothing and are left out of the mean,
/// `L = (1/|V|) Σ_{(n,t)∈V} −log softmax(f_{nt})[y_{nt}]` over the counted
/// positions `V`, as PyTorch's `CrossEntropyLoss(ignore_index=…)`.
///
/// `ignore_index` may lie outside `0..C` (PyTorch's default is `-100`, for
/// `i64` targets). The per-sample losses are `ℓ_n = (N/|V|) Σ_{t:(n,t)∈V}
/// −log softmax(f_{nt})[y_{nt}]`, so `L = (1/N) Σ_n ℓ_n`; a computation on a
/// subsampling of the batch averages over the counted positions of its samples.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// # fn main() -> vivit::Result<()> {
/// let logits = Tensor::new(&[[[2f64, 0.], [0., 0.]]], &Device::Cpu)?; // [1, 2, 2]
/// let targets = Tensor::new(&[[0i64, -100]], &Device::Cpu)?;
/// let loss = vivit::loss::cross_entropy_with_ignore(&logits, &targets, -100)?;
/// let want = (1. + (-2f64).exp()).ln(); // the first position only
/// assert!((loss.to_scalar::<f64>()? - want).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// As [`cross_entropy`] (for the counted positions), and
/// [`Error::AllPositionsIgnored`] if every target is `ignore_index`.
pub fn cross_entropy_with_ignore(
    logits: &Tensor,
    targets: &Tensor,
    ignore_index: i64,
) -> Result<Tensor> {
    let (rows, c) = check(logits, targets)?;
    let mask = targets
        .to_dtype(DType::I64)?
        .ne(ignore_index)?
        .to_dtype(logits.dtype())?;
    let count = mask.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    if count == 0.0 {
        return Err(Error::AllPositionsIgnored);
    }
    let classes = classes(targets, Some(ignore_index), c)?;
    let log_p = candle_nn::ops::log_softmax(&logits.reshape((rows, c))?, 1)?;
    let picked = log_p.gather(&classes.flatten_all()?.unsqueeze(1)?, 1)?;
    let loss = ((picked.flatten_all()? * mask.flatten_all()?)?.sum_all()? / -count)?;
    remember(LossKind::CrossEntropy, logits, &classes, Some(mask), &loss);
    Ok(loss)
}

fn invalid(reason: String) -> Error {
    Error::InvalidTargets {
        loss: "cross_entropy",
        reason,
    }
}

/// Checks the shapes and dtypes; returns the `N·T` rows and the `C` classes.
fn check(logits: &Tensor, targets: &Tensor) -> Result<(usize, usize)> {
    let dims = logits.dims();
    let c = match dims.last() {
        Some(&c) if dims.len() >= 2 && logits.dtype().is_float() && c >= 2 => c,
        _ => {
            return Err(invalid(format!(
                "logits must be a float tensor [N, T…, C] with C ≥ 2 classes, got {:?} {dims:?}",
                logits.dtype()
            )))
        }
    };
    let positions = &dims[..dims.len() - 1];
    if !targets.dtype().is_int() || targets.dims() != positions {
        return Err(invalid(format!(
            "targets must be integer class indices of shape {positions:?} (the logits {dims:?} \
             without their class axis), got {:?} {:?}",
            targets.dtype(),
            targets.dims()
        )));
    }
    if dims[0] == 0 {
        return Err(Error::EmptyBatch);
    }
    Ok((logits.elem_count() / c, c))
}

/// The targets as `u32` class indices, 0 at the positions of `ignore_index`.
///
/// # Errors
/// [`Error::InvalidTargets`] for another target outside `0..c`.
fn classes(targets: &Tensor, ignore_index: Option<i64>, c: usize) -> Result<Tensor> {
    let values = targets
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let counted = |&&t: &&i64| Some(t) != ignore_index;
    if let Some(bad) = values
        .iter()
        .filter(counted)
        .find(|&&t| t < 0 || t as usize >= c)
    {
        return Err(invalid(format!(
            "target {bad} is not a class index in 0..{c}{}",
            ignore_index.map_or(String::new(), |i| format!(" nor the ignore index {i}"))
        )));
    }
    let classes: Vec<u32> = values
        .iter()
        .map(|&t| if Some(t) == ignore_index { 0 } else { t as u32 })
        .collect();
    Ok(Tensor::from_vec(
        classes,
        targets.shape(),
        targets.device(),
    )?)
}
