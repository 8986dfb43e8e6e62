//! vivit's CPU kernels, for f32 and f64 tensors on the CPU: faer products,
//! pulp SIMD and values read in place. Only [`crate::kernels`] calls them,
//! where it has chosen the CPU.

mod gathered;
mod gemm;
mod gram;
mod lane;
mod patches;
mod pool;
mod recorded;
pub(super) mod slices;
mod support;
mod tiled;

pub(super) use gemm::{matmul, multiplies};
pub(super) use gram::gram;
pub(super) use patches::im2col;
pub(super) use pool::max_pool2d;
pub(super) use recorded::{recorded_conv, recorded_linear, recorded_scale};
pub(super) use support::weight_factor;
pub(crate) use support::RowOrder;
pub(super) use tiled::{tiled_product, tiles};

use gathered::Gathered;
use lane::Lane;
