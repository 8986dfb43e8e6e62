//! The copies between a tensor's device and the host, where the dense
//! eigensolvers, the Cholesky factorization and the Monte-Carlo draws run,
//! and where the scalars that steer a computation are read (the loss value,
//! finiteness probes, the flags of out-of-range targets and ids): the only
//! place values move (on a GPU each read is a synchronization; on the CPU
//! there is nothing but a conversion), each counted ([`Transfers`]).
//! `tests/host_copies.rs` fails on a copy made anywhere else.

use std::cell::Cell;

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The copies of values between a tensor's device and the host: how many and
/// how many bytes (of the device-side dtype) each way. On the CPU they are
/// conversions into and out of the eigensolvers' buffers; on a GPU, copies
/// over the bus. [`crate::Timings::transfers`] gives those of a pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Tensors read to the host.
    pub to_host: usize,
    /// Their bytes.
    pub to_host_bytes: usize,
    /// Tensors made from host values.
    pub to_device: usize,
    /// Their bytes.
    pub to_device_bytes: usize,
}

impl Transfers {
    /// Those of `self` that came after `earlier` (both cumulative counts).
    pub(crate) fn since(self, earlier: Transfers) -> Transfers {
        Transfers {
            to_host: self.to_host.saturating_sub(earlier.to_host),
            to_host_bytes: self.to_host_bytes.saturating_sub(earlier.to_host_bytes),
            to_device: self.to_device.saturating_sub(earlier.to_device),
            to_device_bytes: self.to_device_bytes.saturating_sub(earlier.to_device_bytes),
        }
    }
}

thread_local! {
    /// The transfers of this thread so far.
    static MOVED: Cell<Transfers> = const { Cell::new(Transfers {
        to_host: 0,
        to_host_bytes: 0,
        to_device: 0,
        to_device_bytes: 0,
    }) };
}

/// The transfers of this thread so far (cumulative).
pub(crate) fn transfers() -> Transfers {
    MOVED.with(Cell::get)
}

/// Counts a copy of `bytes`, to the host or to the device.
fn count(to_host: bool, bytes: usize) {
    MOVED.with(|m| {
        let mut t = m.get();
        if to_host {
            (t.to_host, t.to_host_bytes) = (t.to_host + 1, t.to_host_bytes + bytes);
        } else {
            (t.to_device, t.to_device_bytes) = (t.to_device + 1, t.to_device_bytes + bytes);
        }
        m.set(t);
    })
}

/// The values of `t`, row-major, on the host as `T` (one copy, counted).
pub(crate) fn read<T: WithDType>(t: &Tensor) -> candle_core::Result<Vec<T>> {
    count(true, t.elem_count() * t.dtype().size_in_bytes());
    t.to_device(&Device::Cpu)?
        .to_dtype(T::DTYPE)?
        .flatten_all()?
        .to_vec1::<T>()
}

/// The scalar tensors `parts` (of any dtypes, on one device) as f64 on the
/// host: stacked there, then one copy (counted) for all of them.
pub(crate) fn scalars(parts: &[Tensor]) -> candle_core::Result<Vec<f64>> {
    let parts = parts
        .iter()
        .map(|p| p.to_dtype(DType::F64)?.reshape(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    read::<f64>(&Tensor::cat(&parts, 0)?)
}

/// The value of the scalar tensor `t` as an f64 on the host (one copy,
/// counted).
pub(crate) fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    Ok(scalars(std::slice::from_ref(t))?[0])
}

/// A scalar on `t`'s device, 1 if an entry of `t` is NaN or lies outside
/// `[low, high]` and 0 if none does (nor for an empty `t`):
/// `max_i [x_i < low ∨ x_i > high ∨ x_i ≠ x_i]`, reduced there, for
/// [`scalars`] to read. Integer entries compare as f64 (exact below 2⁵³).
pub(crate) fn any_outside(t: &Tensor, low: f64, high: f64) -> candle_core::Result<Tensor> {
    let x = t.flatten_all()?.to_dtype(DType::F64)?;
    if x.elem_count() == 0 {
        return Tensor::zeros((), DType::U8, t.device());
    }
    let bound = |v: f64| Tensor::full(v, (), x.device());
    x.broadcast_lt(&bound(low)?)?
        .maximum(&x.broadcast_gt(&bound(high)?)?)?
        .maximum(&x.ne(&x)?)?
        .max(0)
}

/// The values of `t`, row-major, on the host as `T`; refused (naming
/// `what`) if one is NaN or ±∞.
pub(crate) fn to_host<T: WithDType>(t: &Tensor, what: &'static str) -> Result<Vec<T>> {
    let values = read::<T>(t)?;
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
pub(crate) fn to_device<T: WithDType>(
    values: Vec<T>,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    count(false, values.len() * dtype.size_in_bytes());
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// The gather indices `index` (built on the host) as a `[len]` u32 tensor on
/// `device`, counted as a copy to the device.
pub(crate) fn indices_to_device(index: Vec<u32>, device: &Device) -> candle_core::Result<Tensor> {
    count(false, index.len() * DType::U32.size_in_bytes());
    let len = index.len();
    Tensor::from_vec(index, len, device)
}
