//! Benchmarks of the GGN computations against a plain SGD step.
//!
//! Groups `eigvalsh`, `eigh`, `sgd_step`, `directional_derivatives` and
//! `newton` (`DirectionalDampedNewtonComputation`, constant damping 1, the
//! group default), the last two in an exact (`…/exact`) and a Monte-Carlo
//! (`…/mc1`: `mc_samples_ggn(1)`, fixed seed) variant, and `backward_step`:
//! a `DampedNewton` step with the default configuration by `backward_step`
//! (`…/handed`: the step takes the backward's gradients) and by
//! `loss.backward()` then `step_recorded` (`…/recomputed`: the gradient
//! factor pass again). All run on the problems below, f32 on the CPU, cross-entropy, C = 10, one parameter group of all
//! parameters with a top-10 criterion, random data and weights from a fixed seed
//! (weights `N(0, 0.05²)`, biases 0.05); max pooling is `vivit::nn::max_pool2d`
//! or `max_pool2d_padded` (candle 0.10.2's has a wrong backward):
//!
//! - `digits_mlp`: Linear 64-128-64-10 with ReLU, N = 128;
//! - `mnist_mlp`: DeepOBS's `mnist_mlp`, Linear 784-1000-500-100-10 with ReLU, N = 64;
//! - `fmnist_2c2d`: DeepOBS's `fmnist_2c2d` on 28×28×1 inputs, N = 32:
//!   conv(1→32, 5×5) ReLU maxpool 2×2, conv(32→64, 5×5) ReLU maxpool 2×2,
//!   linear(3136→1024) ReLU, linear(1024→10). DeepOBS uses TensorFlow's
//!   "same" padding, which for a 5×5 kernel at stride 1 is a symmetric padding
//!   of 2 (and none for its 2×2 pools on even sizes), so padding 2 here;
//! - `cifar10_3c3d`: DeepOBS's `cifar10_3c3d` on 32×32×3 inputs, N = 32:
//!   conv(3→64, 5×5, valid) ReLU maxpool 3×3/2, conv(64→96, 3×3, valid) ReLU
//!   maxpool 3×3/2, conv(96→128, 3×3, padding 1) ReLU maxpool 3×3/2,
//!   linear(1152→512) ReLU, linear(512→256) ReLU, linear(256→10); the pools'
//!   "same" padding is one row and column at the end (`max_pool2d_padded`; the
//!   reference pads with zeros, which after a ReLU pad like −∞);
//! - `fmnist_2c2d_bn`: `fmnist_2c2d` with a BatchNorm in evaluation mode
//!   (running statistics 0 and 1) after each convolution.
//!
//! Group `eigh_partial` compares the eigensolvers where the partial one is
//! meant to pay: `mnist_mlp_c100` (`mnist_mlp` with C = 100 outputs, N = 64,
//! so a 6,336² Gram matrix for the exact cross-entropy factor, f32), the top-10
//! eigenpairs with `Eigensolver::Partial` (`…/partial`) and `Eigensolver::Full`
//! (`…/full`). It takes 10 flat samples (criterion's minimum): about 2 minutes
//! for the partial solver and 8 for the full one on 2 busy cores.
//!
//! One measured iteration is what a user pays: `vivit::record` (forward) plus
//! the computation; the SGD step is forward, backward and update. Bench ids are
//! `group/problem` or `group/problem/variant`, e.g. `newton/mnist_mlp/exact`;
//! criterion filters by substring. The reference figures of vivit-for-pytorch
//! come from `benches/reference/compare.py`.
//!
//! ```text
//! cargo bench --bench computations                    # everything (~10 min)
//! cargo bench --bench computations -- newton/digits   # a subset
//! cargo bench --bench computations -- eigh_partial     # the eigensolvers
//! ```
//!
//! Without criterion, for peak memory (what `compare.py` does) or profiling:
//! `VIVIT_BENCH_ONCE=<bench id>` runs that iteration 6 times (a warm-up and
//! five calls, as `compare.py` times the reference), prints the
//! seconds of each and exits; `VIVIT_BENCH_VERBOSE=1` additionally turns on
//! the computation's `verbose` output (timestamped stages, on stderr) and
//! prints the time `vivit::record` takes.
//!
//! ```text
//! VIVIT_BENCH_ONCE=newton/mnist_mlp/exact VIVIT_BENCH_VERBOSE=1 \
//!     target/release/deps/computations-<hash>
//! ```

mod problems;
mod tasks;

use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, SamplingMode};

use problems::{Problem, PARTIAL_PROBLEM, PROBLEMS};
use tasks::{Task, PARTIAL_TASKS, TASKS};

/// Iterations of the `VIVIT_BENCH_ONCE` mode: a warm-up and five calls.
const ONCE_CALLS: usize = 6;
/// Every task on every problem, the problems built afresh (and identically)
/// for each task, as the SGD step moves the weights.
fn benches(c: &mut Criterion) {
    for task in TASKS {
        let mut group = c.benchmark_group(task.group());
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for name in PROBLEMS {
            let problem = Problem::new(name, &Device::Cpu).expect("the problem builds");
            group.bench_with_input(bench_id(task, name), &problem, |b, problem| {
                b.iter(|| task.run(problem, false).expect("the iteration runs"))
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("eigh_partial");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let problem = Problem::new(PARTIAL_PROBLEM, &Device::Cpu).expect("the problem builds");
    for task in PARTIAL_TASKS {
        group.bench_with_input(bench_id(task, PARTIAL_PROBLEM), &problem, |b, problem| {
            b.iter(|| task.run(problem, false).expect("the iteration runs"))
        });
    }
    group.finish();
}

/// The `VIVIT_BENCH_ONCE` mode: [`ONCE_CALLS`] iterations of bench `id`.
fn once(id: &str) {
    let (task, name) = TASKS
        .iter()
        .flat_map(|&task| PROBLEMS.map(|name| (task, name)))
        .chain(PARTIAL_TASKS.map(|task| (task, PARTIAL_PROBLEM)))
        .find(|&(task, name)| task.id(name) == id)
        .unwrap_or_else(|| panic!("no bench {id:?}"));
    let verbose = std::env::var_os("VIVIT_BENCH_VERBOSE").is_some_and(|v| v != "0");
    let problem = Problem::new(name, &Device::Cpu).expect("the problem builds");
    for _ in 0..ONCE_CALLS {
        let start = Instant::now();
        task.run(&problem, verbose).expect("the iteration runs");
        println!("{id}: {:.6} s", start.elapsed().as_secs_f64());
    }
}

fn main() {
    if let Ok(id) = std::env::var("VIVIT_BENCH_ONCE") {
        return once(&id);
    }
    // Plots need system fonts (plotters panics without them, e.g. on CI images);
    // the estimates in target/criterion are all `compare.py` reads.
    let mut c = Criterion::default().without_plots().configure_from_args();
    benches(&mut c);
    c.final_summary();
}

/// The criterion id of `task` on `problem` within its group.
fn bench_id(task: Task, problem: &str) -> BenchmarkId {
    match task.variant() {
        Some(variant) => BenchmarkId::new(problem, variant),
        None => BenchmarkId::from_parameter(problem),
    }
}
