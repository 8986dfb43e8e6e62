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

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Conv2dConfig, Optimizer, VarBuilder, VarMap, SGD};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use vivit::nn as vnn;
use vivit::{
    Computation, DampedNewton, DampedNewtonConfig, DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation, Eigensolver, EighComputation, EigvalshComputation,
    ParamGroup,
};

/// Number of classes of all problems.
const CLASSES: usize = 10;
/// Standard deviation of the weights (DeepOBS's truncated-normal scale) and
/// value of the biases.
const INIT_SCALE: f32 = 0.05;
/// Seed of the weights and data, and of the Monte-Carlo draws.
const SEED: u64 = 0;
/// Iterations of the `VIVIT_BENCH_ONCE` mode: a warm-up and five calls.
const ONCE_CALLS: usize = 6;
/// The problems, in the order benchmarked.
const PROBLEMS: [&str; 5] = [
    "digits_mlp",
    "mnist_mlp",
    "fmnist_2c2d",
    "cifar10_3c3d",
    "fmnist_2c2d_bn",
];
/// The problem of the `eigh_partial` group: `mnist_mlp` with this many classes.
const PARTIAL_PROBLEM: &str = "mnist_mlp_c100";
/// Number of classes of [`PARTIAL_PROBLEM`].
const PARTIAL_CLASSES: usize = 100;

/// A model with its variables and a fixed mini-batch.
struct Problem {
    varmap: VarMap,
    model: candle_nn::Sequential,
    inputs: Tensor,
    targets: Tensor,
}

impl Problem {
    /// Builds the problem `name` of [`PROBLEMS`] from [`SEED`].
    fn new(name: &str) -> vivit::Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let relu = |x: &Tensor| x.relu();
        let (model, input_shape, classes) = match name {
            "digits_mlp" => (
                candle_nn::seq()
                    .add(vnn::linear(64, 128, vb.pp("fc1"))?)
                    .add_fn(relu)
                    .add(vnn::linear(128, 64, vb.pp("fc2"))?)
                    .add_fn(relu)
                    .add(vnn::linear(64, CLASSES, vb.pp("fc3"))?),
                vec![128, 64],
                CLASSES,
            ),
            "mnist_mlp" | PARTIAL_PROBLEM => {
                let classes = match name {
                    PARTIAL_PROBLEM => PARTIAL_CLASSES,
                    _ => CLASSES,
                };
                (
                    candle_nn::seq()
                        .add(vnn::linear(784, 1000, vb.pp("fc1"))?)
                        .add_fn(relu)
                        .add(vnn::linear(1000, 500, vb.pp("fc2"))?)
                        .add_fn(relu)
                        .add(vnn::linear(500, 100, vb.pp("fc3"))?)
                        .add_fn(relu)
                        .add(vnn::linear(100, classes, vb.pp("fc4"))?),
                    vec![64, 784],
                    classes,
                )
            }
            "fmnist_2c2d" => {
                let same = Conv2dConfig {
                    padding: 2,
                    ..Default::default()
                };
                let pool = |x: &Tensor| vnn::max_pool2d(&x.relu()?, 2, 2);
                (
                    candle_nn::seq()
                        .add(vnn::conv2d(1, 32, 5, same, vb.pp("conv1"))?)
                        .add_fn(pool)
                        .add(vnn::conv2d(32, 64, 5, same, vb.pp("conv2"))?)
                        .add_fn(move |x| pool(x)?.flatten_from(1))
                        .add(vnn::linear(7 * 7 * 64, 1024, vb.pp("fc1"))?)
                        .add_fn(relu)
                        .add(vnn::linear(1024, CLASSES, vb.pp("fc2"))?),
                    vec![32, 1, 28, 28],
                    CLASSES,
                )
            }
            "fmnist_2c2d_bn" => {
                let same = Conv2dConfig {
                    padding: 2,
                    ..Default::default()
                };
                // running statistics 0 and 1, as torch's fresh BatchNorm2d
                let bn = |c: usize, vb: VarBuilder| -> vivit::Result<vnn::BatchNorm> {
                    let (mean, var) = (
                        Tensor::zeros(c, DType::F32, &Device::Cpu)?,
                        Tensor::ones(c, DType::F32, &Device::Cpu)?,
                    );
                    let (w, b) = (vb.get(c, "weight")?, vb.get(c, "bias")?);
                    Ok(candle_nn::BatchNorm::new(c, mean, var, w, b, 1e-5)?.into())
                };
                let (bn1, bn2) = (bn(32, vb.pp("bn1"))?, bn(64, vb.pp("bn2"))?);
                let pool = |x: &Tensor| vnn::max_pool2d(&x.relu()?, 2, 2);
                (
                    candle_nn::seq()
                        .add(vnn::conv2d(1, 32, 5, same, vb.pp("conv1"))?)
                        .add_fn(move |x| pool(&bn1.forward_t(x, false)?))
                        .add(vnn::conv2d(32, 64, 5, same, vb.pp("conv2"))?)
                        .add_fn(move |x| pool(&bn2.forward_t(x, false)?)?.flatten_from(1))
                        .add(vnn::linear(7 * 7 * 64, 1024, vb.pp("fc1"))?)
                        .add_fn(relu)
                        .add(vnn::linear(1024, CLASSES, vb.pp("fc2"))?),
                    vec![32, 1, 28, 28],
                    CLASSES,
                )
            }
            "cifar10_3c3d" => {
                let padded = Conv2dConfig {
                    padding: 1,
                    ..Default::default()
                };
                // ReLU, then a 3×3/2 pool with "same" padding (one row and column
                // at the end; after the ReLU as the reference's zero padding)
                let pool = |x: &Tensor| vnn::max_pool2d_padded(&x.relu()?, 3, 2, ((0, 1), (0, 1)));
                let valid = Conv2dConfig::default();
                (
                    candle_nn::seq()
                        .add(vnn::conv2d(3, 64, 5, valid, vb.pp("conv1"))?)
                        .add_fn(pool)
                        .add(vnn::conv2d(64, 96, 3, valid, vb.pp("conv2"))?)
                        .add_fn(pool)
                        .add(vnn::conv2d(96, 128, 3, padded, vb.pp("conv3"))?)
                        .add_fn(move |x| pool(x)?.flatten_from(1))
                        .add(vnn::linear(3 * 3 * 128, 512, vb.pp("fc1"))?)
                        .add_fn(relu)
                        .add(vnn::linear(512, 256, vb.pp("fc2"))?)
                        .add_fn(relu)
                        .add(vnn::linear(256, CLASSES, vb.pp("fc3"))?),
                    vec![32, 3, 32, 32],
                    CLASSES,
                )
            }
            _ => panic!("unknown problem {name}"),
        };
        let mut rng = StdRng::seed_from_u64(SEED);
        seed_weights(&varmap, &mut rng)?;
        let inputs = normal(&input_shape, 1.0, &mut rng)?;
        let labels: Vec<u32> = (0..input_shape[0])
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let targets = Tensor::new(labels, &Device::Cpu)?;
        Ok(Self {
            varmap,
            model,
            inputs,
            targets,
        })
    }

    /// The mean cross-entropy of the mini-batch.
    fn loss(&self) -> vivit::Result<Tensor> {
        vivit::loss::cross_entropy(&self.model.forward(&self.inputs)?, &self.targets)
    }

    /// One group of all parameters, keeping the 10 leading directions.
    fn groups(&self) -> [ParamGroup; 1] {
        [ParamGroup::new(self.varmap.all_vars()).criterion(vivit::Criterion::top_k(10))]
    }
}

