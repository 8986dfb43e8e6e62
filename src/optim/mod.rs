//! The `DampedNewton` optimizer and its damping strategies.

mod damped_newton;
mod damping;

pub use damped_newton::{Blocks, DampedNewton, DampedNewtonConfig, StepReport};
pub use damping::{Bootstrap, Damping, DampingInput, LevenbergMarquardt};
