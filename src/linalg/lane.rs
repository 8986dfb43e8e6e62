//! The values vivit's SIMD kernels run on (f32, f64) and their vectors.

use candle_core::WithDType;
use faer::traits::RealField;
use pulp::Simd;

/// The values a kernel runs on, with their SIMD vectors for instruction set `S`.
pub(crate) trait Lane: WithDType + RealField + std::ops::AddAssign {
    /// A vector of `Self`.
    type V<S: Simd>: Copy;
    /// Values in a vector.
    fn lanes<S: Simd>() -> usize {
        std::mem::size_of::<Self::V<S>>() / std::mem::size_of::<Self>()
    }
    /// `[x, …, x]`.
    fn splat<S: Simd>(simd: S, x: Self) -> Self::V<S>;
    /// `a·b + c`, fused.
    fn mul_add<S: Simd>(simd: S, a: Self::V<S>, b: Self::V<S>, c: Self::V<S>) -> Self::V<S>;
    /// The whole vectors at the start of `x`, and the rest.
    fn vectors<S: Simd>(x: &[Self]) -> (&[Self::V<S>], &[Self]);
    /// The whole vectors at the start of `x`, and the rest.
    fn vectors_mut<S: Simd>(x: &mut [Self]) -> (&mut [Self::V<S>], &mut [Self]);
}

impl Lane for f32 {
    type V<S: Simd> = S::f32s;
    #[inline(always)]
    fn splat<S: Simd>(simd: S, x: Self) -> S::f32s {
        simd.splat_f32s(x)
    }
    #[inline(always)]
    fn mul_add<S: Simd>(simd: S, a: S::f32s, b: S::f32s, c: S::f32s) -> S::f32s {
        simd.mul_add_e_f32s(a, b, c)
    }
    #[inline(always)]
    fn vectors<S: Simd>(x: &[Self]) -> (&[S::f32s], &[Self]) {
        S::as_simd_f32s(x)
    }
    #[inline(always)]
    fn vectors_mut<S: Simd>(x: &mut [Self]) -> (&mut [S::f32s], &mut [Self]) {
        S::as_mut_simd_f32s(x)
    }
}

impl Lane for f64 {
    type V<S: Simd> = S::f64s;
    #[inline(always)]
    fn splat<S: Simd>(simd: S, x: Self) -> S::f64s {
        simd.splat_f64s(x)
    }
    #[inline(always)]
    fn mul_add<S: Simd>(simd: S, a: S::f64s, b: S::f64s, c: S::f64s) -> S::f64s {
        simd.mul_add_e_f64s(a, b, c)
    }
    #[inline(always)]
    fn vectors<S: Simd>(x: &[Self]) -> (&[S::f64s], &[Self]) {
        S::as_simd_f64s(x)
    }
    #[inline(always)]
    fn vectors_mut<S: Simd>(x: &mut [Self]) -> (&mut [S::f64s], &mut [Self]) {
        S::as_mut_simd_f64s(x)
    }
}
