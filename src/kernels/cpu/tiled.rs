//! The Gram block of a layer applied once per sample, `(B B'ᵀ) ⊙ (A A'ᵀ + 1)`,
//! as one parallel pass.

use candle_core::{DType, Device, Layout, Result, Storage, Tensor, WithDType};
use rayon::prelude::*;

use super::slices as cpu;

/// Whether [`tiled_product`] takes `p`, `m` and `s`: `m` tiles `p`
/// exactly, and the three share a dtype (and `s` the shape of `p`).
pub(crate) fn tiles(p: &Tensor, m: &Tensor, s: Option<&Tensor>) -> Result<bool> {
    let (rows, cols) = p.dims2()?;
    let (n, n2) = m.dims2()?;
    Ok(n > 0
        && n2 > 0
        && rows % n == 0
        && cols % n2 == 0
        && m.dtype() == p.dtype()
        && s.is_none_or(|s| s.dtype() == p.dtype() && s.dims() == p.dims()))
}

/// [`crate::kernels::tiled_product`] of CPU f32 or f64 operands that
/// [`tiles`], in one pass over `P` on all threads (candle's broadcast product
/// and sum would take three passes and two more `[C·N, C'·N']` tensors).
pub(crate) fn tiled_product(p: &Tensor, m: &Tensor, s: Option<&Tensor>) -> Result<Tensor> {
    match p.dtype() {
        DType::F32 => fused::<f32>(p, m, s),
        DType::F64 => fused::<f64>(p, m, s),
        other => candle_core::bail!("{OP}: f32 or f64 operands expected, not {other:?}"),
    }
}

/// The op's name in errors.
const OP: &str = "vivit tiled product";

fn fused<T: WithDType>(p: &Tensor, m: &Tensor, s: Option<&Tensor>) -> Result<Tensor> {
    let (rows, cols) = p.dims2()?;
    let (n, n2) = m.dims2()?;
    let p = p.contiguous()?;
    let m = m.contiguous()?;
    let s = s.map(Tensor::contiguous).transpose()?;
    let (p_storage, p_layout) = p.storage_and_layout();
    let (m_storage, m_layout) = m.storage_and_layout();
    let s_storage = s.as_ref().map(|s| s.storage_and_layout());
    fn values<'s, T: WithDType>(storage: &'s Storage, layout: &Layout) -> Result<&'s [T]> {
        cpu::contiguous(cpu::values::<T>(storage, OP)?, layout, OP)
    }
    let pv = values::<T>(&p_storage, p_layout)?;
    let mv = values::<T>(&m_storage, m_layout)?;
    let sv = match &s_storage {
        Some((storage, layout)) => Some(values::<T>(storage, layout)?),
        None => None,
    };
    let mut out = vec![T::zero(); rows * cols];
    if cols > 0 {
        out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let (p_row, m_row) = (&pv[r * cols..][..cols], &mv[(r % n) * n2..][..n2]);
            let s_row = sv.map(|sv| &sv[r * cols..][..cols]);
            for (j, (o, p)) in row.chunks_mut(n2).zip(p_row.chunks(n2)).enumerate() {
                for ((o, &p), &m) in o.iter_mut().zip(p).zip(m_row) {
                    *o = p * m;
                }
                if let Some(s_row) = s_row {
                    for (o, &s) in o.iter_mut().zip(&s_row[j * n2..]) {
                        *o += s;
                    }
                }
            }
        });
    }
    Tensor::from_vec(out, (rows, cols), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to candle's broadcast product and sum, f32 and f64, with and
    /// without the summand.
    #[test]
    fn equals_candles_broadcast_product() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let p = Tensor::randn(0f64, 1., (3 * 4, 2 * 5), &dev)?.to_dtype(dtype)?;
            let m = Tensor::randn(0f64, 1., (4, 5), &dev)?.to_dtype(dtype)?;
            let s = Tensor::randn(0f64, 1., (12, 10), &dev)?.to_dtype(dtype)?;
            let product = p
                .reshape((3, 4, 2, 5))?
                .broadcast_mul(&m.reshape((1, 4, 1, 5))?)?
                .reshape((12, 10))?;
            for (got, want) in [
                (tiled_product(&p, &m, None)?, product.clone()),
                (tiled_product(&p, &m, Some(&s))?, (&product + &s)?),
                (tiled_product(&p.t()?.t()?, &m, Some(&s))?, (&product + &s)?),
            ] {
                let diff = (got - want)?.abs()?.flatten_all()?.max(0)?;
                assert!(diff.to_dtype(DType::F64)?.to_scalar::<f64>()? < 1e-6);
            }
        }
        Ok(())
    }
}
