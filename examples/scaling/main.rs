//! Where the time of a damped Newton step goes, and how it grows with the batch
//! size `N` and the number of classes `C`.
//!
//! ```sh
//! cargo run --release --example scaling            # the full sweeps, a few minutes
//! cargo run --release --example scaling -- --quick # a small subset, for a try
//! ```
//!
//! The model has the architecture of the benchmarks' `mnist_mlp` (Linear
//! 784-1000-500-100-C with ReLU, f32 on the CPU), initialized as in the other
//! examples (PyTorch's default, fixed seed), on random inputs and labels;
//! cross-entropy with its exact GGN, one
//! parameter group of all parameters, a top-10 criterion and constant damping
//! δ = 1; the computation is `DirectionalDampedNewtonComputation` with the
//! complement step, which is what `DampedNewton`'s default configuration runs
//! each step. Two sweeps: `N ∈ {16, 32, 64, 128, 256}` at `C = 10`, and
//! `C ∈ {10, 20, 50, 100}` at `N = 64`; the Gram matrix is `(C−1)·N` square.
//!
//! Each configuration runs in a child process (this executable again, with
//! `VIVIT_SCALING_CONFIG=N,C`): one warm-up (skipped for Gram matrices above
//! 4000 rows, where a run takes a minute), then 3 measured runs. The stages
//! are the [`vivit::Timings`] that `vivit::backward` returns:
//!
//! | stage | [`vivit::Stage`]s |
//! |---|---|
//! | forward | `vivit::record` (timed here) |
//! | factor backprop | `FactorBackprop` (GGN and gradient factors) |
//! | Gram formation | `Gram` (the full solver's Gram matrix, or the partial solver's f64 factor copies) |
//! | eigendecomposition | `Eigensolver`, `Eigenvectors` (with the partial solver's Gram products and picking the kept vectors) |
//! | γ/λ | `DirectionalDerivatives` |
//! | step | `Step`, `Cholesky` |
//! | other | `Other`, and `vivit::backward`'s time outside the pass |
//!
//! The child prints one `[scaling] stages …` line of milliseconds per run.
//! Each stage's figure is its median over the 3 runs. The table (milliseconds)
//! is printed and written to `docs/scaling.csv`, the figure to
//! `docs/scaling.png`: each stage's share of the time, stacked, against `N`
//! and against `C` (log scale), with the total time above each stack (a
//! stack of times on a log axis would misdraw the shares); `--quick` writes
//! `target/plots/scaling.{csv,png}` instead, leaving `docs/` alone.

#[path = "../common/mod.rs"]
mod common;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use common::data::Split;
use common::mlp::Mlp;
use common::plot;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vivit::{Criterion, Damping, DirectionalDampedNewtonComputation, ParamGroup, Stage};

/// Names the configuration a child process measures, as `N,C`.
const CONFIG_VAR: &str = "VIVIT_SCALING_CONFIG";
/// Prefix of the child's lines of stage times on stderr.
const MARK: &str = "[scaling] stages";
/// Measured runs per configuration, after one warm-up.
const RUNS: usize = 3;
/// Gram sides above which the warm-up is skipped: a run takes a minute
/// there, and what a warm-up absorbs (thread start-up, first allocations)
/// takes milliseconds.
const WARM_UP_UP_TO: usize = 4000;
/// Seed of the weights and of the data.
const SEED: u64 = 0;
/// Input and hidden widths of mnist_mlp; the output width is `C`.
const HIDDEN: [usize; 4] = [784, 1000, 500, 100];
/// Directions the criterion keeps.
const TOP_K: usize = 10;
/// `C` of the sweep over `N`, and `N` of the sweep over `C`.
pub(crate) const FIXED_C: usize = 10;
pub(crate) const FIXED_N: usize = 64;
const SWEEP_N: [usize; 5] = [16, 32, 64, 128, 256];
const SWEEP_C: [usize; 4] = [10, 20, 50, 100];
const QUICK_N: [usize; 3] = [16, 32, 64];
const QUICK_C: [usize; 2] = [10, 20];

