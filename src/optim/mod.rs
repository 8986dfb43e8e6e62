//! The `DampedNewton` optimizer and its damping strategies.

mod amortization;
mod config;
mod damped_newton;
mod damping;
mod levenberg_marquardt;

pub use config::{Blocks, DampedNewtonConfig};
pub use damped_newton::{DampedNewton, StepReport};
pub use damping::{Bootstrap, Damping, DampingInput};
pub use levenberg_marquardt::LevenbergMarquardt;
