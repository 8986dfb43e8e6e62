//! The report of the scaling example: the table, the CSV and the figure.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::common::plot::{self, Chart, Note, Panel, Series};
use crate::{Config, Stages, FIXED_C, FIXED_N, STAGES};

/// The results as a markdown table, milliseconds.
pub(crate) fn table(results: &[(Config, Stages)]) -> String {
    let names: Vec<&str> = STAGES.iter().copied().chain(["total"]).collect();
    let widths: Vec<usize> = names.iter().map(|n| n.chars().count().max(6)).collect();
    let mut out = String::from("|   N |   C | Gram |");
    for (name, width) in names.iter().zip(&widths) {
        let _ = write!(out, " {name:>width$} |");
    }
    out.push_str("\n|----:|----:|-----:|");
    for width in &widths {
        let _ = write!(out, "{}:|", "-".repeat(width + 1));
    }
    out.push('\n');
    for (config, stages) in results {
        let _ = write!(
            out,
            "| {:>3} | {:>3} | {:>4} |",
            config.n,
            config.c,
            config.gram_size()
        );
        for (ms, width) in stages.iter().copied().chain([total(stages)]).zip(&widths) {
            let _ = write!(out, " {:>width$} |", format_ms(ms));
        }
        out.push('\n');
    }
    out.push_str("(milliseconds, each stage the median of 3 runs, total their sum; Gram: the side (C−1)·N of the Gram matrix)\n");
    out
}

/// Milliseconds with three significant digits or more.
fn format_ms(ms: f64) -> String {
    match ms {
        ms if ms < 10.0 => format!("{ms:.2}"),
        ms if ms < 100.0 => format!("{ms:.1}"),
        ms => format!("{ms:.0}"),
    }
}

/// The results as CSV, milliseconds.
pub(crate) fn csv_text(results: &[(Config, Stages)]) -> String {
    let mut out = String::from("n,c,gram_size");
    for stage in STAGES {
        let _ = write!(out, ",{}_ms", csv_name(stage));
    }
    out.push_str(",total_ms\n");
    for (config, stages) in results {
        let _ = write!(out, "{},{},{}", config.n, config.c, config.gram_size());
        for ms in stages.iter().copied().chain([total(stages)]) {
            let _ = write!(out, ",{ms:.3}");
        }
        out.push('\n');
    }
    out
}

/// A stage name as a CSV column: ASCII, snake case.
fn csv_name(stage: &str) -> String {
    stage
        .replace("γ/λ", "gamma_lambda")
        .replace(' ', "_")
        .to_lowercase()
}

/// Two panels of stacked stage shares, against `N` at `C = FIXED_C` and
/// against `C` at `N = FIXED_N`, the total time above each stack.
pub(crate) fn figure(
    path: &Path,
    results: &[(Config, Stages)],
    sweep_n: &[usize],
    sweep_c: &[usize],
) -> Result<()> {
    let (by_n, totals_n) = shares(results, sweep_n, |n| Config { n, c: FIXED_C });
    let (by_c, totals_c) = shares(results, sweep_c, |c| Config { n: FIXED_N, c });
    let title_n = format!("mnist_mlp, C = {FIXED_C}: share of each stage, total on top");
    let title_c = format!("mnist_mlp, N = {FIXED_N}: share of each stage, total on top");
    let chart = |title, x_label| Chart {
        title,
        x_label,
        y_label: "share of the time (%)",
        log_x: true,
        log_y: false,
        y_max: Some(110.0), // room for the totals
    };
    let chart_n = chart(&title_n, "batch size N (log scale)");
    let chart_c = chart(&title_c, "classes C (log scale)");
    let panels = [
        Panel {
            chart: &chart_n,
            series: &by_n,
            notes: &totals_n,
        },
        Panel {
            chart: &chart_c,
            series: &by_c,
            notes: &totals_c,
        },
    ];
    plot::stacked_panels(path, &panels)
}

/// Along one sweep (`config` makes the configuration of each swept value):
/// the share of each stage in percent, one series per stage, and the total
/// time as a note above each stack.
fn shares(
    results: &[(Config, Stages)],
    sweep: &[usize],
    config: impl Fn(usize) -> Config,
) -> (Vec<Series>, Vec<Note>) {
    let points: Vec<(f64, &Stages)> = sweep
        .iter()
        .filter_map(|&x| {
            let wanted = config(x);
            let (_, stages) = results.iter().find(|(c, _)| *c == wanted)?;
            Some((x as f64, stages))
        })
        .collect();
    let series = STAGES
        .iter()
        .enumerate()
        .map(|(stage, name)| Series {
            name: name.to_string(),
            points: points
                .iter()
                .map(|&(x, s)| (x, 100.0 * s[stage] / total(s)))
                .collect(),
            reference: false,
        })
        .collect();
    let notes = points
        .iter()
        .map(|&(x, s)| ((x, 101.0), format_total(total(s))))
        .collect();
    (series, notes)
}

/// The sum of the stage times.
fn total(stages: &Stages) -> f64 {
    stages.iter().sum()
}

/// `51 ms`, `4.5 s`.
fn format_total(ms: f64) -> String {
    if ms < 1e3 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1e3)
    }
}
