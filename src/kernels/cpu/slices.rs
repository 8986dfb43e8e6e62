//! Reading the values of CPU tensors in place, for vivit's own CPU kernels.

use candle_core::{Layout, Result, Storage, WithDType};

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

/// Buffers from this size on are backed by transparent huge pages where the
/// system offers them ([`zeroed`]).
#[cfg(target_os = "linux")]
const HUGE_PAGE_BUFFER_BYTES: usize = 4 << 20;

/// `len` zeros of type `T`, as `vec![T::zero(); len]`; on Linux a buffer of
/// 4 MB or more is marked for transparent huge pages before its pages are
/// first touched (`madvise(MADV_HUGEPAGE)`), so that writing it faults once
/// per 2 MB instead of once per 4 KB page (eigenvectors in parameter space
/// are large fresh buffers). The system may decline; the contents are zeros
/// either way.
pub(crate) fn zeroed<T: WithDType>(len: usize) -> Vec<T> {
    let values = vec![T::zero(); len];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&values);
    values
}

/// `madvise(MADV_HUGEPAGE)` on the whole pages inside `values`, if it spans
/// at least [`HUGE_PAGE_BUFFER_BYTES`]; a refusal changes nothing.
#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(values: &[T]) {
    let bytes = std::mem::size_of_val(values);
    if bytes < HUGE_PAGE_BUFFER_BYTES {
        return;
    }
    // SAFETY: sysconf reads a system constant; the advised range lies inside
    // the allocation of `values` (rounded inwards to whole pages), and the
    // advice changes how its pages are backed, not their contents.
    unsafe {
        let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096);
        let start = values.as_ptr() as usize;
        let first = start.div_ceil(page) * page;
        let end = (start + bytes) / page * page;
        if end > first {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers below and above the huge-page size are zeros of the asked
    /// length, and writable throughout (the advice covers whole pages inside
    /// the allocation only).
    #[test]
    fn zeroed_buffers_are_zeros_of_their_length() {
        // f32: up to 12 MB, beyond the huge-page size
        for len in [0, 5, (1 << 20) + 3, 3 << 20] {
            let mut v = zeroed::<f32>(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
            v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
    }
}
