//! # vivit: curvature access for Candle
//!
//! Eigenvalues and eigenvectors of the generalized Gauss-Newton (GGN) matrix of
//! a Candle model, from its low-rank structure, as the Python library ViViT
//! (vivit-for-pytorch, on BackPACK) computes them, with the same numbers.
//!
//! For a mean loss `L = (1/N) Σ_n ℓ(f(x_n, θ), y_n)` the GGN is
//!
//! ```text
//! G = (1/N) Σ_n J_nᵀ H_n J_n = V Vᵀ,   J_n = ∂f_n/∂θ,  H_n = ∇²_f ℓ_n = S_n S_nᵀ,
//! ```
//!
//! with `V = (1/√N) [J_1ᵀ S_1, …, J_Nᵀ S_N]` of width `C·N` (`C` outputs). Its
//! non-zero eigenvalues are those of the small Gram matrix `G̃ = Vᵀ V`
//! `[C·N, C·N]`, and `G̃ ẽ = λ ẽ` gives the GGN eigenvector `e = V ẽ / √λ`.
//! `vivit` gets `V` out of an ordinary forward pass without ever forming it for
//! linear layers, and does the algebra per layer and per parameter group.
//!
//! ## Usage
//!
//! 1. Build the model with tracked layers ([`nn`]); anything between them is
//!    free-form Candle code.
//! 2. Compute the loss inside [`record()`] with a tracked loss ([`loss`]).
//! 3. Run a computation ([`EigvalshComputation`], [`EighComputation`]) on
//!    parameter groups ([`ParamGroup`]), or several at once with [`backward`].
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use vivit::{nn as vnn, Criterion, EighComputation, ParamGroup};
//!
//! # fn main() -> vivit::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let fc1 = vnn::linear(8, 16, vb.pp("fc1"))?;
//! let fc2 = vnn::linear(16, 3, vb.pp("fc2"))?;
//! let x = Tensor::randn(0f32, 1., (10, 8), &dev)?;
//! let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1, 2, 0], &dev)?;
//!
//! let loss = vivit::record(|| {
//!     let logits = fc2.forward(&fc1.forward(&x)?.relu()?)?;
//!     vivit::loss::cross_entropy(&logits, &y)
//! })?;
//!
//! let groups = [ParamGroup::new(varmap.all_vars()).criterion(Criterion::top_k(3))];
//! let mut eigh = EighComputation::new();
//! eigh.compute(&loss, &groups)?;
//! let vivit::Eigenpairs { evals, evecs } = eigh.result(&groups[0])?; // [3], one [3, *p.shape] per parameter
//! assert_eq!(evals.dims(), &[3]);
//! assert_eq!(evecs.len(), 4);
//! # Ok(())
//! # }
//! ```
//!
//! ## Requirements on the model
//!
//! - Samples must be independent: no train-mode batch norm or anything else
//!   that mixes samples, as the GGN's per-sample sum assumes.
//! - Models compute in f32 or f64; results come back in the model's dtype.

pub mod computations;
pub mod damping;
mod error;
pub mod extension;
mod group;
mod kernels;
mod linalg;
pub mod loss;
pub mod nn;
pub mod optim;
mod record;
mod tape;

pub use computations::{
    DirectionalDampedNewtonComputation, DirectionalDerivativesComputation, Eigenpairs,
    EighComputation, EigvalshComputation, StepSolver,
};
pub use damping::Damping;
pub use error::{Error, Result};
pub use extension::{backward, Computation, Stage, Timings};
pub use group::{Criterion, GroupId, ParamGroup};
pub use linalg::Eigensolver;
pub use optim::{Blocks, DampedNewton, DampedNewtonConfig};
pub use record::{record, Recorded};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
