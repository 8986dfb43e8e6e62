//! This crate's checks on one device: the comparisons with the fixtures of
//! vivit-for-pytorch (`tests/fixtures`, f32 to relative 1e-4, f64 to 1e-9),
//! each fixture and computation (eigvalsh, eigh, directional derivatives,
//! damped Newton steps) built and run on the device, counted and printed;
//! then the median times of the problems of `benches/computations` there
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
    let fixtures = checks::fixtures()?;
    // the checks report mismatches by panicking: print the message once, here
    panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut compared, mut failed) = (0, 0, Vec::new());
    let start = Instant::now();
    for (name, fixture) in &fixtures {
        for (check, run) in CHECKS {
            match panic::catch_unwind(AssertUnwindSafe(|| run(name, fixture))) {
                Ok(Ok(values)) => {
                    passed += 1;
                    compared += values;
                }
                Ok(Err(error)) => failed.push(format!("{name} {check}: error: {error:#}")),
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| payload.downcast_ref::<&str>().copied())
                        .unwrap_or("panicked");
                    failed.push(format!("{name} {check}: {message}"));
                }
            }
        }
    }
    let _ = panic::take_hook();
    for failure in &failed {
        println!("FAILED {failure}");
    }
    println!(
        "fixture comparisons: {passed} of {} passed ({} fixtures × {} computations, \
         {compared} values and vectors compared) in {:.1} s",
        passed + failed.len(),
        fixtures.len(),
        CHECKS.len(),
        start.elapsed().as_secs_f64()
    );
    timings::run(&device)?;
    if !failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