/// The stages, in the order they run (and are stacked).
pub(crate) const STAGES: [&str; 7] = [
    "forward",
    "factor backprop",
    "Gram formation",
    "eigendecomposition",
    "γ/λ",
    "step",
    "other",
];

/// One measured configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) n: usize,
    pub(crate) c: usize,
}

impl Config {
    /// `N,C`, the value of [`CONFIG_VAR`].
    fn to_var(self) -> String {
        format!("{},{}", self.n, self.c)
    }

    fn from_var(value: &str) -> Result<Self> {
        let parse = |s: Option<&str>| -> Result<usize> {
            let s = s.with_context(|| format!("{CONFIG_VAR}={value:?} is not `N,C`"))?;
            let v: usize = s
                .trim()
                .parse()
                .with_context(|| format!("{CONFIG_VAR}={value:?}: {s:?} is not a count"))?;
            ensure!(v >= 2, "{CONFIG_VAR}={value:?}: N and C must be at least 2");
            Ok(v)
        };
        let mut parts = value.split(',');
        let config = Self {
            n: parse(parts.next())?,
            c: parse(parts.next())?,
        };
        ensure!(
            parts.next().is_none(),
            "{CONFIG_VAR}={value:?} is not `N,C`"
        );
        Ok(config)
    }

    /// The side of the Gram matrix, `(C−1)·N`.
    fn gram_size(self) -> usize {
        (self.c - 1) * self.n
    }
}

fn main() -> Result<()> {
    match std::env::var(CONFIG_VAR) {
        Ok(value) => child(Config::from_var(&value)?),
        Err(_) => parent(),
    }
}

// ---- the child: measure one configuration --------------------------------

/// Builds the problem, runs it once unmeasured (up to [`WARM_UP_UP_TO`]),
/// then [`RUNS`] times, each run's stage times (ms, in [`STAGES`] order) on a
/// `[scaling] stages` line.
fn child(config: Config) -> Result<()> {
    let mut widths = HIDDEN.to_vec();
    widths.push(config.c);
    let mlp = Mlp::with_widths(&widths, SEED, &Device::Cpu)?;
    let batch = random_batch(config)?;
    if config.gram_size() <= WARM_UP_UP_TO {
        run_once(&mlp, &batch)?;
    }
    for _ in 0..RUNS {
        let stages = run_once(&mlp, &batch)?;
        let line: Vec<String> = stages.iter().map(|ms| format!("{ms:.3}")).collect();
        eprintln!("{MARK} {}", line.join(" "));
    }
    Ok(())
}

/// `N` standard-normal inputs with labels uniform over the `C` classes.
fn random_batch(config: Config) -> Result<Split> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let inputs: Vec<f32> = (0..config.n * HIDDEN[0])
        .map(|_| rng.sample(rand_distr::StandardNormal))
        .collect();
    let labels: Vec<u32> = (0..config.n)
        .map(|_| rng.random_range(0..config.c as u32))
        .collect();
    Ok(Split {
        images: Tensor::from_vec(inputs, (config.n, HIDDEN[0]), &Device::Cpu)?,
        labels: Tensor::from_vec(labels, config.n, &Device::Cpu)?,
    })
}

