//! Training benchmark: how fast `DampedNewton` and tuned first-order
//! optimizers reach a target training loss on six small tasks.
//!
//! ```text
//! cargo bench --bench training                        # everything (~11 min on 2 cores, less cached)
//! cargo bench --bench training -- --tasks a,f         # a subset, by name or letter
//! cargo bench --bench training -- --quick             # a smoke run
//! cargo bench --bench training -- --only-dn           # re-run the DampedNewton variants only
//! cargo bench --bench training -- --help
//! ```
//!
//! Each task (see `tasks.rs`) is trained with SGD (momentum 0.9), Adam and
//! AdamW on a learning-rate grid, L-BFGS on the full-batch variants, and the
//! DampedNewton variants of `variants.rs`, every run from seeds `0..N`.
//! Models are vivit's tracked layers in f32 on the CPU; every optimizer steps
//! on the loss `vivit::record` returns. The report (`report.rs` says how each
//! number is made) is printed and written to `docs/training/results.md`, the
//! curves to `target/training/results.json`, plots to
//! `target/training/plots/<task>.png` (copied to `docs/training/`). Finished
//! baseline runs are cached in `target/training/runs/`.

mod cache;
mod cli;
mod curve;
mod data;
mod datasets;
#[allow(dead_code)] // the examples' loader; the suite uses the training split only
#[path = "../../examples/common/data.rs"]
mod digits;
mod machine;
mod network;
mod optimizers;
mod output;
mod plot;
mod problem;
mod report;
mod run;
mod summary;
mod tasks;
mod variants;

use std::time::Instant;

use anyhow::Result;

use cache::Cache;
use cli::Args;
use curve::Curve;
use network::Network;
use optimizers::Method;
use summary::{Run, Summary};
use tasks::Task;
use vivit::DampedNewtonConfig;

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.help {
        println!("{}", cli::USAGE);
        return Ok(());
    }
    let tasks = tasks::tasks(&args.tasks, args.quick)?;
    let variants = variants::damped_newton_variants();
    let default_name = variants
        .first()
        .map(|(name, _)| name.clone())
        .unwrap_or_default();
    let cache = Cache::open()?;
    let start = Instant::now();
    let mut summaries = Vec::new();
    for task in &tasks {
        let task_start = Instant::now();
        let summary = run_task(task, &args, &cache, &variants)?;
        let section = report::task_section(&summary);
        println!("\n{section}");
        plot::task_chart(&output::plot_path(task.name)?, &summary)?;
        eprintln!(
            "{}: {:.0} s\n",
            task.name,
            task_start.elapsed().as_secs_f64()
        );
        summaries.push(summary);
    }
    let goals = report::goals(&summaries, &default_name);
    println!("\n{goals}");
    let written = output::write(&summaries, &goals, &args)?;
    eprintln!(
        "done in {:.0} s; wrote {}",
        start.elapsed().as_secs_f64(),
        written.join(", ")
    );
    Ok(())
}

/// Every run of `task`: the grid of the baselines, L-BFGS on a full-batch
/// task, and the DampedNewton variants, each from every seed.
fn run_task(
    task: &Task,
    args: &Args,
    cache: &Cache,
    variants: &[(String, DampedNewtonConfig)],
) -> Result<Summary> {
    // also warms up the allocator and thread pool before the first timed run
    let pass_ms = run::forward_backward_ms(task)?;
    let parameters = Network::new(&task.layers, 0)?.parameter_count();
    eprintln!(
        "== {} ({parameters} parameters, {} steps, batch {}): forward+backward {pass_ms:.2} ms",
        task.name, task.steps, task.batch_size
    );
    let mut runs = Vec::new();
    for method in methods(task, variants) {
        let mut ran = false;
        let mut line = Vec::new();
        for seed in args.seed_list() {
            let (curve, fresh) = curve(task, &method, seed, args, cache)?;
            ran |= fresh;
            line.push(format!(
                "{:.4} ({:.2} ms)",
                curve.final_loss(),
                1e3 * curve.seconds_per_step()
            ));
            runs.push(Run {
                method: method.clone(),
                seed,
                curve,
            });
        }
        let cached = if ran { "" } else { " (cached)" };
        eprintln!("  {:<28} {}{cached}", method.label(), line.join("  "));
    }
    Ok(Summary::new(task, parameters, pass_ms, args.seeds, runs))
}

/// The optimizers `task` is trained with, in the report's order.
fn methods(task: &Task, variants: &[(String, DampedNewtonConfig)]) -> Vec<Method> {
    let sgd = task.grid.sgd.iter().map(|&lr| Method::Sgd { lr });
    let adam = task.grid.adam.iter().map(|&lr| Method::Adam { lr });
    let adamw = task.grid.adam.iter().map(|&lr| Method::AdamW { lr });
    let lbfgs = task.full_batch().then_some(Method::Lbfgs);
    let damped_newton = variants.iter().map(|(name, config)| Method::DampedNewton {
        name: name.clone(),
        config: Box::new(config.clone()),
    });
    sgd.chain(adam)
        .chain(adamw)
        .chain(lbfgs)
        .chain(damped_newton)
        .collect()
}

/// The curve of one run, from the cache where `args` allow it (DampedNewton
/// only with `--cache-dn`; baselines unless `--fresh`, always with
/// `--only-dn`), else trained and cached; and whether it was trained.
fn curve(
    task: &Task,
    method: &Method,
    seed: u64,
    args: &Args,
    cache: &Cache,
) -> Result<(Curve, bool)> {
    let reuse = if method.is_damped_newton() {
        args.cache_dn && !args.fresh
    } else {
        !args.fresh || args.only_dn
    };
    if let Some(curve) = reuse.then(|| cache.get(task, method, seed)).flatten() {
        return Ok((curve, false));
    }
    let curve = run::train(task, method, seed, args.time_limit)?;
    // a run the time limit ended depends on the limit (and the machine's load)
    if !curve.stop.as_ref().is_some_and(|s| s.time_limit) {
        cache.put(task, method, seed, &curve)?;
    }
    Ok((curve, true))
}
