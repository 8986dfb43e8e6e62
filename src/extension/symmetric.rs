//! `V Vᵀ` for the Gram matrix, computing each symmetric pair of blocks once.

use candle_core::{Result, Tensor};

use crate::linalg::matmul;

/// Below this many rows, `V Vᵀ` is one product.
const DIRECT: usize = 192;
/// Below this many columns too: for short rows the copies of the halving cost
/// more than the flops they save (measured on the `C = 100` mnist_mlp Gram,
/// rows of 1000 and 500: 3.1 s for its formation with one product per layer,
/// 4.0 s with halving).
const HALVE_MIN_COLUMNS: usize = 1024;

/// `V Vᵀ` `[m, m]` of `v` `[m, k]` by recursive halving,
///
/// ```text
/// [V₁; V₂] [V₁; V₂]ᵀ = [[V₁V₁ᵀ, (V₂V₁ᵀ)ᵀ], [V₂V₁ᵀ, V₂V₂ᵀ]],
/// ```
///
/// so that about half of the `2 m² k` flops of the plain product remain.
pub(crate) fn gram(v: &Tensor) -> Result<Tensor> {
    let (m, k) = v.dims2()?;
    if m < DIRECT || k < HALVE_MIN_COLUMNS {
        return matmul(v, &v.t()?);
    }
    let half = m / 2;
    let (top, bottom) = (v.narrow(0, 0, half)?, v.narrow(0, half, m - half)?);
    let cross = matmul(&bottom, &top.t()?)?; // [m − half, half]
    let upper = Tensor::cat(&[gram(&top)?, cross.t()?], 1)?;
    let lower = Tensor::cat(&[cross, gram(&bottom)?], 1)?;
    Tensor::cat(&[upper, lower], 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Equal to the plain product (f64 round-off) for sizes around the cut-offs.
    #[test]
    fn gram_equals_the_plain_product() -> Result<()> {
        for m in [1, DIRECT - 1, DIRECT, 2 * DIRECT + 1, 5 * DIRECT + 3] {
            let v = Tensor::randn(0f64, 1., (m, HALVE_MIN_COLUMNS + 5), &Device::Cpu)?;
            let want = v.matmul(&v.t()?)?;
            let diff = (gram(&v)? - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "m = {m}: {diff}");
        }
        Ok(())
    }
}
