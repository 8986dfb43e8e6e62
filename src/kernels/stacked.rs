//! The output signals of one tracked layer call for all columns of a factor,
//! `[C_eff, N_g, …]`, filled column by column by the factor passes.
//!
//! On the CPU kernels (f32 and f64) each pass copies its signal into its slot
//! of one buffer as soon as the pass ends, on the pass's thread, the signal
//! still in cache, instead of one stacking pass over all of them afterwards.
//! On the generic path the passes keep their tensors and candle stacks them.

use candle_core::{DType, Device, Result, Shape, Tensor, WithDType};

use super::cpu::slices as cpu;
use super::cpu_kernels;

/// The signals of one layer call, `[columns, *signal]`.
#[derive(Debug)]
pub(crate) struct Stacked {
    signal: Shape,
    device: Device,
    dtype: DType,
    values: Values,
}

#[derive(Debug)]
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// On the generic kernel path: the signals themselves, `None`
    /// where a pass did not reach the call (zeros).
    Tensors(Vec<Option<Tensor>>),
}

/// Where one pass puts its signal of one layer call.
#[derive(Debug)]
pub(crate) enum Slot<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    Tensor(&'a mut Option<Tensor>, &'a Shape),
}

impl Stacked {
    /// Zeros for `columns` signals of shape `signal`, of `dtype` on `device`.
    pub fn new(columns: usize, signal: Shape, dtype: DType, device: &Device) -> Self {
        let len = columns * signal.elem_count();
        let values = match dtype {
            DType::F32 if len > 0 && cpu_kernels(device, dtype) => Values::F32(cpu::zeroed(len)),
            DType::F64 if len > 0 && cpu_kernels(device, dtype) => Values::F64(cpu::zeroed(len)),
            _ => Values::Tensors(vec![None; columns]),
        };
        Self {
            signal,
            device: device.clone(),
            dtype,
            values,
        }
    }

    /// One slot per column, in column order.
    pub fn slots(&mut self) -> Vec<Slot<'_>> {
        let Self { signal, values, .. } = self;
        let len = signal.elem_count().max(1);
        match values {
            Values::F32(v) => v.chunks_mut(len).map(Slot::F32).collect(),
            Values::F64(v) => v.chunks_mut(len).map(Slot::F64).collect(),
            Values::Tensors(t) => t.iter_mut().map(|t| Slot::Tensor(t, signal)).collect(),
        }
    }

    /// The stacked signals `[columns, *signal]`.
    pub fn into_tensor(self) -> Result<Tensor> {
        let Stacked {
            signal,
            device,
            dtype,
            values,
        } = self;
        let columns = |count: usize| {
            let mut dims = vec![count];
            dims.extend_from_slice(signal.dims());
            Shape::from(dims)
        };
        let len = signal.elem_count().max(1);
        match values {
            Values::F32(v) => {
                let shape = columns(v.len() / len);
                Tensor::from_vec(v, shape, &device)
            }
            Values::F64(v) => {
                let shape = columns(v.len() / len);
                Tensor::from_vec(v, shape, &device)
            }
            Values::Tensors(parts) => {
                let parts = parts
                    .into_iter()
                    .map(|p| match p {
                        Some(t) => Ok(t),
                        None => Tensor::zeros(&signal, dtype, &device),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::stack(&parts, 0)
            }
        }
    }
}

impl Slot<'_> {
    /// Puts `signal` (of the stacked shape) into the slot.
    pub fn fill(self, signal: &Tensor) -> Result<()> {
        match self {
            Slot::F32(dst) => copy(dst, signal),
            Slot::F64(dst) => copy(dst, signal),
            Slot::Tensor(dst, shape) => {
                if signal.elem_count() != shape.elem_count() {
                    candle_core::bail!(
                        "vivit stacked signals: a signal {:?} for a slot of {:?}",
                        signal.dims(),
                        shape.dims()
                    );
                }
                *dst = Some(signal.reshape(shape)?);
                Ok(())
            }
        }
    }
}

/// `dst ← signal`, converted to `T` where the dtypes differ.
fn copy<T: WithDType>(dst: &mut [T], signal: &Tensor) -> Result<()> {
    const OP: &str = "vivit stacked signals";
    if signal.elem_count() != dst.len() {
        candle_core::bail!(
            "{OP}: a signal {:?} for a slot of {}",
            signal.dims(),
            dst.len()
        );
    }
    let signal = signal.to_dtype(T::DTYPE)?.contiguous()?;
    let (storage, layout) = signal.storage_and_layout();
    dst.copy_from_slice(cpu::contiguous(
        cpu::values::<T>(&storage, OP)?,
        layout,
        OP,
    )?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filled slots stack like candle's `Tensor::stack`, with zeros for the
    /// columns no pass reached: in a CPU buffer (f32, f64), as tensors
    /// (bf16 stands in for other devices and dtypes), and for empty signals.
    #[test]
    fn slots_stack_like_candle() -> Result<()> {
        let dev = Device::Cpu;
        for (dtype, dims) in [
            (DType::F32, vec![2, 3]),
            (DType::F64, vec![2, 3]),
            (DType::BF16, vec![2, 3]),
            (DType::F32, vec![0, 3]),
        ] {
            let signal = Shape::from(dims);
            let a = Tensor::randn(0f32, 1., &signal, &dev)?.to_dtype(dtype)?;
            let b = Tensor::randn(0f32, 1., &signal, &dev)?.to_dtype(dtype)?;
            let mut stacked = Stacked::new(3, signal.clone(), dtype, &dev);
            let mut slots = stacked.slots().into_iter();
            let (first, _unreached, last) = (slots.next(), slots.next(), slots.next());
            assert!(slots.next().is_none(), "one slot per column");
            first.expect("slot 0").fill(&a)?;
            last.expect("slot 2").fill(&b.t()?.contiguous()?.t()?)?;
            let got = stacked.into_tensor()?;
            let want = Tensor::stack(&[&a, &a.zeros_like()?, &b], 0)?;
            assert_eq!(got.dims(), want.dims(), "{dtype:?}");
            let diff = (got.to_dtype(DType::F64)? - want.to_dtype(DType::F64)?)?;
            assert_eq!(diff.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0, "{dtype:?}");
        }
        Ok(())
    }

    /// A signal of another size is an error, not a partial copy.
    #[test]
    fn a_signal_of_another_size_is_refused() -> Result<()> {
        let dev = Device::Cpu;
        let mut stacked = Stacked::new(1, Shape::from((2, 3)), DType::F32, &dev);
        let slot = stacked.slots().pop().expect("one slot");
        assert!(slot
            .fill(&Tensor::zeros((3, 3), DType::F32, &dev)?)
            .is_err());
        Ok(())
    }
}
