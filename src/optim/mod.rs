//! The `DampedNewton` optimizer and its damping strategies.

mod config;
mod damped_newton;
mod damping;

pub use config::{Blocks, DampedNewtonConfig};
pub use damped_newton::{DampedNewton, StepReport};
pub use damping::{Bootstrap, Damping, DampingInput, LevenbergMarquardt};
