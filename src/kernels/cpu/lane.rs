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

/// `impl Lane` for a float type through pulp's methods for its vectors.
macro_rules! lane {
    ($t:ty, $v:ident, $splat:ident, $mul_add:ident, $simd:ident, $simd_mut:ident) => {
        impl Lane for $t {
            type V<S: Simd> = S::$v;
            #[inline(always)]
            fn splat<S: Simd>(simd: S, x: Self) -> S::$v {
                simd.$splat(x)
            }
            #[inline(always)]
            fn mul_add<S: Simd>(simd: S, a: S::$v, b: S::$v, c: S::$v) -> S::$v {
                simd.$mul_add(a, b, c)
            }
            #[inline(always)]
            fn vectors<S: Simd>(x: &[Self]) -> (&[S::$v], &[Self]) {
                S::$simd(x)
            }
            #[inline(always)]
            fn vectors_mut<S: Simd>(x: &mut [Self]) -> (&mut [S::$v], &mut [Self]) {
                S::$simd_mut(x)
            }
        }
    };
}

lane!(
    f32,
    f32s,
    splat_f32s,
    mul_add_e_f32s,
    as_simd_f32s,
    as_mut_simd_f32s
);
lane!(
    f64,
    f64s,
    splat_f64s,
    mul_add_e_f64s,
    as_simd_f64s,
    as_mut_simd_f64s
);
