//! The Gram block of a layer applied once per sample, `(B B'ᵀ) ⊙ (A A'ᵀ + 1)`,
//! as one parallel pass.

use candle_core::{DType, Device, Layout, Result, Storage, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu;

/// `P ⊙ (1 ⊗ M) + S` `[C·N, C'·N']` for `p` `[C·N, C'·N']`, `m` `[N, N']` and
/// an optional `s` like `p`:
///
/// ```text
/// out[c·N + n, c'·N' + n'] = P[c·N + n, c'·N' + n'] · M[n, n'] + S[c·N + n, c'·N' + n']
/// ```
///
/// (`M` tiled over the `C × C'` blocks). On the CPU one pass over `P` on all
/// threads; candle's broadcast product and sum would take three passes and
/// two more `[C·N, C'·N']` tensors, on one thread (at `C = 100`, `N = 64`,
/// 40 M entries per layer).
pub(crate) fn tiled_product(p: &Tensor, m: &Tensor, s: Option<&Tensor>) -> Result<Tensor> {
    let (rows, cols) = p.dims2()?;
    let (n, n2) = m.dims2()?;
    let fast = matches!(p.device(), Device::Cpu)
        && n > 0
        && n2 > 0
        && rows % n == 0
        && cols % n2 == 0
        && m.dtype() == p.dtype()
        && s.is_none_or(|s| s.dtype() == p.dtype() && s.dims() == p.dims());
    if fast {
        match p.dtype() {
            DType::F32 => return fused::<f32>(p, m, s),
            DType::F64 => return fused::<f64>(p, m, s),
            _ => {}
        }
    }
    let block = p
        .reshape((rows / n.max(1), n, cols / n2.max(1), n2))?
        .broadcast_mul(&m.reshape((1, n, 1, n2))?)?
        .reshape((rows, cols))?;
    match s {
        Some(s) => s + block,
        None => Ok(block),
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
