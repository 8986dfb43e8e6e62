//! Benchmarks of the GGN computations against a plain SGD step.
//!
//! Groups `eigvalsh`, `eigh` (top-10 criterion) and `sgd_step`, each on two
//! problems, f32 on the CPU, cross-entropy, one parameter group of all
//! parameters, random data and weights from a fixed seed:
//!
//! - `digits_mlp`: Linear 64-128-64-10 with ReLU, N = 128;
//! - `fmnist_2c2d`: DeepOBS's `fmnist_2c2d` on 28×28×1 inputs, N = 32:
//!   conv(1→32, 5×5) ReLU maxpool 2×2, conv(32→64, 5×5) ReLU maxpool 2×2,
//!   linear(3136→1024) ReLU, linear(1024→10). DeepOBS uses TensorFlow's
//!   "same" padding, which for a 5×5 kernel at stride 1 is a symmetric padding
//!   of 2 (and none for its 2×2 pools on even sizes), so padding 2 here.
//!
//! One measured iteration is what a user pays: `vivit::record` (forward) plus
//! the computation; the SGD step is forward, backward and update. The reference
//! figures of vivit-for-pytorch come from `benches/reference/compare.py`.
//!
//! ```text
//! cargo bench --bench computations
//! ```

use std::hint::black_box;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, Optimizer, VarBuilder, VarMap, SGD};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use vivit::nn as vnn;
use vivit::{EighComputation, EigvalshComputation, ParamGroup};

/// Number of classes of both problems.
const CLASSES: usize = 10;
/// Standard deviation of the weights (DeepOBS's truncated-normal scale) and
/// value of the biases.
const INIT_SCALE: f32 = 0.05;

/// A model with its variables and a fixed mini-batch.
struct Problem {
    name: &'static str,
    varmap: VarMap,
    model: candle_nn::Sequential,
    inputs: Tensor,
    targets: Tensor,
}

impl Problem {
    /// The mean cross-entropy of the mini-batch.
    fn loss(&self) -> vivit::Result<Tensor> {
        vivit::loss::cross_entropy(&self.model.forward(&self.inputs)?, &self.targets)
    }

    /// One group of all parameters, keeping the 10 leading directions.
    fn groups(&self) -> [ParamGroup; 1] {
        [ParamGroup::new(self.varmap.all_vars()).criterion(vivit::Criterion::top_k(10))]
    }
}

/// `digits_mlp`: Linear 64-128-64-10 with ReLU on N = 128 samples.
fn digits_mlp(rng: &mut StdRng) -> vivit::Result<Problem> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = candle_nn::seq()
        .add(vnn::linear(64, 128, vb.pp("fc1"))?)
        .add_fn(|x| x.relu())
        .add(vnn::linear(128, 64, vb.pp("fc2"))?)
        .add_fn(|x| x.relu())
        .add(vnn::linear(64, CLASSES, vb.pp("fc3"))?);
    problem("digits_mlp", varmap, model, &[128, 64], rng)
}

/// `fmnist_2c2d`: DeepOBS's two-conv two-dense net on N = 32 images 28×28×1.
fn fmnist_2c2d(rng: &mut StdRng) -> vivit::Result<Problem> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let same = Conv2dConfig {
        padding: 2,
        ..Default::default()
    };
    let model = candle_nn::seq()
        .add(vnn::conv2d(1, 32, 5, same, vb.pp("conv1"))?)
        .add_fn(|x| x.relu()?.max_pool2d(2))
        .add(vnn::conv2d(32, 64, 5, same, vb.pp("conv2"))?)
        .add_fn(|x| x.relu()?.max_pool2d(2)?.flatten_from(1))
        .add(vnn::linear(7 * 7 * 64, 1024, vb.pp("fc1"))?)
        .add_fn(|x| x.relu())
        .add(vnn::linear(1024, CLASSES, vb.pp("fc2"))?);
    problem("fmnist_2c2d", varmap, model, &[32, 1, 28, 28], rng)
}

/// Seeds the weights and draws a standard-normal input batch of `input_shape`
/// with uniform random class targets.
fn problem(
    name: &'static str,
    varmap: VarMap,
    model: candle_nn::Sequential,
    input_shape: &[usize],
    rng: &mut StdRng,
) -> vivit::Result<Problem> {
    seed_weights(&varmap, rng)?;
    let inputs = normal(input_shape, 1.0, rng)?;
    let labels: Vec<u32> = (0..input_shape[0])
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    let targets = Tensor::new(labels, &Device::Cpu)?;
    Ok(Problem {
        name,
        varmap,
        model,
        inputs,
        targets,
    })
}

/// Overwrites candle's (unseeded) initialisation in name order: weights
/// `N(0, INIT_SCALE²)`, biases `INIT_SCALE`.
fn seed_weights(varmap: &VarMap, rng: &mut StdRng) -> vivit::Result<()> {
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
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

/// Both problems, built afresh (and identically) for every benchmark group.
fn problems() -> vivit::Result<[Problem; 2]> {
    let mut rng = StdRng::seed_from_u64(0);
    Ok([digits_mlp(&mut rng)?, fmnist_2c2d(&mut rng)?])
}

/// Runs `iteration` on every problem in its own benchmark of `group`.
fn bench_problems(
    c: &mut Criterion,
    group: &str,
    iteration: impl Fn(&Problem) -> vivit::Result<()>,
) {
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for problem in problems().expect("the problems build") {
        group.bench_function(problem.name, |b| {
            b.iter(|| iteration(&problem).expect("the iteration runs"))
        });
    }
    group.finish();
}

/// All eigenvalues of the GGN: record the forward pass, then `EigvalshComputation`.
fn eigvalsh(c: &mut Criterion) {
    bench_problems(c, "eigvalsh", |problem| {
        let groups = problem.groups();
        let loss = vivit::record(|| problem.loss())?;
        let mut computation = EigvalshComputation::new();
        computation.compute(&loss, &groups)?;
        black_box(computation.result(&groups[0])?);
        Ok(())
    });
}

/// The 10 leading eigenpairs of the GGN: record, then `EighComputation`.
fn eigh(c: &mut Criterion) {
    bench_problems(c, "eigh", |problem| {
        let groups = problem.groups();
        let loss = vivit::record(|| problem.loss())?;
        let mut computation = EighComputation::new();
        computation.compute(&loss, &groups)?;
        black_box(computation.result(&groups[0])?);
        Ok(())
    });
}

/// Baseline: forward, backward and a plain SGD update (`candle_nn::SGD`).
fn sgd_step(c: &mut Criterion) {
    bench_problems(c, "sgd_step", |problem| {
        let mut sgd = SGD::new(problem.varmap.all_vars(), 1e-3)?;
        sgd.backward_step(&problem.loss()?)?;
        Ok(())
    });
}

criterion_group! {
    name = benches;
    // Plots need system fonts (plotters panics without them, e.g. on CI images);
    // the estimates in target/criterion are all `compare.py` reads.
    config = Criterion::default().without_plots();
    targets = eigvalsh, eigh, sgd_step
}
criterion_main!(benches);
