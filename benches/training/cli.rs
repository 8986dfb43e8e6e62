//! The command line of the suite: the arguments after `cargo bench --bench training --`.

use anyhow::{bail, Context, Result};

/// Seeds of a default run.
const DEFAULT_SEEDS: usize = 3;
/// Default limit on the step time of one run, in seconds.
const DEFAULT_TIME_LIMIT: f64 = 40.0;

/// What to run, parsed from the command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Task names or letters (`digits_mlp`, `c`, …); empty means all tasks.
    pub tasks: Vec<String>,
    /// Seeds `0..seeds` of every (task, optimizer, learning rate).
    pub seeds: usize,
    /// A smoke run: a tenth of the steps and one seed, nothing written to `docs/`.
    pub quick: bool,
    /// Run everything again instead of reusing cached runs.
    pub fresh: bool,
    /// Run only the DampedNewton variants; baselines come from the cache and
    /// run only where it has none (`--fresh` then applies to nothing else).
    pub only_dn: bool,
    /// Reuse cached DampedNewton runs too (they are re-run by default).
    pub cache_dn: bool,
    /// Seconds of step time after which a run ends: it stops before a step
    /// that, as long as its last one, would end past this.
    pub time_limit: f64,
    /// Print [`USAGE`] and run nothing.
    pub help: bool,
}

/// The usage text of `--help`.
pub const USAGE: &str = "\
cargo bench --bench training -- [options]

  --tasks a,b,...   tasks by name or letter (default: all)
                    a digits_mlp, b digits_cnn, c digits_autoencoder[_full],
                    d teacher_student[_full], e noisy_labels, f mnist_mlp_784
  --seeds N         seeds 0..N (default 3)
  --time-limit S    end a run before a step that would take its step time
                    past S seconds (default 40)
  --quick           a smoke run: a tenth of the steps, one seed, no docs/ output
  --fresh           ignore cached runs in target/training/runs/
  --only-dn         run the DampedNewton variants; baselines from the cache
                    (run only where missing)
  --cache-dn        reuse cached DampedNewton runs as well
  --help            this text";

impl Args {
    /// Parses `args` (without the program name). Arguments starting with
    /// `--bench` (which cargo passes) are ignored.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut parsed = Self {
            tasks: Vec::new(),
            seeds: DEFAULT_SEEDS,
            quick: false,
            fresh: false,
            only_dn: false,
            cache_dn: false,
            time_limit: DEFAULT_TIME_LIMIT,
            help: false,
        };
        let mut seeds = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = |name: &str| -> Result<String> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
            };
            match flag.as_str() {
                "--tasks" => {
                    parsed.tasks = value("--tasks")?
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect();
                }
                "--seeds" => {
                    let n: usize = value("--seeds")?
                        .parse()
                        .context("--seeds needs a positive integer")?;
                    anyhow::ensure!(n >= 1, "--seeds needs at least one seed");
                    seeds = Some(n);
                }
                "--time-limit" => {
                    let seconds: f64 = value("--time-limit")?
                        .parse()
                        .context("--time-limit needs a number of seconds")?;
                    anyhow::ensure!(seconds > 0.0, "--time-limit needs a positive time");
                    parsed.time_limit = seconds;
                }
                "--quick" => parsed.quick = true,
                "--fresh" => parsed.fresh = true,
                "--only-dn" => parsed.only_dn = true,
                "--cache-dn" => parsed.cache_dn = true,
                "--help" | "-h" => parsed.help = true,
                other if other.starts_with("--bench") => {}
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        parsed.seeds = seeds.unwrap_or(if parsed.quick { 1 } else { DEFAULT_SEEDS });
        Ok(parsed)
    }

    /// The seeds to run.
    pub fn seed_list(&self) -> Vec<u64> {
        (0..self.seeds as u64).collect()
    }
}
