//! Memory stays flat over a long `DampedNewton` run on the bundled digits.
//!
//! Ignored by default; `.ci/run` runs it with a bounded step count:
//!
//! ```sh
//! VIVIT_LONG_RUN_STEPS=3000 cargo test --test long_run -- --ignored --nocapture
//! ```
//!
//! It trains a 64-32-10 ReLU MLP (f32, mini-batches of 16, default
//! configuration) and reads the resident set size (`VmRSS` of
//! `/proc/self/status`) after a warm-up of a tenth of the steps and at the
//! end. A tape leaked per step would hold at least the batch's inputs and
//! activations, `16·(64+32+10)` f32 values (6.8 kB); the growth allowed after
//! warm-up is a quarter of that per step, so leaking even part of one tape a
//! step fails.

#[allow(dead_code)]
#[path = "../examples/common/batches.rs"]
mod batches;
mod common;
#[allow(dead_code)]
#[path = "../examples/common/data.rs"]
mod data;

use anyhow::{Context, Result};
use batches::Batches;
use candle_core::{DType, Device};
use candle_nn::optim::Optimizer;
use common::mlp::Mlp;
use data::Digits;
use vivit::{DampedNewton, DampedNewtonConfig};

const WIDTHS: [usize; 3] = [64, 32, 10];
const BATCH: usize = 16;

/// Resident set size in bytes.
fn resident() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

#[test]
#[ignore = "long: run by .ci/run with VIVIT_LONG_RUN_STEPS"]
fn resident_memory_stays_flat() -> Result<()> {
    let steps: usize = match std::env::var("VIVIT_LONG_RUN_STEPS") {
        Ok(s) => s.parse().context("VIVIT_LONG_RUN_STEPS")?,
        Err(_) => 3000,
    };
    let warm_up = steps / 10;
    let dev = Device::Cpu;
    let digits = Digits::load(&dev)?;
    let mlp = Mlp::new(WIDTHS[0], WIDTHS[1], WIDTHS[2], DType::F32)?;
    let mut opt = DampedNewton::from_varmap(&mlp.varmap, DampedNewtonConfig::default());
    let mut batches = Batches::new(&digits.train, BATCH, 0)?;

    let start = resident()?;
    let mut after_warm_up = start;
    let mut first_loss = None;
    let mut last_loss = 0.0;
    for step in 0..steps {
        if step == warm_up {
            after_warm_up = resident()?;
        }
        let batch = batches.next_batch()?;
        let loss =
            vivit::record(|| vivit::loss::cross_entropy(&mlp.relu(&batch.images)?, &batch.labels))?;
        last_loss = loss.to_scalar::<f32>()?;
        first_loss.get_or_insert(last_loss);
        opt.backward_step(&loss)?;
    }
    let end = resident()?;

    let per_step = (BATCH * WIDTHS.iter().sum::<usize>() * 4) as u64;
    let bound = (steps - warm_up) as u64 * per_step / 4;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "long run: {steps} steps, loss {:.3} → {last_loss:.3}; RSS {:.1} MiB at start, \
         {:.1} MiB after {warm_up} warm-up steps, {:.1} MiB at the end \
         (growth {:+.2} MiB, bound {:.2} MiB)",
        first_loss.unwrap_or(f32::NAN),
        mib(start),
        mib(after_warm_up),
        mib(end),
        (end as f64 - after_warm_up as f64) / (1024.0 * 1024.0),
        mib(bound)
    );
    assert!(
        end <= after_warm_up + bound,
        "resident memory grew by {:.2} MiB after warm-up (bound {:.2} MiB)",
        mib(end - after_warm_up),
        mib(bound)
    );
    Ok(())
}
