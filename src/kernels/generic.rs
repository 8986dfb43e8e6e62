//! The generic path: vivit's kernels as compositions of candle ops, with
//! candle's backward, right on every device and dtype candle supports (the
//! path CUDA takes; `VIVIT_KERNELS=generic` tests it on the CPU).

use candle_core::{Result, Tensor};

use super::Windows;

/// [`super::tiled_product`] by a broadcast product and a sum.
pub(super) fn tiled_product(p: &Tensor, m: &Tensor, s: Option<&Tensor>) -> Result<Tensor> {
    let (rows, cols) = p.dims2()?;
    let (n, n2) = m.dims2()?;
    let block = p
        .reshape((rows / n.max(1), n, cols / n2.max(1), n2))?
        .broadcast_mul(&m.reshape((1, n, 1, n2))?)?
        .reshape((rows, cols))?;
    match s {
        Some(s) => s + block,
        None => Ok(block),
    }
}

/// [`super::matmul`] by candle's product, on operands laid out as cuBLAS
/// takes them (see [`gemm_operand`]).
pub(super) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    gemm_operand(a)?.broadcast_matmul(&gemm_operand(b)?)
}

/// `t` as it lies where candle's CUDA product takes that layout, else a
/// contiguous copy. Candle's CUDA (and Metal) gemm takes an operand
/// `[…, r, c]` with strides `(…, s_r, s_c)` only as a dense row-major
/// (`s_c = 1`, `s_r = c`) or column-major (`s_c = r`, `s_r = 1`) matrix, a
/// size-1 axis taking any stride, and two batch axes `(b₀, b₁)` only where
/// `s_{b₀} = s_{b₁}·b₁` or one of them has size 1. The CPU product takes
/// any strides, so without this a permuted view that runs on the CPU fails
/// on a GPU (`MatMulNonContiguous`); `scripts/cuda-layout-audit.sh` checks
/// the generic path against that rule.
fn gemm_operand(t: &Tensor) -> Result<Tensor> {
    let (dims, strides) = (t.dims(), t.stride());
    let rank = dims.len();
    if rank < 2 {
        return Ok(t.clone());
    }
    let (r, c) = (dims[rank - 2], dims[rank - 1]);
    let (s_r, s_c) = (strides[rank - 2], strides[rank - 1]);
    let row_major = (s_c == 1 || c == 1) && (s_r == c || r == 1);
    let column_major = (s_c == r || c == 1) && (s_r == 1 || r == 1);
    let batch = match (&dims[..rank - 2], &strides[..rank - 2]) {
        ([b0, b1], [s0, s1]) => *s0 == s1 * b1 || *b0 == 1 || *b1 == 1,
        (batch, _) => batch.len() < 2,
    };
    if (row_major || column_major) && batch {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// `x` `[N, C, H, W]` padded with `−∞` by `((top, bottom), (left, right))`.
fn pad_neg_inf(
    x: &Tensor,
    ((top, bottom), (left, right)): ((usize, usize), (usize, usize)),
) -> Result<Tensor> {
    let pad = |x: Tensor, dim: usize, before: usize, after: usize| -> Result<Tensor> {
        let border = |count: usize| -> Result<Tensor> {
            let mut dims = x.dims().to_vec();
            dims[dim] = count;
            Tensor::full(f32::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())
        };
        let mut parts = Vec::new();
        if before > 0 {
            parts.push(border(before)?);
        }
        parts.push(x.clone());
        if after > 0 {
            parts.push(border(after)?);
        }
        Tensor::cat(&parts, dim)
    };
    pad(pad(x.clone(), 2, top, bottom)?, 3, left, right)
}

/// [`super::max_pool2d`] by a gather: the windows of the `−∞`-padded input
/// `X̂` as `[N, C, H_out·W_out, k_h·k_w]`, their first maximum
/// `a = argmax` (no backward), and `y = gather(windows, a)`, whose backward
/// (a scatter-add into the gathered windows, then an index-add into `x`)
/// sends each window's gradient to its first maximum, summed where windows
/// overlap. (Candle 0.10's own `max_pool2d` backward scales the gradient by
/// `1/(k_h·k_w)` and has none for overlapping windows.)
pub(super) fn max_pool2d(x: &Tensor, windows: Windows) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let ((_, _), (left, right)) = windows.padding;
    let wp = w + left + right;
    let (ho, wo) = windows.output((h, w));
    let ((kh, kw), (sh, sw)) = (windows.kernel, windows.stride);
    let mut index = Vec::with_capacity(ho * wo * kh * kw);
    for i in 0..ho {
        for j in 0..wo {
            for a in 0..kh {
                for b in 0..kw {
                    index.push(((i * sh + a) * wp + j * sw + b) as u32);
                }
            }
        }
    }
    let index = crate::linalg::host::indices_to_device(index, x.device())?;
    let gathered = pad_neg_inf(x, windows.padding)?
        .flatten_from(2)?
        .index_select(&index, 2)?
        .reshape((n, c, ho * wo, kh * kw))?;
    let first_max = gathered.detach().argmax_keepdim(3)?;
    gathered.gather(&first_max, 3)?.reshape((n, c, ho, wo))
}

/// The patches `[N, I·k_h·k_w, P]` of `x` `[N, I, H, W]` by candle's gather
/// (with its backward): `index` `[k_h·k_w·P]` into the zero-padded planes,
/// `padding` `(height, width)`.
pub(super) fn gather_patches(
    x: &Tensor,
    index: &Tensor,
    (ph, pw): (usize, usize),
    p: usize,
) -> Result<Tensor> {
    let (n, i, _, _) = x.dims4()?;
    x.pad_with_zeros(2, ph, ph)?
        .pad_with_zeros(3, pw, pw)?
        .flatten_from(2)?
        .index_select(index, 2)?
        .reshape((n, i * index.dim(0)? / p.max(1), p))
}
