//! Trains one MLP on the 8×8 handwritten digits with SGD, Adam and vivit's
//! `DampedNewton` (default settings), for the same number of mini-batch steps
//! from the same initialization, and compares them.
//!
//! ```sh
//! cargo run --release --example train_digits
//! ```
//!
//! Prints a table (final loss on the training split, test accuracy, time per
//! step) and writes the training-loss curves to `target/plots/train_digits.png`.
//! All three optimizers step on the loss recorded by `vivit::record`: to SGD
//! and Adam it is an ordinary loss.

mod common;

use anyhow::Result;
use candle_core::Device;
use common::data::Digits;
use common::optimizers::Candidate;
use common::plot;
use common::train::{self, DIGITS};
use vivit::DampedNewtonConfig;

const TITLE: &str = "MLP on the 8×8 digits: SGD, Adam and DampedNewton";

fn main() -> Result<()> {
    let digits = Digits::load(&Device::Cpu)?;
    println!(
        "digits: {} training and {} test images; {} steps of {} images each",
        digits.train.len(),
        digits.test.len(),
        DIGITS.steps,
        DIGITS.batch_size
    );
    let candidates = vec![
        // learning rates: the best of a sweep on this task (SGD 0.1, 0.2, 0.5, 1;
        // Adam 1e-3, 3e-3, 1e-2), by the final training loss over three seeds
        Candidate::sgd(0.5),
        Candidate::adam(1e-2),
        Candidate::damped_newton("DampedNewton (default)", DampedNewtonConfig::default()),
    ];
    let outcomes = train::train_all(candidates, &digits, &DIGITS)?;
    common::table::print(&outcomes);
    let path = plot::output_path("train_digits")?;
    plot::loss_chart(&path, TITLE, &outcomes)?;
    println!("plot: {}", path.display());
    Ok(())
}
