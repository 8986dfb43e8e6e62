//! Compares the damping strategies of vivit's `DampedNewton` on the digits MLP,
//! against AdamW at its tuned learning rate and `DampedNewton`'s default (the
//! full-rank Woodbury step with a trust region):
//! constant damping `δ` over a grid, bootstrap damping (a `δ` per direction
//! from the noise of the per-sample directional derivatives), and
//! Levenberg–Marquardt damping (one `δ` adapted from how well each step's
//! predicted loss change matched the actual one on the same batch); and, for
//! constant damping, the step that also moves along the gradient outside the
//! kept eigenspace (`complement(true)`, the Levenberg–Marquardt step of the
//! truncated GGN).
//!
//! ```sh
//! cargo run --release --example damping_strategies
//! ```
//!
//! Prints a table (final loss on the training split, test accuracy, time per
//! step) and writes the training-loss curves to
//! `target/plots/damping_strategies.png`.

mod common;

use anyhow::Result;
use candle_core::Device;
use common::data::Digits;
use common::optimizers::Candidate;
use common::plot;
use common::train::{self, Settings, DIGITS};
use vivit::optim::{Bootstrap, LevenbergMarquardt};
use vivit::{Criterion, DampedNewtonConfig, Damping, StepSolver};

/// Fewer steps than the other examples: thirteen runs, most at the exact GGN's cost,
/// stay under two minutes.
const SETTINGS: Settings = Settings {
    steps: 150,
    ..DIGITS
};
const TITLE: &str = "DampedNewton on the 8×8 digits: damping strategies";
const CONSTANT: [f64; 4] = [0.01, 0.1, 1.0, 10.0];

/// What the strategies share: the directional step along the top 10
/// eigenvectors of the exact GGN, lr 1, no trust region; only the damping
/// and the complement step vary.
fn base() -> DampedNewtonConfig {
    let mut config = DampedNewtonConfig::default()
        .step_solver(StepSolver::Directional)
        .criterion(Criterion::top_k(10))
        .complement(false);
    config.trust_region = None;
    config.curvature_budget = None;
    config
}

fn main() -> Result<()> {
    let digits = Digits::load(&Device::Cpu)?;
    println!(
        "DampedNewton (exact GGN, {:?}, lr {}); {} steps of {} images",
        base().criterion,
        base().lr,
        SETTINGS.steps,
        SETTINGS.batch_size
    );
    // AdamW's learning rate: the best of 1e-3, 3e-3, 1e-2, 3e-2 on this task
    // (the final training loss of `cargo bench --bench training -- --tasks a`)
    let mut candidates = vec![
        Candidate::adamw(1e-2),
        Candidate::damped_newton("DampedNewton (default)", DampedNewtonConfig::default()),
    ];
    candidates.extend(CONSTANT.iter().map(|&d| {
        Candidate::damped_newton(
            format!("constant δ={d}"),
            base().damping(Damping::constant(d)),
        )
    }));
    let bootstrap = Bootstrap {
        seed: Some(0),
        ..Bootstrap::default()
    };
    candidates.push(Candidate::damped_newton(
        "bootstrap",
        base().damping(Damping::bootstrap(bootstrap.clone())),
    ));
    // bootstrap damping has no δ for the complement: set one
    candidates.push(Candidate::damped_newton(
        "bootstrap + complement (δ⊥=1)",
        base()
            .damping(Damping::bootstrap(bootstrap).with_complement(1.0))
            .complement(true),
    ));
    // Levenberg–Marquardt damping needs the loss after the step: step_with_model
    candidates.push(Candidate::damped_newton_with_model(
        "Levenberg-Marquardt (δ₀=1)",
        base().damping(Damping::levenberg_marquardt(LevenbergMarquardt::new(1.0))),
    ));
    candidates.extend(CONSTANT.iter().map(|&d| {
        Candidate::damped_newton(
            format!("constant δ={d} + complement"),
            base().damping(Damping::constant(d)).complement(true),
        )
    }));
    let outcomes = train::train_all(candidates, &digits, &SETTINGS)?;
    common::table::print(&outcomes);
    let path = plot::output_path("damping_strategies")?;
    plot::loss_chart(&path, TITLE, &outcomes)?;
    println!("plot: {}", path.display());
    Ok(())
}
