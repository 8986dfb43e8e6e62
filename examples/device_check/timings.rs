//! Median times of the benchmark problems of `benches/computations` on one
//! device, with the memory in use.

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use vivit::{DampedNewton, DampedNewtonConfig};

use crate::problems::{Problem, PROBLEMS, TRAINING_PROBLEM};
use crate::tasks::{Ggn, Gradient, Task};

/// What is timed on every problem.
const TIMED: [Task; 5] = [
    Task::SgdStep,
    Task::Eigh,
    Task::Newton(Ggn::Exact),
    Task::Newton(Ggn::Mc1),
    Task::BackwardStep(Gradient::Handed),
];

/// Calls per task: a warm-up and this many timed ones.
const CALLS: usize = 5;

/// What is timed on the training suite's largest network.
const TRAINING_TIMED: [Task; 2] = [Task::SgdStep, Task::BackwardStep(Gradient::Handed)];

/// Prints the median seconds of [`CALLS`] calls (after a warm-up) of each
/// [`TIMED`] task on each problem (and of [`TRAINING_TIMED`] on
/// [`TRAINING_PROBLEM`]), each call ended by a device synchronization, with
/// the ratio to the problem's SGD step and the memory in use after them.
pub fn run(device: &Device) -> Result<()> {
    println!(
        "{:<44} {:>10} {:>10} {:>12}",
        "bench", "median s", "/ sgd", "memory MiB"
    );
    let timed = PROBLEMS
        .map(|name| (name, &TIMED[..]))
        .into_iter()
        .chain([(TRAINING_PROBLEM, &TRAINING_TIMED[..])]);
    for (name, tasks) in timed {
        let mut sgd = None;
        for &task in tasks {
            // afresh for each task: the steps move the weights
            let problem = Problem::new(name, device)?;
            let mut seconds = Vec::with_capacity(CALLS);
            for call in 0..=CALLS {
                let start = Instant::now();
                task.run(&problem, false)?;
                device.synchronize()?;
                if call > 0 {
                    seconds.push(start.elapsed().as_secs_f64());
                }
            }
            seconds.sort_by(f64::total_cmp);
            let median = seconds[CALLS / 2];
            let sgd = *sgd.get_or_insert(median);
            println!(
                "{:<44} {median:>10.5} {:>10.2} {:>12}",
                task.id(name),
                median / sgd,
                memory(device).map_or("n/a".into(), |m| format!("{:.0}", m as f64 / 1048576.0))
            );
        }
    }
    transfers(device)
}

/// Prints the copies between the device and the host in one `DampedNewton`
/// step (default configuration) on [`TRAINING_PROBLEM`]'s network: on a GPU
/// each copy to the host is a synchronization.
fn transfers(device: &Device) -> Result<()> {
    let problem = Problem::new(TRAINING_PROBLEM, device)?;
    let mut opt = DampedNewton::from_varmap(&problem.varmap, DampedNewtonConfig::default());
    let report = opt.step_recorded(&vivit::record(|| problem.loss())?)?;
    let moved = report.timings.transfers();
    println!(
        "DampedNewton step on {TRAINING_PROBLEM}, pass copies: {} to the host ({} bytes), \
         {} to the device ({} bytes)",
        moved.to_host, moved.to_host_bytes, moved.to_device, moved.to_device_bytes
    );
    Ok(())
}

/// Bytes in use: on a GPU the device's (total − free), on the CPU the
/// process's peak resident set.
fn memory(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            let (free, total) = candle_core::cuda::cudarc::driver::result::mem_get_info().ok()?;
            Some((total - free) as u64)
        }
        Device::Cpu => peak_rss(),
        _ => None,
    }
}

/// The peak resident set of this process (`VmHWM` of `/proc/self/status`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
