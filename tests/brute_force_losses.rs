//! The token-level, masked and binary losses against the explicit GGN
//! (`common::brute_force`, with the loss formulas of `common::losses`).

mod common;

use anyhow::Result;
use candle_core::{Module, Tensor, D};
use candle_nn::VarMap;
use common::brute_force::{input, one_group, per_param, vb, Loss, Problem};
use common::ggn_checks::{check_eigen, check_newton};
use vivit::nn as vnn;

/// Logits `[3, 3, C]` of a sequence model whose positions interact within a
/// sample: `h = tanh(fc1 x)`, `m = softmax(h hᵀ/2) h` (attention without
/// projections), `f = fc2 m`, for inputs `x` `[3, 3, 3]`.
fn sequence_model(loss: Loss, outputs: usize) -> Result<Problem> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, outputs, vb(&varmap).pp("fc2"))?;
    let x = input(&[3, 3, 3], 4)?;
    let forward = move || {
        let h = fc1.forward(&x)?.tanh()?;
        let scores = (h.matmul(&h.transpose(1, 2)?)? * 0.5)?;
        let mixed = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&h)?;
        fc2.forward(&mixed)
    };
    Problem::new(varmap, forward, loss, 3)
}

#[test]
fn token_level_cross_entropy() -> Result<()> {
    let p = sequence_model(Loss::CrossEntropy, 3)?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &per_param(&p), Some(vec![2, 0]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 3)?;
    check_newton(&p, &per_param(&p), Some(vec![1, 2]), Some(vec![0, 2]), 2)
}

/// The last position of every sample is ignored: it adds nothing, and the
/// mean runs over the counted positions of the samples a computation keeps.
#[test]
fn cross_entropy_with_ignored_positions() -> Result<()> {
    let p = sequence_model(Loss::CrossEntropyIgnoring(-100), 3)?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &per_param(&p), Some(vec![1, 2]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 3)?;
    check_newton(&p, &one_group(&p), Some(vec![0, 2]), Some(vec![2, 1]), 2)
}

/// An ignore index inside `0..C` (a padding class) is ignored all the same.
#[test]
fn ignore_index_may_be_a_class() -> Result<()> {
    let p = sequence_model(Loss::CrossEntropyIgnoring(1), 3)?;
    check_eigen(&p, &one_group(&p), None, 4)?;
    check_newton(&p, &per_param(&p), None, Some(vec![0, 1]), 2)
}

#[test]
fn mse_on_sequences() -> Result<()> {
    let p = sequence_model(Loss::Mse, 2)?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &per_param(&p), Some(vec![0, 1]), 3)?;
    check_newton(&p, &one_group(&p), Some(vec![2]), None, 3)
}

/// A tanh MLP 3-4-`outputs`, its output squeezed to `[N]` for one label.
fn binary_mlp(outputs: usize, squeeze: bool) -> Result<Problem> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, outputs, vb(&varmap).pp("fc2"))?;
    let x = input(&[5, 3], 6)?;
    let forward = move || {
        let f = fc2.forward(&fc1.forward(&x)?.tanh()?)?;
        if squeeze {
            f.squeeze(1)
        } else {
            Ok(f)
        }
    };
    Problem::new(varmap, forward, Loss::Bce, 6)
}

#[test]
fn binary_cross_entropy_single_label() -> Result<()> {
    for squeeze in [true, false] {
        let p = binary_mlp(1, squeeze)?;
        check_eigen(&p, &one_group(&p), None, 4)?;
        check_eigen(&p, &per_param(&p), Some(vec![4, 1, 2]), 2)?;
        check_newton(&p, &one_group(&p), None, Some(vec![0, 3, 4]), 2)?;
    }
    Ok(())
}

#[test]
fn binary_cross_entropy_multi_label() -> Result<()> {
    let p = binary_mlp(3, false)?;
    check_eigen(&p, &one_group(&p), None, 6)?;
    check_eigen(&p, &per_param(&p), Some(vec![3, 0]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 4)?;
    check_newton(&p, &per_param(&p), Some(vec![1, 2, 3]), Some(vec![0, 4]), 2)
}

/// The binary cross-entropy's value is candle's where candle's is finite,
/// and its gradient is `(σ(f) − y)/E`, at `f = 0` too.
#[test]
fn binary_cross_entropy_value_and_gradient() -> Result<()> {
    let dev = candle_core::Device::Cpu;
    let f = candle_core::Var::new(&[[0f64, 2.5, -1.0], [30.0, -0.2, 0.0]], &dev)?;
    let y = Tensor::new(&[[1f64, 0.0, 0.3], [1.0, 1.0, 0.5]], &dev)?;
    let ours = vivit::loss::binary_cross_entropy_with_logit(f.as_tensor(), &y)?;
    let candle = candle_nn::loss::binary_cross_entropy_with_logit(f.as_tensor(), &y)?;
    let (a, b) = (ours.to_scalar::<f64>()?, candle.to_scalar::<f64>()?);
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    let grad = ours
        .backward()?
        .get(f.as_tensor())
        .expect("f is a variable")
        .clone();
    let want = ((candle_nn::ops::sigmoid(f.as_tensor())? - &y)? / 6.0)?;
    let diff = (grad - want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    assert!(diff < 1e-15, "{diff}");
    Ok(())
}
