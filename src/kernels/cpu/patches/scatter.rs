//! The input-Jacobian transpose of a convolution on the nonzero entries of
//! its output gradient.
//!
//! Behind a ReLU and a max pooling most entries of a convolution's output
//! gradient `g` `[O, P]` are zero (fmnist_2c2d's second convolution: 18 %
//! nonzero). Each nonzero `g[o, p]` adds channel `o`'s kernel, weighted, to
//! the input positions of patch `p`:
//!
//! ```text
//! x[:, h_p·s_h + a·d_h − pad_h, w_p·s_w + b·d_w − pad_w] += g[o, p] · W[o, :, a, b]
//! ```
//!
//! for every kernel offset `(a, b)`. Into a channels-last buffer of the
//! padded input `[H + 2·pad_h, W + 2·pad_w, I]`, each term is one contiguous
//! `axpy` of `I` values: no patch matrix `W_flatᵀ g` `[I·k_h·k_w, P]` and no
//! col2im, `nnz(g)·k_h·k_w·I` multiply-adds instead of `O·P·k_h·k_w·I`.

use pulp::{Simd, WithSimd};

use super::super::Lane;
use crate::kernels::Patches;

/// Samples whose gradient's scatter takes at most this fraction of the dense
/// product's vector work are scattered; others go through the product and
/// col2im (the two break even near 45 % nonzero entries,
/// `docs/performance.md`).
const SPARSE_FRACTION: f64 = 0.5;

/// Whether a sample's gradient `g` is sparse enough to scatter into
/// `channels` input channels: `nnz(g)·row_len ≤ SPARSE_FRACTION·|g|·I`
/// (each scattered row is padded to whole vectors, [`row_len`]).
pub(super) fn sparse<T: Lane>(g: &[T], channels: usize) -> bool {
    let nonzero = g.iter().filter(|&&v| v != T::zero()).count();
    (nonzero * row_len::<T>(channels)) as f64 <= SPARSE_FRACTION * (g.len() * channels) as f64
}

/// Bytes of the widest vectors (AVX-512), to which the channels-last rows are
/// aligned and padded: a vector split across two cache lines defeats store
/// forwarding, and consecutive nonzero entries add into the same pixels.
const VECTOR_BYTES: usize = 64;

/// Values per channels-last row: `channels` rounded up to whole vectors.
fn row_len<T>(channels: usize) -> usize {
    channels.next_multiple_of(vector_len::<T>())
}

/// Values in a vector of [`VECTOR_BYTES`].
fn vector_len<T>() -> usize {
    VECTOR_BYTES / std::mem::size_of::<T>()
}

/// `len` zeros of `buffer`, starting on a [`VECTOR_BYTES`] boundary.
fn aligned_zeros<T: Lane>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    buffer.clear();
    buffer.resize(len + vector_len::<T>(), T::zero());
    let start = aligned_start(buffer);
    &mut buffer[start..start + len]
}

/// The first index of `values` on a [`VECTOR_BYTES`] boundary (at most a
/// vector in).
fn aligned_start<T>(values: &[T]) -> usize {
    values
        .as_ptr()
        .align_offset(VECTOR_BYTES)
        .min(vector_len::<T>())
}

/// The weight `W` `[O, I, k_h, k_w]` with the input channels last,
/// `[O, k_h·k_w, I]` (each row `W[o, :, a, b]` padded with zeros to
/// [`row_len`] and aligned).
pub(super) struct ChannelsLast<T> {
    buffer: Vec<T>,
    channels: usize,
}

impl<T: Lane> ChannelsLast<T> {
    /// From the row-major `W_flat` `[O, I·taps]`, `taps = k_h·k_w`.
    pub fn new(weight: &[T], channels: usize, taps: usize) -> Self {
        let mut buffer = Vec::new();
        let stride = row_len::<T>(channels);
        let rows = weight.len() / (channels * taps).max(1) * taps;
        let values = aligned_zeros(&mut buffer, rows * stride);
        let kernels = weight.chunks_exact(channels * taps);
        for (kernel, rows) in kernels.zip(values.chunks_exact_mut(taps * stride)) {
            for (tap, row) in rows.chunks_exact_mut(stride).enumerate() {
                for (i, value) in row[..channels].iter_mut().enumerate() {
                    *value = kernel[i * taps + tap];
                }
            }
        }
        Self { buffer, channels }
    }

    /// The rows `[O·taps, row_len]`.
    fn values(&self) -> &[T] {
        &self.buffer[aligned_start(&self.buffer)..]
    }
}

