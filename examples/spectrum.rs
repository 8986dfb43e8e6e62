//! Tracks the top of the GGN spectrum while SGD trains the digits MLP: every
//! few steps, the 10 largest eigenvalues of the exact GGN on a fixed batch of
//! training images, from `vivit::EigvalshComputation`.
//!
//! ```sh
//! cargo run --release --example spectrum
//! ```
//!
//! Prints the eigenvalues at a few steps and plots all of them against the
//! step (log scale) into `target/plots/spectrum.png`, with SGD's stability
//! threshold `2/lr` for comparison: gradient descent with learning rate `lr`
//! is unstable along directions of curvature above `2/lr`.

mod common;

use anyhow::Result;
use candle_core::Device;
use common::data::Digits;
use common::mlp::Mlp;
use common::optimizers::Candidate;
use common::plot::{self, Chart, Series};
use common::train::{self, DIGITS};
use vivit::{EigvalshComputation, ParamGroup};

const LR: f64 = 0.5;
/// Eigenvalues tracked.
const TOP: usize = 10;
/// Steps between two spectra.
const EVERY: usize = 5;
/// Training images whose GGN is tracked (the same at every step).
const TRACKED: u32 = 128;

fn main() -> Result<()> {
    let digits = Digits::load(&Device::Cpu)?;
    let tracked = digits.train.select(&(0..TRACKED).collect::<Vec<_>>())?;
    // (step, top eigenvalues in descending order)
    let mut spectra: Vec<(usize, Vec<f64>)> = Vec::new();
    let outcome = train::train_observed(Candidate::sgd(LR), &digits, &DIGITS, |step, mlp| {
        if step % EVERY == 0 {
            spectra.push((step, top_eigenvalues(mlp, &tracked)?));
        }
        Ok(())
    })?;
    common::table::print(std::slice::from_ref(&outcome));

    println!("\nthe {TOP} largest GGN eigenvalues on {TRACKED} training images:");
    for (step, evals) in spectra.iter().filter(|(s, _)| s % 50 == 0) {
        let shown: Vec<String> = evals.iter().map(|v| format!("{v:.3}")).collect();
        println!("step {step:>4}: {}", shown.join(" "));
    }

    let mut series: Vec<Series> = (0..TOP)
        .map(|k| Series {
            name: format!("λ{}", k + 1),
            points: spectra.iter().map(|(s, e)| (*s as f64, e[k])).collect(),
            reference: false,
        })
        .collect();
    series.push(Series {
        name: format!("2/lr = {}", 2.0 / LR),
        points: vec![(0.0, 2.0 / LR), (DIGITS.steps as f64, 2.0 / LR)],
        reference: true,
    });
    let path = plot::output_path("spectrum")?;
    let chart = Chart {
        title: &format!("Top {TOP} GGN eigenvalues while SGD (lr = {LR}) trains the digits MLP"),
        x_label: "step",
        y_label: "eigenvalue (log scale)",
        log_x: false,
        log_y: true,
        y_max: None,
    };
    plot::line_chart(&path, &chart, &series)?;
    println!("plot: {}", path.display());
    Ok(())
}

/// The `TOP` largest eigenvalues of the GGN of the loss on `batch`, descending.
fn top_eigenvalues(mlp: &Mlp, batch: &common::data::Split) -> Result<Vec<f64>> {
    let loss = mlp.record_loss(batch)?;
    let groups = [ParamGroup::new(mlp.vars())];
    let mut eigvalsh = EigvalshComputation::new();
    eigvalsh.compute(&loss, &groups)?;
    let ascending = eigvalsh.result(&groups[0])?.to_vec1::<f32>()?;
    Ok(ascending
        .iter()
        .rev()
        .take(TOP)
        .map(|&v| f64::from(v))
        .collect())
}
