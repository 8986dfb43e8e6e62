//! The `DampedNewton` optimizer: its settings, and the state it owns (each
//! group's adaptive damping, the amortized curvature, the momentum).

mod adaptation;
mod amortization;
mod config;
mod damped_newton;
mod update;

/// The damping policies, also at [`crate::damping`].
pub use crate::damping::{Bootstrap, Damping, DampingInput, LevenbergMarquardt};
pub use config::{Blocks, DampedNewtonConfig};
pub use damped_newton::{DampedNewton, StepReport};
