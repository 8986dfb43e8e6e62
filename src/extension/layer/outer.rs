//! The factor of a layer whose weight multiplies its inputs (linear layers,
//! convolutions as patches · weights): Gram blocks and `V·x` without
//! materializing `V` where a structured product exists.
//!
//! A tracked layer (all its calls in the forward pass together) is described by
//! its inputs `A` `[N, I, T]` and its backpropagated output signals `B`
//! `[C, N, O, T]`, where `T` counts the positions a weight is applied at
//! (extra input axes of a linear layer, output pixels of a convolution, repeated
//! calls). Column `(c, n)` of the GGN factor is, for the weight and the bias,
//!
//! ```text
//! V_W[c,n] = Σ_t B[c,n,:,t] ⊗ A[n,:,t] = B[c,n] A[n]ᵀ   (an O×I matrix)
//! V_b[c,n] = Σ_t B[c,n,:,t]
//! ```
//!
//! so that the layer's Gram blocks are `V_Wᵀ V_W` and `V_bᵀ V_b` in the
//! `[C·N, C·N]` layout with index `c·N + n`.

use std::sync::OnceLock;

use candle_core::{Result, Shape, Tensor};

use super::{add, Role};
use crate::kernels::{gram, matmul, tiled_product, weight_factor_on_support, RowOrder};

/// Largest weight factor `V_W` (bytes) that is formed whole and kept for
/// `V·ẽ` ([`KEPT_FOR_PRODUCTS_BYTES`] where many products follow); larger
/// ones are formed in slices of output channels for each Gram block and not
/// kept, which bounds the memory of the Gram formation at the same speed.
const KEPT_FACTOR_BYTES: usize = 32 << 20;

/// Largest weight factor kept for many products `V·ẽ`
/// ([`OuterFactor::keep_weight_factor`]), where forming it once is cheaper
/// than a pass over the positions for every product.
const KEPT_FOR_PRODUCTS_BYTES: usize = 256 << 20;

/// A layer's per-sample factor: inputs `a` `[N, I, T]`, output signals `b` `[C, N, O, T]`.
///
/// Cloning shares the tensors (and the formed factors), copying nothing.
#[derive(Debug, Clone)]
pub(crate) struct OuterFactor {
    a: Tensor,
    b: Tensor,
    /// The weight's shape (`[O, I]` or `[O, I, k…]`).
    weight_shape: Shape,
    /// `V_W` `[C·N, O·I]`, formed once when `T > 1` and kept if small.
    weight_factor: OnceLock<Tensor>,
    /// `V_b` `[C·N, O]`, formed once.
    bias_factor: OnceLock<Tensor>,
    /// Keep `V_W` up to [`KEPT_FOR_PRODUCTS_BYTES`].
    for_products: bool,
}

impl OuterFactor {
    /// The factor of a layer with inputs `a` `[N, I, T]`, output signals `b`
    /// `[C, N, O, T]` and weight shape `weight_shape`.
    pub fn new(a: Tensor, b: Tensor, weight_shape: Shape) -> Self {
        Self {
            a,
            b,
            weight_shape,
            weight_factor: OnceLock::new(),
            bias_factor: OnceLock::new(),
            for_products: false,
        }
    }

    /// Keeps `V_W` up to [`KEPT_FOR_PRODUCTS_BYTES`], for many products
    /// `V·ẽ` (`K` eigenvectors cost `K` passes over the positions `T` without
    /// it, as much as forming `V_W` when `K ≈ C`).
    pub fn keep_weight_factor(&mut self) {
        self.for_products = true;
    }

    fn dims(&self) -> Result<(usize, usize, usize, usize, usize)> {
        let (c, n, o, t) = self.b.dims4()?;
        Ok((c, n, t, o, self.a.dim(1)?))
    }

