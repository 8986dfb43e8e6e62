//! The four computations of ViViT.

mod directional_derivatives;
mod directions;
mod eigh;
mod eigvalsh;
mod options;

pub use directional_derivatives::DirectionalDerivativesComputation;
pub use eigh::{Eigenpairs, EighComputation};
pub use eigvalsh::EigvalshComputation;
