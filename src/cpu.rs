//! Reading the values of CPU tensors in place, for vivit's own CPU kernels.

use candle_core::{Layout, Result, Storage, Tensor, WithDType};

/// All values of a CPU `storage` of dtype `T` (to be indexed with the
/// tensor's layout); an error naming `op` for other devices and dtypes.
pub(crate) fn values<'s, T: WithDType>(storage: &'s Storage, op: &str) -> Result<&'s [T]> {
    match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<T>(),
        _ => candle_core::bail!("{op}: CPU storage expected"),
    }
}

/// The part of a CPU op's input `values` that its contiguous `layout`
/// describes (the vivit CPU ops run on contiguous inputs only).
pub(crate) fn contiguous<'s, T>(values: &'s [T], layout: &Layout, op: &str) -> Result<&'s [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => candle_core::bail!("{op}: contiguous input expected"),
    }
}

/// `sum + block`, or `block` where there is no sum yet: the running sums of
/// Gram blocks over layers, parameters and slices.
pub(crate) fn add(sum: Option<Tensor>, block: Tensor) -> Result<Tensor> {
    match sum {
        Some(sum) => sum + block,
        None => Ok(block),
    }
}