    /// `S + Σ_{p∈roles} V_pᵀ U_p` `[C·N, C'·N']` for each factor `U` of
    /// `others` (factors of the same layer; `U = V` gives its Gram block),
    /// added to its running sum `S` of `sums` over other layers.
    ///
    /// With `T = 1`, weight and bias share `B B'ᵀ`:
    /// `(B B'ᵀ) ⊙ (A A'ᵀ + 1)` tiled over columns (`+ 1` with the bias,
    /// `A A'ᵀ` without), `O(C C' N N' O + N N' I)`; otherwise the weight factors
    /// are formed once, `[N·C, O·I]`, and multiplied (by slices of output
    /// channels `V_W[:, o₀..o₁, :]` where the whole would exceed
    /// [`KEPT_FACTOR_BYTES`]), each slice formed once for all of `others`.
    pub fn cross_grams(
        &self,
        others: &[&OuterFactor],
        roles: &[Role],
        sums: Vec<Option<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let (c, n, t, o, i) = self.dims()?;
        let has = |role: Role| roles.contains(&role);
        if t == 1 {
            let b = self.b.reshape((c * n, o))?;
            return others
                .iter()
                .zip(sums)
                .map(|(other, sum)| {
                    let (c2, n2, _, _, _) = other.dims()?;
                    let bb = if std::ptr::eq(self, *other) {
                        gram(&b)?
                    } else {
                        matmul(&b, &other.b.reshape((c2 * n2, o))?.t()?)?
                    };
                    if !has(Role::Weight) {
                        return add(sum, bb);
                    }
                    let mut aa = matmul(&self.a.reshape((n, i))?, &other.a.reshape((n2, i))?.t()?)?;
                    if has(Role::Bias) {
                        aa = (aa + 1.0)?;
                    }
                    tiled_product(&bb, &aa, sum.as_ref())
                })
                .collect();
        }
        let weights = if has(Role::Weight) {
            self.weight_blocks(others)?.into_iter().map(Some).collect()
        } else {
            vec![None; others.len()]
        };
        others
            .iter()
            .zip(sums)
            .zip(weights)
            .map(|((other, sum), weight)| {
                let bias = if has(Role::Bias) {
                    Some(matmul(self.bias_factor()?, &other.bias_factor()?.t()?)?)
                } else {
                    None
                };
                let mut total: Option<Tensor> = None;
                for block in [sum, weight, bias].into_iter().flatten() {
                    total = Some(add(total, block)?);
                }
                total.ok_or_else(|| candle_core::Error::Msg("cross_gram of no parameter".into()))
            })
            .collect()
    }

    /// `(A [N, I], B [C, N, O])` of a layer applied once per sample (`T = 1`).
    pub fn per_sample(&self) -> Result<Option<(Tensor, Tensor)>> {
        let (c, n, t, o, i) = self.dims()?;
        if t != 1 {
            return Ok(None);
        }
        Ok(Some((self.a.reshape((n, i))?, self.b.reshape((c, n, o))?)))
    }

    /// `V_b` `[C·N, O]`: `V_b[c,n] = Σ_t B[c,n,:,t]` (one product with `1_T`,
    /// formed on first use).
    fn bias_factor(&self) -> Result<&Tensor> {
        if let Some(v) = self.bias_factor.get() {
            return Ok(v);
        }
        let (c, n, t, o, _) = self.dims()?;
        let b = self.b.reshape((c * n * o, t))?;
        let v = if t == 1 {
            b
        } else {
            matmul(&b, &Tensor::ones((t, 1), b.dtype(), b.device())?)?
        }
        .reshape((c * n, o))?;
        Ok(self.bias_factor.get_or_init(|| v))
    }

    /// `V_W U_Wᵀ` `[C·N, C'·N']` for each factor `U` of `others`, from the
    /// kept factors or, for large ones, summed over slices of output channels
    /// (each slice of `V_W` formed once).
    fn weight_blocks(&self, others: &[&OuterFactor]) -> Result<Vec<Tensor>> {
        if let Some(v) = self.weight_factor()? {
            let kept: Option<Vec<&Tensor>> = others
                .iter()
                .map(|u| u.weight_factor())
                .collect::<Result<_>>()?;
            if let Some(kept) = kept {
                return others
                    .iter()
                    .zip(kept)
                    .map(|(other, u)| {
                        if std::ptr::eq(self, *other) {
                            gram(v)
                        } else {
                            matmul(v, &u.t()?)
                        }
                    })
                    .collect();
            }
        }
        let (c, n, _, _, i) = self.dims()?;
        let row_bytes = c * n * i * self.b.dtype().size_in_bytes();
        self.weight_blocks_in_slices(others, (KEPT_FACTOR_BYTES / row_bytes.max(1)).max(1))
    }

