//! Shared code of the examples: the digits data and split, the MLP, mini-batches,
//! the optimizers compared, the training loop, and the table and plot output.
// Each example uses only part of this module.
#![allow(dead_code)]

pub mod batches;
pub mod data;
pub mod mlp;
pub mod optimizers;
pub mod plot;
pub mod progress;
pub mod table;
pub mod train;