/// Overwrites candle's (unseeded) initialisation in name order: weights
/// `N(0, INIT_SCALE²)`, biases `INIT_SCALE`.
fn seed_weights(varmap: &VarMap, rng: &mut StdRng) -> vivit::Result<()> {
    for (name, var) in vnn::vars_by_name(varmap) {
        let value = if name.ends_with(".bias") {
            Tensor::full(INIT_SCALE, var.shape(), &Device::Cpu)?
        } else {
            normal(var.dims(), INIT_SCALE, rng)?
        };
        var.set(&value)?;
    }
    Ok(())
}

/// A tensor of i.i.d. `N(0, std²)` f32 entries from `rng`.
fn normal(shape: &[usize], std: f32, rng: &mut StdRng) -> vivit::Result<Tensor> {
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| std * rng.sample::<f32, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// The GGN a computation uses: exact, or Monte-Carlo with one sample.
#[derive(Debug, Clone, Copy)]
enum Ggn {
    Exact,
    Mc1,
}

/// Where `DampedNewton`'s step takes the gradient from.
#[derive(Debug, Clone, Copy)]
enum Gradient {
    /// `backward_step`: the gradients of the loss's backward.
    Handed,
    /// `loss.backward()` then `step_recorded`: the gradient factor pass
    /// again (what `backward_step` did before it used the handed gradients).
    Recomputed,
}

/// What one benchmark iteration runs.
#[derive(Debug, Clone, Copy)]
enum Task {
    /// Forward, backward and a plain SGD update (`candle_nn::SGD`).
    SgdStep,
    /// All eigenvalues of the GGN.
    Eigvalsh,
    /// The 10 leading eigenpairs of the GGN.
    Eigh,
    /// The 10 leading eigenpairs of the GGN with the given eigensolver.
    EighWith(Eigensolver),
    /// Directional derivatives along the 10 leading eigenvectors.
    DirectionalDerivatives(Ggn),
    /// The directionally damped Newton step along them.
    Newton(Ggn),
    /// A `DampedNewton` step with the default configuration (forward,
    /// backward and step).
    BackwardStep(Gradient),
}

/// Every benchmarked task, in order.
const TASKS: [Task; 9] = [
    Task::Eigvalsh,
    Task::Eigh,
    Task::SgdStep,
    Task::DirectionalDerivatives(Ggn::Exact),
    Task::DirectionalDerivatives(Ggn::Mc1),
    Task::Newton(Ggn::Exact),
    Task::Newton(Ggn::Mc1),
    Task::BackwardStep(Gradient::Handed),
    Task::BackwardStep(Gradient::Recomputed),
];
/// The tasks of the `eigh_partial` group.
const PARTIAL_TASKS: [Task; 2] = [
    Task::EighWith(Eigensolver::Partial),
    Task::EighWith(Eigensolver::Full),
];

impl Task {
    /// The criterion group.
    fn group(self) -> &'static str {
        match self {
            Task::SgdStep => "sgd_step",
            Task::Eigvalsh => "eigvalsh",
            Task::Eigh => "eigh",
            Task::EighWith(_) => "eigh_partial",
            Task::DirectionalDerivatives(_) => "directional_derivatives",
            Task::Newton(_) => "newton",
            Task::BackwardStep(_) => "backward_step",
        }
    }

    /// The variant, if the task has several.
    fn variant(self) -> Option<&'static str> {
        match self {
            Task::DirectionalDerivatives(ggn) | Task::Newton(ggn) => Some(match ggn {
                Ggn::Exact => "exact",
                Ggn::Mc1 => "mc1",
            }),
            Task::BackwardStep(gradient) => Some(match gradient {
                Gradient::Handed => "handed",
                Gradient::Recomputed => "recomputed",
            }),
            Task::EighWith(solver) => Some(match solver {
                Eigensolver::Partial => "partial",
                Eigensolver::Full => "full",
                Eigensolver::Auto => "auto",
            }),
            _ => None,
        }
    }

    /// The criterion id on `problem` within the group.
    fn bench_id(self, problem: &str) -> BenchmarkId {
        match self.variant() {
            Some(variant) => BenchmarkId::new(problem, variant),
            None => BenchmarkId::from_parameter(problem),
        }
    }

    /// The full id, `group/problem[/variant]`.
    fn id(self, problem: &str) -> String {
        match self.variant() {
            Some(variant) => format!("{}/{problem}/{variant}", self.group()),
            None => format!("{}/{problem}", self.group()),
        }
    }

    /// The computation of the task (`None` for the optimizer steps).
    fn computation(self, verbose: bool) -> Option<Box<dyn Computation>> {
        fn mc<C>(computation: C, ggn: Ggn, mc1: impl FnOnce(C) -> C) -> C {
            match ggn {
                Ggn::Exact => computation,
                Ggn::Mc1 => mc1(computation),
            }
        }
        Some(match self {
            Task::SgdStep | Task::BackwardStep(_) => return None,
            Task::Eigvalsh => Box::new(EigvalshComputation::new().verbose(verbose)),
            Task::Eigh => Box::new(EighComputation::new().verbose(verbose)),
            Task::EighWith(solver) => {
                Box::new(EighComputation::new().eigensolver(solver).verbose(verbose))
            }
            Task::DirectionalDerivatives(ggn) => Box::new(mc(
                DirectionalDerivativesComputation::new().verbose(verbose),
                ggn,
                |c| c.mc_samples_ggn(1).seed(SEED),
            )),
            Task::Newton(ggn) => Box::new(mc(
                DirectionalDampedNewtonComputation::new().verbose(verbose),
                ggn,
                |c| c.mc_samples_ggn(1).seed(SEED),
            )),
        })
    }

    /// One iteration on `problem`: record and compute, or an optimizer step.
    fn run(self, problem: &Problem, verbose: bool) -> vivit::Result<()> {
        if let Task::BackwardStep(gradient) = self {
            let config = DampedNewtonConfig::default().verbose(verbose);
            let mut opt = DampedNewton::from_varmap(&problem.varmap, config);
            let loss = vivit::record(|| problem.loss())?;
            return match gradient {
                Gradient::Handed => Ok(opt.backward_step(&loss)?),
                Gradient::Recomputed => {
                    // the gradients stay alive through the step, as in backward_step
                    let grads = loss.backward()?;
                    let step = opt.step_recorded(&loss).map(|_| ());
                    black_box(grads);
                    step
                }
            };
        }
        let Some(mut computation) = self.computation(verbose) else {
            let mut sgd = SGD::new(problem.varmap.all_vars(), 1e-3)?;
            return Ok(sgd.backward_step(&problem.loss()?)?);
        };
        let groups = problem.groups();
        let start = Instant::now();
        let loss = vivit::record(|| problem.loss())?;
        if verbose {
            eprintln!(
                "[bench] record: {:.1} ms",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        vivit::backward(&loss, &groups, &mut [computation.as_mut()])?;
        black_box(computation);
        Ok(())
    }
}

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
            let problem = Problem::new(name).expect("the problem builds");
            group.bench_with_input(task.bench_id(name), &problem, |b, problem| {
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
    let problem = Problem::new(PARTIAL_PROBLEM).expect("the problem builds");
    for task in PARTIAL_TASKS {
        group.bench_with_input(task.bench_id(PARTIAL_PROBLEM), &problem, |b, problem| {
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
    let problem = Problem::new(name).expect("the problem builds");
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
