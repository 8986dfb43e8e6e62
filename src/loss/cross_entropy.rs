//! Softmax cross-entropy over the last axis, at every position.

use candle_core::{DType, Tensor};

use super::remember;
use crate::error::{Error, Result};
use crate::linalg::host;
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
    let classes = classes(targets, None, c)?.indices;
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
    let Classes {
        indices: classes,
        counted,
        count,
    } = classes(targets, Some(ignore_index), c)?;
    let mask = counted
        .ok_or(Error::AllPositionsIgnored)?
        .to_dtype(logits.dtype())?;
    let log_p = candle_nn::ops::log_softmax(&logits.reshape((rows, c))?, 1)?;
    let picked = log_p.gather(&classes.flatten_all()?.unsqueeze(1)?, 1)?;
    let loss = ((picked.flatten_all()? * mask.flatten_all()?)?.sum_all()? / -(count as f64))?;
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

/// The targets of the counted positions, on the targets' device.
struct Classes {
    /// The class indices `u32`, 0 at the positions of `ignore_index`.
    indices: Tensor,
    /// `1` at the counted positions, `0` at the ignored ones (`u8`), with
    /// an `ignore_index`.
    counted: Option<Tensor>,
    /// How many positions are counted.
    count: usize,
}

/// The targets as [`Classes`], computed on their device; the host reads
/// one flag (a target outside `0..c`) and, with an `ignore_index`, the
/// count: one copy of two scalars per call.
///
/// # Errors
/// [`Error::AllPositionsIgnored`] if every target is `ignore_index`;
/// [`Error::InvalidTargets`] for another target outside `0..c`, named.
fn classes(targets: &Tensor, ignore_index: Option<i64>, c: usize) -> Result<Classes> {
    let t = targets.to_dtype(DType::I64)?;
    let (indices, counted) = match ignore_index {
        Some(i) => {
            let counted = t.ne(&Tensor::full(i, t.shape(), t.device())?)?;
            (counted.where_cond(&t, &t.zeros_like()?)?, Some(counted))
        }
        None => (t, None),
    };
    let mut flags = vec![host::any_outside(&indices, 0.0, c as f64 - 1.0)?];
    if let Some(counted) = &counted {
        flags.push(counted.to_dtype(DType::F64)?.sum_all()?);
    }
    let read = host::scalars(&flags)?;
    let count = read.get(1).map_or(targets.elem_count(), |&k| k as usize);
    if count == 0 {
        return Err(Error::AllPositionsIgnored);
    }
    if read[0] > 0.0 {
        return Err(invalid_target(targets, ignore_index, c)?);
    }
    Ok(Classes {
        indices: indices.to_dtype(DType::U32)?,
        counted,
        count,
    })
}

/// The error naming the first target outside `0..c` (other than
/// `ignore_index`): the fault path, which reads the targets.
fn invalid_target(targets: &Tensor, ignore_index: Option<i64>, c: usize) -> Result<Error> {
    let values = host::read::<i64>(targets)?;
    let bad = values
        .iter()
        .filter(|&&t| Some(t) != ignore_index)
        .find(|&&t| t < 0 || t as usize >= c)
        .map_or_else(|| "a target".to_string(), |t| format!("target {t}"));
    Ok(invalid(format!(
        "{bad} is not a class index in 0..{c}{}",
        ignore_index.map_or(String::new(), |i| format!(" nor the ignore index {i}"))
    )))
}