/// One forward pass and damped Newton step; the milliseconds of each stage.
fn run_once(mlp: &Mlp, batch: &Split) -> Result<Stages> {
    let groups = [ParamGroup::new(mlp.vars())
        .criterion(Criterion::top_k(TOP_K))
        .damping(Damping::constant(1.0))];
    let mut newton = DirectionalDampedNewtonComputation::new().complement(true);
    let start = Instant::now();
    let loss = mlp.record_loss(batch)?;
    let forward = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let timings = vivit::backward(&loss, &groups, &mut [&mut newton])?;
    let backward = start.elapsed().as_secs_f64();
    let secs =
        |stages: &[Stage]| -> f64 { stages.iter().map(|&s| timings.total(s).as_secs_f64()).sum() };
    let outside = (backward - timings.elapsed().as_secs_f64()).max(0.0);
    let times = [
        forward,
        secs(&[Stage::FactorBackprop]),
        secs(&[Stage::Gram]),
        secs(&[Stage::Eigensolver, Stage::Eigenvectors]),
        secs(&[Stage::DirectionalDerivatives]),
        secs(&[Stage::Step, Stage::Cholesky]),
        secs(&[Stage::Other]) + outside,
    ];
    Ok(times.map(|t| t * 1e3))
}

// ---- the parent: run the children, tabulate, plot ------------------------

/// Milliseconds per stage ([`STAGES`]) of one configuration.
pub(crate) type Stages = [f64; STAGES.len()];

fn parent() -> Result<()> {
    let quick = quick_flag()?;
    let (sweep_n, sweep_c) = if quick {
        (&QUICK_N[..], &QUICK_C[..])
    } else {
        (&SWEEP_N[..], &SWEEP_C[..])
    };
    let mut configs: Vec<Config> = sweep_n.iter().map(|&n| Config { n, c: FIXED_C }).collect();
    for &c in sweep_c {
        let config = Config { n: FIXED_N, c };
        if !configs.contains(&config) {
            configs.push(config);
        }
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut results = Vec::new();
    for config in configs {
        eprintln!(
            "measuring N = {}, C = {} (Gram {2}×{2}) …",
            config.n,
            config.c,
            config.gram_size()
        );
        let started = Instant::now();
        let stages = measure(&exe, config)?;
        eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
        results.push((config, stages));
    }
    let table = report::table(&results);
    print!("{table}");
    let (csv, png) = output_paths(quick)?;
    std::fs::write(&csv, report::csv_text(&results))
        .with_context(|| format!("writing {}", csv.display()))?;
    report::figure(&png, &results, sweep_n, sweep_c)?;
    println!("table: {}\nfigure: {}", csv.display(), png.display());
    Ok(())
}

/// Whether `--quick` was given (the only argument there is).
fn quick_flag() -> Result<bool> {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            other => bail!("unknown argument {other:?}; usage: scaling [--quick]"),
        }
    }
    Ok(quick)
}

/// `docs/scaling.{csv,png}`, or under `target/plots/` for a quick run.
fn output_paths(quick: bool) -> Result<(PathBuf, PathBuf)> {
    let png = if quick {
        plot::output_path("scaling")?
    } else {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        dir.join("scaling.png")
    };
    Ok((png.with_extension("csv"), png))
}

/// Runs the child for `config` and returns its median stage times.
fn measure(exe: &Path, config: Config) -> Result<Stages> {
    let output = Command::new(exe)
        .env(CONFIG_VAR, config.to_var())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "the run for N = {}, C = {} failed ({}):\n{stderr}",
        config.n,
        config.c,
        output.status
    );
    let runs = parse_runs(&stderr)?;
    ensure!(
        runs.len() == RUNS,
        "expected {RUNS} runs in the child's output, found {}:\n{stderr}",
        runs.len()
    );
    Ok(medians(&runs))
}

/// The stage times of each run in a child's stderr (its `[scaling] stages`
/// lines).
fn parse_runs(stderr: &str) -> Result<Vec<Stages>> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix(MARK))
        .map(|rest| {
            let values: Vec<f64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("unexpected line {rest:?}"))?;
            Stages::try_from(values.as_slice())
                .with_context(|| format!("expected {} stages in {rest:?}", STAGES.len()))
        })
        .collect()
}

/// The median of each stage over `runs` (not empty).
fn medians(runs: &[Stages]) -> Stages {
    std::array::from_fn(|stage| {
        let mut values: Vec<f64> = runs.iter().map(|r| r[stage]).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    })
}
