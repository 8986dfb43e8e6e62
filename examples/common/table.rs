//! The results table printed by the examples.

use super::train::Outcome;

/// Prints one row per run: final train loss, test accuracy, time per step;
/// then why runs stopped early, if any did.
pub fn print(outcomes: &[Outcome]) {
    let width = outcomes
        .iter()
        .map(|o| o.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("optimizer".len());
    println!(
        "| {:<width$} | final train loss | test accuracy | time per step |",
        "optimizer"
    );
    println!(
        "|{}|-----------------:|--------------:|--------------:|",
        "-".repeat(width + 2)
    );
    for o in outcomes {
        println!(
            "| {:<width$} | {:>16} | {:>12.1} % | {:>10.1} ms |",
            o.name,
            loss(o.final_train_loss()),
            100.0 * o.test_accuracy,
            o.step_time.as_secs_f64() * 1e3,
        );
    }
    for o in outcomes {
        if let Some((step, why)) = &o.stopped {
            // the first line: candle errors may carry a backtrace
            let why = why.lines().next().unwrap_or_default();
            println!("{}: stopped at step {step}: {why}", o.name);
        }
    }
}

/// Four decimals, or scientific notation for a loss that blew up.
fn loss(value: f64) -> String {
    if value.abs() < 1e5 {
        format!("{value:.4}")
    } else {
        format!("{value:.3e}")
    }
}