/// One sample's input-Jacobian transpose by scattering: `image` `[I, H, W]`
/// (overwritten) from `grad` `[O, P]`, through `buffer`, the thread's
/// channels-last padded input.
pub(super) struct Scatter<'a, T> {
    pub patches: &'a Patches,
    pub weight: &'a ChannelsLast<T>,
    pub grad: &'a [T],
    pub buffer: &'a mut Vec<T>,
    pub image: &'a mut [T],
}

impl<T: Lane> WithSimd for Scatter<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let p = self.patches;
        let ((h, w), (kh, kw)) = (p.input, p.kernel);
        let (h_out, w_out) = p.output;
        let (ph, pw) = p.geo.padding;
        let (sh, sw) = p.geo.stride;
        let (dh, dw) = p.geo.dilation;
        let wp = w + 2 * pw;
        let ch = row_len::<T>(self.weight.channels);
        let buffer = aligned_zeros(self.buffer, (h + 2 * ph) * wp * ch);
        let positions = h_out * w_out;
        let kernels = self.weight.values().chunks_exact(kh * kw * ch);
        // for each channel o: the first pixel of patch p and g[o, p] where nonzero
        let mut entries = vec![(0, T::zero()); positions];
        for (kernel, g) in kernels.zip(self.grad.chunks_exact(positions)) {
            let mut len = 0;
            for (oh, g) in g.chunks_exact(w_out).enumerate() {
                let line = oh * sh * wp;
                for (ow, &v) in g.iter().enumerate() {
                    // without a branch: the entry stays only if v ≠ 0
                    entries[len] = ((line + ow * sw) * ch, v);
                    len += usize::from(v != T::zero());
                }
            }
            let nonzero = &entries[..len];
            if nonzero.is_empty() {
                continue;
            }
            let mut rows = kernel.chunks_exact(ch);
            for a in 0..kh {
                for (b, row) in (0..kw).zip(&mut rows) {
                    let offset = (a * dh * wp + b * dw) * ch;
                    add_row(simd, row, nonzero, buffer, offset);
                }
            }
        }
        // the interior of the padded buffer, channels first
        for (i, plane) in self.image.chunks_exact_mut(h * w).enumerate() {
            for (y, line) in plane.chunks_exact_mut(w).enumerate() {
                let start = ((y + ph) * wp + pw) * ch + i;
                for (x, value) in line.iter_mut().enumerate() {
                    *value = buffer[start + x * ch];
                }
            }
        }
    }
}

/// `buffer[pixel + offset..][..row.len()] += v·row` for each `(pixel, v)` of
/// `nonzero`, the row held in registers [`MAX_VECTORS`] vectors at a time.
#[inline(always)]
fn add_row<S: Simd, T: Lane>(
    simd: S,
    row: &[T],
    nonzero: &[(usize, T)],
    buffer: &mut [T],
    offset: usize,
) {
    let lanes = T::lanes::<S>();
    let mut j = 0;
    while j < row.len() {
        let start = offset + j;
        j += lanes
            * match (row.len() - j) / lanes {
                v if v >= MAX_VECTORS => {
                    add_vectors::<S, T, MAX_VECTORS>(simd, &row[j..], nonzero, buffer, start)
                }
                3 => add_vectors::<S, T, 3>(simd, &row[j..], nonzero, buffer, start),
                2 => add_vectors::<S, T, 2>(simd, &row[j..], nonzero, buffer, start),
                _ => add_vectors::<S, T, 1>(simd, &row[j..], nonzero, buffer, start),
            };
    }
}

/// Vectors of a row held in registers by [`add_row`].
const MAX_VECTORS: usize = 4;

/// The first `V` vectors of [`add_row`]'s `row`; returns `V`.
#[inline(always)]
fn add_vectors<S: Simd, T: Lane, const V: usize>(
    simd: S,
    row: &[T],
    nonzero: &[(usize, T)],
    buffer: &mut [T],
    offset: usize,
) -> usize {
    let width = V * T::lanes::<S>();
    let (x, _) = T::vectors::<S>(&row[..width]);
    let x: [T::V<S>; V] = std::array::from_fn(|k| x[k]);
    for &(pixel, v) in nonzero {
        let s = T::splat(simd, v);
        let (y, _) = T::vectors_mut::<S>(&mut buffer[pixel + offset..][..width]);
        for (y, &x) in y.iter_mut().zip(&x) {
            *y = T::mul_add(simd, s, x, *y);
        }
    }
    V
}