    /// `V_W U_Wᵀ` `[C·N, C'·N']` for each `U` of `others`, as the sums over
    /// slices of `slice` output channels, each formed sample-major
    /// ([`Self::weight_factor_slice_by_sample`]), the sums brought to the
    /// class-major order at the end.
    fn weight_blocks_in_slices(
        &self,
        others: &[&OuterFactor],
        slice: usize,
    ) -> Result<Vec<Tensor>> {
        let o = self.b.dim(2)?;
        let mut sums: Vec<Option<Tensor>> = vec![None; others.len()];
        for start in (0..o).step_by(slice) {
            let len = slice.min(o - start);
            let v = self.weight_factor_slice_by_sample(start, len)?;
            for (other, sum) in others.iter().zip(&mut sums) {
                let block = if std::ptr::eq(self, *other) {
                    gram(&v)?
                } else {
                    matmul(&v, &other.weight_factor_slice_by_sample(start, len)?.t()?)?
                };
                *sum = Some(add(sum.take(), block)?);
            }
        }
        let ((c, n, ..), o_dims) = (self.dims()?, others.iter().map(|u| u.dims()));
        sums.into_iter()
            .zip(o_dims)
            .map(|(s, other)| {
                let s = s.ok_or_else(|| {
                    candle_core::Error::Msg("weight block of no output channel".into())
                })?;
                let (c2, n2, ..) = other?;
                // rows (n, c) → (c, n), columns (n', c') → (c', n')
                s.reshape((n, c, n2, c2))?
                    .permute((1, 0, 3, 2))?
                    .contiguous()?
                    .reshape((c * n, c2 * n2))
            })
            .collect()
    }

