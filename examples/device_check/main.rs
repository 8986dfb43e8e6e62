//! This crate's checks on one device: the comparisons with the fixtures of
//! vivit-for-pytorch (`tests/fixtures`, f32 to relative 1e-4, f64 to 1e-9),
//! each fixture and computation (eigvalsh, eigh, directional derivatives,
//! damped Newton steps) built and run on the device, counted and printed;
//! the property tests' comparisons with the explicit GGN on random
//! architectures there (`brute_force.rs`); then the median times of the problems of `benches/computations` there
//! (an SGD step, eigh top-10, the damped Newton step exact and Monte-Carlo,
//! a `DampedNewton` step), and the memory in use.
//!
//! ```text
//! cargo run --release --example device_check            # GPU 0 if built with `cuda` and present, else the CPU
//! cargo run --release --example device_check -- cpu     # the CPU
//! scripts/build-cuda.sh                                 # the `cuda` build: .cuda-build/bin/device_check
//! ```
//!
//! A binary run away from the repository finds the fixtures in the folder
//! `VIVIT_FIXTURES` names. The exit status is 1 if any comparison failed.

#[path = "../../tests/common/mod.rs"]
mod common;
// the benchmarks' problems and tasks, of which only some are timed here
mod brute_force;
#[path = "../../benches/computations/problems.rs"]
#[allow(dead_code)]
mod problems;
#[path = "../../benches/computations/tasks.rs"]
#[allow(dead_code)]
mod tasks;
mod timings;

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use common::reference_checks as checks;
use serde_json::Value;

/// A comparison of one fixture: how many values it compared.
type Check = fn(&str, &Value) -> Result<usize>;

const CHECKS: [(&str, Check); 4] = [
    ("eigvalsh", checks::eigvalsh),
    ("eigh", |name, fixture| {
        checks::eigh(name, fixture).map(|(values, vectors)| values + vectors)
    }),
    ("directional_derivatives", checks::directional_derivatives),
    ("newton", checks::newton),
];

fn main() -> Result<()> {
    let device = match std::env::args().nth(1).as_deref() {
        Some("cpu") => Device::Cpu,
        Some("cuda") => Device::new_cuda(0)?,
        _ => Device::cuda_if_available(0)?,
    };
    println!("device: {:?}", device.location());
    common::set_device(device.clone());
    // the checks report mismatches by panicking: their messages are printed here
    panic::set_hook(Box::new(|_| {}));
    let fixtures = checks::fixtures()?;
    let mut failed = 0;
    let start = Instant::now();
    let (mut passed, mut compared) = (0, 0);
    for (name, fixture) in &fixtures {
        for (check, run) in CHECKS {
            match outcome(|| run(name, fixture)) {
                Ok(values) => (passed, compared) = (passed + 1, compared + values),
                Err(message) => {
                    println!("FAILED {name} {check}: {message}");
                    failed += 1;
                }
            }
        }
    }
    println!(
        "fixture comparisons: {passed} of {} passed ({} fixtures × {} computations, \
         {compared} values and vectors compared) in {:.1} s",
        fixtures.len() * CHECKS.len(),
        fixtures.len(),
        CHECKS.len(),
        start.elapsed().as_secs_f64()
    );
    failed += brute_force::run();
    let _ = panic::take_hook();
    timings::run(&device)?;
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// What `check` returned, or its error or panic message.
fn outcome<T>(check: impl FnOnce() -> Result<T>) -> std::result::Result<T, String> {
    match panic::catch_unwind(AssertUnwindSafe(check)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("error: {error:#}")),
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())),
    }
}
