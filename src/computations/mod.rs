//! The four computations of ViViT.

mod eigh;
mod eigvalsh;

pub use eigh::EighComputation;
pub use eigvalsh::EigvalshComputation;