    /// Output channels `start..start + len` of `V_W` with sample-major rows,
    /// `[N·C, len·I]` (row `n·C + c` is `V_W[c,n]`): on the support of the
    /// signals where most are zero ([`weight_factor_on_support`]), else one
    /// product per sample
    /// `[C·len, T] × [T, I]`, the `C` columns of a sample together: taller
    /// products than one per column and sample, for a transposed copy of the
    /// slice of `B`, cheap next to the product where `I` is large (a sliced
    /// factor's layer).
    fn weight_factor_slice_by_sample(&self, start: usize, len: usize) -> Result<Tensor> {
        if let Some(v) =
            weight_factor_on_support(&self.a, &self.b, start, len, RowOrder::SampleMajor)?
        {
            return Ok(v);
        }
        let (c, n, t, _, i) = self.dims()?;
        let b = self
            .b
            .narrow(2, start, len)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, c * len, t))?;
        matmul(&b, &self.a.transpose(1, 2)?)?.reshape((n * c, len * i))
    }

    /// `V_W` `[C·N, O·I]`, formed on first use, if it takes at most
    /// [`KEPT_FACTOR_BYTES`] ([`KEPT_FOR_PRODUCTS_BYTES`] if marked).
    fn weight_factor(&self) -> Result<Option<&Tensor>> {
        if let Some(v) = self.weight_factor.get() {
            return Ok(Some(v));
        }
        let (c, n, _, o, i) = self.dims()?;
        let limit = if self.for_products {
            KEPT_FOR_PRODUCTS_BYTES
        } else {
            KEPT_FACTOR_BYTES
        };
        if c * n * o * i * self.b.dtype().size_in_bytes() > limit {
            return Ok(None);
        }
        let v = self.weight_factor_slice(0, o)?;
        Ok(Some(self.weight_factor.get_or_init(|| v)))
    }

    /// Output channels `start..start + len` of `V_W`, `[C·N, len·I]`:
    /// `V_W[c,n] = B[c,n] A[n]ᵀ`, on the support of the signals where most
    /// are zero ([`weight_factor_on_support`]), else one batched matmul over
    /// `(c, n)` that reads `B` and `A` in place.
    fn weight_factor_slice(&self, start: usize, len: usize) -> Result<Tensor> {
        if let Some(v) =
            weight_factor_on_support(&self.a, &self.b, start, len, RowOrder::ClassMajor)?
        {
            return Ok(v);
        }
        let (c, n, _, _, i) = self.dims()?;
        let b = self.b.narrow(2, start, len)?; // [C, N, len, T]
        matmul(&b, &self.a.transpose(1, 2)?)?.reshape((c * n, len * i))
    }

    /// `V_pᵀ x` `[C·N]` for `x` shaped as the parameter `p` (a leading 1 allowed):
    ///
    /// ```text
    /// (V_Wᵀ X)[c,n] = Σ_t B[c,n,:,t]ᵀ X A[n,:,t],   (V_bᵀ x)[c,n] = V_b[c,n]ᵀ x,
    /// ```
    ///
    /// `X` `[O, I]`: one product `X A` `[O, N·T]` and a contraction with `B`
    /// (`O·I·N·T + C·N·O·T` multiply-adds, against `C·N·N'·(O+I)` for the
    /// cross Gram block with a factor of `N'` per-sample gradients).
    pub fn transpose_apply(&self, role: Role, x: &Tensor) -> Result<Tensor> {
        let (c, n, t, o, i) = self.dims()?;
        if role == Role::Bias {
            return matmul(self.bias_factor()?, &x.reshape((o, 1))?)?.reshape(c * n);
        }
        let x = x.reshape((o, i))?;
        let xa = if t == 1 {
            matmul(&self.a.reshape((n, i))?, &x.t()?)?.unsqueeze(2)? // [N, O, 1]
        } else {
            let a = self.a.transpose(0, 1)?.contiguous()?.reshape((i, n * t))?;
            matmul(&x, &a)?.reshape((o, n, t))?.transpose(0, 1)? // [N, O, T]
        };
        self.b
            .broadcast_mul(&xa.unsqueeze(0)?)?
            .sum((2, 3))?
            .reshape(c * n)
    }

    /// `V_p · E` for Gram-space vectors `e` `[K, C·N]`: `[K, *p.shape]`.
    ///
    /// Bias: `e · V_b` (one gemm). Weight, with
    /// `W[n,k,:,t] = Σ_c e[k,c,n] B[c,n,:,t]`:
    /// `Σ_{n,t} W[n,k,:,t] ⊗ A[n,:,t]` (one gemm `[K·O, N·T] × [N·T, I]`)
    /// when `T = 1` or `V_W` is too large to keep, else `e · V_W` with the kept
    /// factor (`C ≪ T` columns instead of `T` positions per sample).
    pub fn apply(&self, role: Role, e: &Tensor) -> Result<Tensor> {
        let (c, n, t, o, i) = self.dims()?;
        let k = e.dim(0)?;
        if role == Role::Bias {
            return matmul(e, self.bias_factor()?); // [K, O]
        }
        let mut shape = vec![k];
        shape.extend_from_slice(self.weight_shape.dims());
        if t > 1 {
            if let Some(factor) = self.weight_factor()? {
                return matmul(e, factor)?.reshape(shape);
            }
        }
        // W[n] = ẽ[:, :, n] B[:, n] (B read in place), then [K·O, N·T] × [N·T, I]
        let e = e.reshape((k, c, n))?.permute((2, 0, 1))?; // [N, K, C]
        let b = self.b.reshape((c, n, o * t))?.transpose(0, 1)?; // [N, C, O·T]
        let w = matmul(&e, &b)?; // [N, K, O·T]
        if t == 1 {
            // [K·O, N] is W's transpose as it lies: no permuted copy
            let w = w.reshape((n, k * o))?.t()?;
            return matmul(&w, &self.a.reshape((n, i))?)?.reshape(shape);
        }
        let w = w
            .reshape((n, k, o, t))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((k * o, n * t))?;
        let a = self.a.transpose(1, 2)?.contiguous()?.reshape((n * t, i))?;
        matmul(&w, &a)?.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The Gram and cross blocks summed over slices of output channels equal
    /// the products of the whole factors.
    #[test]
    fn sliced_weight_blocks_equal_the_whole_products() -> Result<()> {
        let dev = Device::Cpu;
        let (n, i, t, o) = (3, 4, 5, 7);
        let factor = |c: usize| -> Result<OuterFactor> {
            Ok(OuterFactor::new(
                Tensor::randn(0f64, 1., (n, i, t), &dev)?,
                Tensor::randn(0f64, 1., (c, n, o, t), &dev)?,
                Shape::from((o, i)),
            ))
        };
        let (v, u) = (factor(2)?, factor(1)?);
        let (whole_v, whole_u) = (v.weight_factor_slice(0, o)?, u.weight_factor_slice(0, o)?);
        for slice in [1, 3, o] {
            let blocks = v.weight_blocks_in_slices(&[&v, &u], slice)?;
            let want = [
                whole_v.matmul(&whole_v.t()?)?,
                whole_v.matmul(&whole_u.t()?)?,
            ];
            assert_eq!(blocks.len(), 2);
            for (got, want) in blocks.into_iter().zip(want) {
                let diff = (got - want)?.abs()?.flatten_all()?.max(0)?;
                assert!(
                    diff.to_dtype(DType::F64)?.to_scalar::<f64>()? < 1e-10,
                    "slice {slice}"
                );
            }
        }
        Ok(())
    }
}
