//! A group's Gram matrix as an operator, `Z ↦ G̃ Z`, for the partial
//! eigensolver: the Gram matrix itself is never formed for the layers applied
//! once per sample.
//!
//! A layer with inputs `a_n` `[I]` and output signals `b_{cn}` `[O]` (`T = 1`)
//! has the Gram block `G̃_l[(c,n), (c',n')] = (b_{cn}·b_{c'n'}) K_{nn'}` with
//! `K = A Aᵀ + 1` (weight and bias; `A Aᵀ` or `1` for one of them), so that
//!
//! ```text
//! (G̃_l z)[c, n] = b_{cn} · Σ_{n'} K_{nn'} w_{n'},    w_{n'} = Σ_{c'} z[c', n'] b_{c'n'},
//! ```
//!
//! `(4 C N + 2 N²) O` flops per vector instead of `(C N)² O` to form the block
//! (its lower triangle) and `2 (C N)²` per vector to multiply by it. With the
//! few hundred vectors a solve takes, that pays for many columns `C` per
//! sample: at `C = 100`, `N = 64` (mnist_mlp) a product with 32 vectors is
//! about 1.8 GFLOP against the 65 GFLOP that form the 6336² Gram matrix; at
//! `C = 10`, `N = 256` the structured products would cost 20× the formation.
//! Other layers (the cheaper way to form, and those applied at several
//! positions, `T > 1`, such as convolutions) keep their formed blocks, summed
//! into one dense part.
//!
//! Structured products run in f64 on f64 copies of the factors (exact copies
//! of an f32 model's); the dense part holds the formed blocks, in the model's
//! dtype, multiplied in f64.

use candle_core::{DType, Tensor};

use super::layer::{add, LayerFactor, Role};
use crate::error::Result;
use crate::kernels::matmul;

/// Vectors a partial solve is taken to multiply (products × block size, about
/// 10–40 × 8–32), for choosing between structured products and a formed block.
const SOLVE_VECTORS: usize = 400;

/// `T = 1` layer: `K` `[N, N]` and the signals `B` `[N, C, O]`, f64.
struct PerSample {
    kernel: Tensor,
    signals: Tensor,
}

/// `G̃ = Σ_l G̃_l` of a group as an operator on f64 vectors.
pub(crate) struct GramOperator {
    /// `(C, N)` of the factor (Gram rows `C·N`).
    shape: (usize, usize),
    per_sample: Vec<PerSample>,
    /// The summed blocks of the other layers, f64 `[C·N, C·N]`.
    dense: Option<Tensor>,
}

impl GramOperator {
    /// The operator of the layers `layers` (a factor and the roles of the
    /// group's parameters in it), all of one factor with `c` columns on `n`
    /// samples.
    pub fn new(layers: &[(&LayerFactor, Vec<Role>)], c: usize, n: usize) -> Result<Self> {
        // structured products pay when SOLVE_VECTORS (4CN + 2N²) O < (CN)² O
        let structured = SOLVE_VECTORS * (4 * c * n + 2 * n * n) < (c * n) * (c * n);
        Self::build(layers, c, n, structured)
    }

    /// [`Self::new`] with the per-sample layers' products `structured` or
    /// from their formed blocks.
    fn build(
        layers: &[(&LayerFactor, Vec<Role>)],
        c: usize,
        n: usize,
        structured: bool,
    ) -> Result<Self> {
        let mut per_sample = Vec::new();
        let mut dense: Option<Tensor> = None;
        for (factor, roles) in layers {
            match factor.per_sample()?.filter(|_| structured) {
                Some((a, b)) => {
                    let a = a.to_dtype(DType::F64)?;
                    let mut kernel = if roles.contains(&Role::Weight) {
                        matmul(&a, &a.t()?)?
                    } else {
                        Tensor::zeros((n, n), DType::F64, a.device())?
                    };
                    if roles.contains(&Role::Bias) {
                        kernel = (kernel + 1.0)?;
                    }
                    let signals = b.to_dtype(DType::F64)?.transpose(0, 1)?.contiguous()?;
                    per_sample.push(PerSample { kernel, signals });
                }
                None => dense = Some(factor.cross_gram(factor, roles, dense)?),
            }
        }
        Ok(Self {
            shape: (c, n),
            per_sample,
            dense: dense.map(|d| d.to_dtype(DType::F64)).transpose()?,
        })
    }

    /// `(G̃ Zᵀ)ᵀ` `[K, C·N]` for the f64 vectors `z` `[K, C·N]` (rows).
    pub fn apply(&self, z: &Tensor) -> Result<Tensor> {
        let k = z.dim(0)?;
        let (c, n) = self.shape;
        // z[k, c, n] → [N, K, C]
        let zt = z.reshape((k, c, n))?.permute((2, 0, 1))?.contiguous()?;
        let mut sum: Option<Tensor> = None;
        for layer in &self.per_sample {
            let o = layer.signals.dim(2)?;
            let w = matmul(&zt, &layer.signals)?; // [N, K, O]: w_n
            let w = matmul(&layer.kernel, &w.reshape((n, k * o))?)?; // Σ_n' K_nn' w_n'
            let out = matmul(&w.reshape((n, k, o))?, &layer.signals.transpose(1, 2)?)?; // [N, K, C]
            sum = Some(add(sum, out)?);
        }
        let mut out = match sum {
            Some(sum) => sum.permute((1, 2, 0))?.contiguous()?.reshape((k, c * n))?,
            None => Tensor::zeros((k, c * n), DType::F64, z.device())?,
        };
        if let Some(dense) = &self.dense {
            // the dense part is symmetric: rows z G̃ = (G̃ zᵀ)ᵀ
            out = (out + matmul(z, dense)?)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layer::OuterFactor;
    use super::*;
    use candle_core::{Device, Shape};

    /// Structured products equal the products with the formed Gram matrix,
    /// for weight and bias, weight only and bias only, beside a layer applied
    /// at several positions (always formed).
    #[test]
    fn structured_products_equal_the_formed_gram() -> Result<()> {
        let dev = Device::Cpu;
        let (c, n) = (3, 4);
        let factor = |i: usize, o: usize, t: usize| -> Result<LayerFactor> {
            Ok(LayerFactor::Outer(OuterFactor::new(
                Tensor::randn(0f64, 1., (n, i, t), &dev)?,
                Tensor::randn(0f64, 1., (c, n, o, t), &dev)?,
                Shape::from((o, i)),
            )))
        };
        let (dense, wide, conv) = (factor(5, 6, 1)?, factor(7, 2, 1)?, factor(3, 4, 5)?);
        let both = vec![Role::Weight, Role::Bias];
        let layers = [
            (&dense, both.clone()),
            (&wide, vec![Role::Weight]),
            (&conv, both.clone()),
        ];
        let z = Tensor::randn(0f64, 1., (2, c * n), &dev)?;
        for layers in [&layers[..], &[(&wide, vec![Role::Bias])][..]] {
            let formed = GramOperator::build(layers, c, n, false)?;
            let structured = GramOperator::build(layers, c, n, true)?;
            assert!(formed.per_sample.is_empty() && !structured.per_sample.is_empty());
            let diff = (structured.apply(&z)? - formed.apply(&z)?)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f64>()?;
            assert!(diff < 1e-10, "{diff}");
        }
        Ok(())
    }
}
