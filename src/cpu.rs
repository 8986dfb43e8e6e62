//! Reading the values of CPU tensors in place, for vivit's own CPU kernels.

use candle_core::{Result, Storage, WithDType};

/// All values of a CPU `storage` of dtype `T` (to be indexed with the
/// tensor's layout); an error naming `op` for other devices and dtypes.
pub(crate) fn values<'s, T: WithDType>(storage: &'s Storage, op: &str) -> Result<&'s [T]> {
    match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<T>(),
        _ => candle_core::bail!("{op}: CPU storage expected"),
    }
}
