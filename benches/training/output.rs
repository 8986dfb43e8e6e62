//! The files a run writes: `target/training/results.json` (every curve),
//! `target/training/plots/`, and unless `--quick` the report and the plots
//! in `docs/training/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::cache::output_dir;
use crate::cli::Args;
use crate::machine;
use crate::report;
use crate::summary::Summary;

/// `docs/training` of this crate.
fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("training")
}

/// `target/training/plots/<task>.png`, its folder created.
pub fn plot_path(task: &str) -> Result<PathBuf> {
    let dir = output_dir().join("plots");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{task}.png")))
}

/// Writes the JSON of all curves and, for a full (not `--quick`) run, the
/// Markdown report and the plots to `docs/training/`; returns the paths written.
pub fn write(summaries: &[Summary], goals: &str, args: &Args) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let json_path = output_dir().join("results.json");
    fs::write(&json_path, results_json(summaries).to_string())
        .with_context(|| format!("writing {}", json_path.display()))?;
    written.push(json_path.display().to_string());
    if args.quick {
        return Ok(written);
    }
    let docs = docs_dir();
    fs::create_dir_all(&docs).with_context(|| format!("creating {}", docs.display()))?;
    let md_path = docs.join("results.md");
    fs::write(&md_path, markdown(summaries, goals, args))
        .with_context(|| format!("writing {}", md_path.display()))?;
    written.push(md_path.display().to_string());
    for s in summaries {
        let (from, to) = (plot_path(s.name)?, docs.join(format!("{}.png", s.name)));
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        written.push(to.display().to_string());
    }
    Ok(written)
}

/// The report: machine, method, each task's section, the goals.
fn markdown(summaries: &[Summary], goals: &str, args: &Args) -> String {
    let command = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = format!(
        "# Training benchmark\n\n`cargo bench --bench training` ({}). Machine: {}. \
         Seeds 0–{}.\n\n{}\n\n",
        if command.is_empty() {
            "no arguments".to_string()
        } else {
            format!("arguments: `{command}`")
        },
        machine::description(),
        args.seeds - 1,
        report::METHOD
    );
    for s in summaries {
        out.push_str(&report::task_section(s));
        out.push_str(&format!("\n![{0}]({0}.png)\n\n", s.name));
    }
    out.push_str(goals);
    out
}

/// Every task's target, budget, tuned learning rates and all runs' curves.
fn results_json(summaries: &[Summary]) -> serde_json::Value {
    let tasks: Vec<_> = summaries
        .iter()
        .map(|s| {
            let tuned: serde_json::Map<_, _> = s
                .rows
                .iter()
                .filter_map(|r| Some((r.method.family().to_string(), json!(r.method.lr()?))))
                .collect();
            let runs: Vec<_> = s
                .runs
                .iter()
                .map(|r| {
                    json!({
                        "optimizer": r.method.family(),
                        "lr": r.method.lr(),
                        "seed": r.seed,
                        "curve": r.curve.to_json(),
                    })
                })
                .collect();
            json!({
                "task": s.name,
                "description": s.description,
                "forward_backward_ms": s.forward_backward_ms,
                "target": finite(s.target),
                "budget_seconds": s.budget,
                "tuned_lr": tuned,
                "runs": runs,
            })
        })
        .collect();
    json!({ "machine": machine::description(), "tasks": tasks })
}

/// `x` as JSON, `null` if not finite.
fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else {
        serde_json::Value::Null
    }
}
