//! Concurrency: the public types are `Send` and `Sync`, and two models
//! trained in two threads at once end bit-identical to the same runs one
//! after the other (the recording scope is per thread; nothing else is shared).

mod common;

use std::thread;

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::optim::Optimizer;
use candle_nn::{VarBuilder, VarMap};
use common::brute_force::input;
use common::mlp::Mlp;
use vivit::{
    nn as vnn, Criterion, DampedNewton, DampedNewtonConfig, Damping,
    DirectionalDampedNewtonComputation, DirectionalDerivativesComputation, EighComputation,
    EigvalshComputation, Error, ParamGroup, Recorded,
};

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Recorded>();
    send_sync::<EigvalshComputation>();
    send_sync::<EighComputation>();
    send_sync::<DirectionalDerivativesComputation>();
    send_sync::<DirectionalDampedNewtonComputation>();
    send_sync::<DampedNewton>();
    send_sync::<DampedNewtonConfig>();
    send_sync::<ParamGroup>();
    send_sync::<Criterion>();
    send_sync::<Damping>();
    send_sync::<Error>();
}

/// How a run trains: exact GGN, or a seeded Monte-Carlo GGN.
#[derive(Debug, Clone, Copy)]
enum Run {
    Exact,
    MonteCarlo,
}

/// Trains a 6-8-3 tanh MLP (f32, weights and data from `seed`) for 30
/// `DampedNewton` steps; the bits of every loss and final parameter.
fn train(run: Run, seed: u64) -> Result<Vec<u32>> {
    let dev = Device::Cpu;
    let mlp = Mlp::new(6, 8, 3, DType::F32)?;
    let mut opt = DampedNewton::from_varmap(&mlp.varmap, config(run));
    let vars = mlp.vars();
    for (k, var) in vars.iter().enumerate() {
        var.set(&input(var.dims(), seed * 10 + k as u64)?.to_dtype(DType::F32)?)?;
    }
    let x = input(&[24, 6], seed + 100)?.to_dtype(DType::F32)?;
    let y: Vec<u32> = (0..24).map(|n| (n * 7 + seed as u32) % 3).collect();
    let y = Tensor::new(y.as_slice(), &dev)?;
    let mut bits = Vec::new();
    for _ in 0..30 {
        let loss = vivit::record(|| vivit::loss::cross_entropy(&mlp.tanh(&x)?, &y))?;
        bits.push(loss.to_scalar::<f32>()?.to_bits());
        opt.backward_step(&loss)?;
    }
    for var in &vars {
        bits.extend(
            var.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|v| v.to_bits()),
        );
    }
    Ok(bits)
}

fn config(run: Run) -> DampedNewtonConfig {
    match run {
        Run::Exact => DampedNewtonConfig::default(),
        Run::MonteCarlo => DampedNewtonConfig::default().mc_samples_ggn(2).seed(3),
    }
}

#[test]
fn two_threads_train_bit_identically_to_one_after_the_other() -> Result<()> {
    for (a, b) in [(Run::Exact, Run::Exact), (Run::Exact, Run::MonteCarlo)] {
        let sequential = [train(a, 1)?, train(b, 2)?];
        let concurrent = thread::scope(|s| -> Result<[Vec<u32>; 2]> {
            let first = s.spawn(move || train(a, 1));
            let second = s.spawn(move || train(b, 2));
            let join = |h: thread::ScopedJoinHandle<'_, Result<Vec<u32>>>| {
                h.join().expect("the training thread panicked")
            };
            Ok([join(first)?, join(second)?])
        })?;
        assert!(
            sequential == concurrent,
            "{a:?} and {b:?}: concurrent runs differ from sequential ones"
        );
    }
    Ok(())
}

/// A `Recorded` made on one thread is computed on by another with the same result.
#[test]
fn a_recorded_loss_moves_to_another_thread() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
    let fc = vnn::linear(4, 3, vb.pp("fc"))?;
    let x = input(&[5, 4], 3)?;
    let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
    let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
    let groups = vec![ParamGroup::new(varmap.all_vars()).criterion(Criterion::top_k(2))];
    let evals = |loss: &Recorded, groups: &[ParamGroup]| -> vivit::Result<Vec<f64>> {
        let mut eigh = EighComputation::new();
        eigh.compute(loss, groups)?;
        Ok(eigh.result(&groups[0])?.evals.to_vec1::<f64>()?)
    };
    let here = evals(&loss, &groups)?;
    let there = thread::spawn(move || evals(&loss, &groups))
        .join()
        .expect("the thread panicked")?;
    assert_eq!(here, there);
    Ok(())
}
