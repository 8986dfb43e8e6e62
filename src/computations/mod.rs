//! The four computations of ViViT.

mod damped_newton;
mod directional_derivatives;
mod directions;
mod eigh;
mod eigvalsh;
mod options;
mod woodbury;

pub use damped_newton::{DirectionalDampedNewtonComputation, StepSolver};
pub(crate) use damped_newton::{Drive, NewtonStep};
pub use directional_derivatives::DirectionalDerivativesComputation;
pub use eigh::{Eigenpairs, EighComputation};
pub use eigvalsh::EigvalshComputation;
pub(crate) use options::{
    curvature_setters, eigensolver_setter, gradient_setter, step_solver_setter, Options,
};
pub(crate) use woodbury::WoodburyCurvature;
