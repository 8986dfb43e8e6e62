//! The copies between a tensor's device and the host, where the dense
//! eigensolvers and the Cholesky factorization run: the only place the
//! linear algebra moves values (a copy each way per solve on a GPU, none but
//! a conversion on the CPU).

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The values of `t`, row-major, on the host as `T`; refused (naming
/// `what`) if one is NaN or ±∞.
pub(super) fn to_host<T: WithDType>(t: &Tensor, what: &'static str) -> Result<Vec<T>> {
    let values = t
        .to_device(&Device::Cpu)?
        .to_dtype(T::DTYPE)?
        .flatten_all()?
        .to_vec1::<T>()?;
    match values
        .par_iter()
        .map(|v| v.to_f64())
        .find_first(|v| !v.is_finite())
    {
        Some(value) => Err(Error::NonFinite { what, value }),
        None => Ok(values),
    }
}

/// The row-major `values` of `shape` as a tensor of `dtype` on `device`
/// (converted on the host, then copied).
pub(super) fn to_device<T: WithDType>(
    values: Vec<T>,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}
