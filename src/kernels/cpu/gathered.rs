//! Weighted sums of gathered rows, summed in vector registers: the kernel of
//! products with a sparse operand (a convolution's weight factor on the
//! support of its output signals).

use pulp::Simd;

use super::Lane;

/// Rows `r` of the weighted sums of some rows `index` of a row-major `x`
/// (rows of `width` values), with `k = index.len()` weights per row:
///
/// ```text
/// out[r][col + j] = Σ_{q < k} coef[r·k + q] · x[index[q], j],   j < width.
/// ```
///
/// The rows `r` share the gathered rows of `x`: each tile of `R` rows ×
/// `G` vectors (about 12 vectors) loads a row of `x` once for all of its
/// `R` rows.
pub(crate) struct Gathered<'a, T> {
    pub x: &'a [T],
    pub width: usize,
    pub index: &'a [usize],
    pub coef: &'a [T],
}

impl<T: Lane> Gathered<'_, T> {
    /// Writes `out[r][col..col + width]` for every row `r` of `out`
    /// (`coef` holds `out.len()·k` weights). Call it where `simd`'s
    /// instruction set is enabled ([`pulp::WithSimd`]).
    #[inline(always)]
    pub fn write<S: Simd>(&self, simd: S, out: &mut [&mut [T]], col: usize) {
        let k = self.index.len();
        let mut r0 = 0;
        while r0 < out.len() {
            let tiles = Tiles {
                simd,
                sums: self,
                coef: &self.coef[r0 * k..],
                col,
            };
            let rows = &mut out[r0..];
            r0 += match rows.len() {
                r if r >= 4 => tiles.rows::<4, 3>(rows),
                3 => tiles.rows::<3, 4>(rows),
                2 => tiles.rows::<2, 6>(rows),
                _ => tiles.rows::<1, 8>(rows),
            };
        }
    }
}

/// [`Gathered::write`] for the rows from one on: their weights `coef`.
struct Tiles<'a, S, T> {
    simd: S,
    sums: &'a Gathered<'a, T>,
    coef: &'a [T],
    col: usize,
}

impl<S: Simd, T: Lane> Tiles<'_, S, T> {
    /// Rows `0..R` of `rows` in tiles of `R × G` vectors, then of `R × 1`,
    /// then column by column; returns `R`.
    #[inline(always)]
    fn rows<const R: usize, const G: usize>(&self, rows: &mut [&mut [T]]) -> usize {
        let (lanes, width) = (T::lanes::<S>(), self.sums.width);
        let mut j = 0;
        while j + G * lanes <= width {
            self.tile::<R, G>(rows, j);
            j += G * lanes;
        }
        while j + lanes <= width {
            self.tile::<R, 1>(rows, j);
            j += lanes;
        }
        let (x, index, k) = (self.sums.x, self.sums.index, self.sums.index.len());
        for j in j..width {
            for (r, row) in rows.iter_mut().take(R).enumerate() {
                let mut sum = T::zero();
                for (q, &p) in index.iter().enumerate() {
                    sum += self.coef[r * k + q] * x[p * width + j];
                }
                row[self.col + j] = sum;
            }
        }
        R
    }

    /// Columns `j..j + G·lanes` of rows `0..R`, summed in `R × G` vectors.
    #[inline(always)]
    fn tile<const R: usize, const G: usize>(&self, rows: &mut [&mut [T]], j: usize) {
        let (simd, lanes) = (self.simd, T::lanes::<S>());
        let (x, width, index) = (self.sums.x, self.sums.width, self.sums.index);
        let k = index.len();
        let zero = T::splat(simd, T::zero());
        let mut acc = [[zero; G]; R];
        for (q, &p) in index.iter().enumerate() {
            let (x, _) = T::vectors::<S>(&x[p * width + j..][..G * lanes]);
            let w: [T::V<S>; R] = std::array::from_fn(|r| T::splat(simd, self.coef[r * k + q]));
            for (g, &x) in x.iter().enumerate() {
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    acc[g] = T::mul_add(simd, w, x, acc[g]);
                }
            }
        }
        for (row, acc) in rows.iter_mut().zip(&acc) {
            let (dst, _) = T::vectors_mut::<S>(&mut row[self.col + j..][..G * lanes]);
            dst.copy_from_slice(acc);
        }
    }
}
