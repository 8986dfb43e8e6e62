//! Every computation against the explicit GGN of hand-picked tiny f64 nets
//! (the explicit GGN and the comparisons live in `common::brute_force`;
//! `properties.rs` draws random nets).

mod common;

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv1dConfig, Conv2dConfig, VarMap};
use common::brute_force::{input, one_group, per_param, strided_conv, tanh_mlp, vb, Loss, Problem};
use common::ggn_checks::{check_eigen, check_newton};
use vivit::nn as vnn;

fn mlp(loss: Loss) -> Result<Problem> {
    tanh_mlp(loss, 4, 1)
}

#[test]
fn mlp_cross_entropy() -> Result<()> {
    let p = mlp(Loss::CrossEntropy)?;
    check_eigen(&p, &one_group(&p), None, 4)?;
    check_eigen(&p, &per_param(&p), None, 2)?;
    check_eigen(&p, &one_group(&p), Some(vec![3, 1]), 3)
}

#[test]
fn mlp_mse() -> Result<()> {
    let p = mlp(Loss::Mse)?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &[vec![0, 1], vec![2, 3]], Some(vec![2, 0, 1]), 2)
}

/// `h = tanh(fc1 x)`, `r = h + sigmoid(fc2 h)`, `f = fc3 r`: a residual block,
/// which the reference (BackPACK) cannot take without rewriting the model.
#[test]
fn residual_net() -> Result<()> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, 4, vb(&varmap).pp("fc2"))?;
    let fc3 = vnn::linear_no_bias(4, 3, vb(&varmap).pp("fc3"))?;
    let x = input(&[5, 3], 2)?;
    let forward = move || {
        let h = fc1.forward(&x)?.tanh()?;
        let r = (&h + candle_nn::ops::sigmoid(&fc2.forward(&h)?)?)?;
        fc3.forward(&r)
    };
    for loss in [Loss::CrossEntropy, Loss::Mse] {
        let p = Problem::new(varmap.clone(), forward.clone(), loss, 2)?;
        check_eigen(&p, &one_group(&p), None, 6)?;
        check_eigen(&p, &per_param(&p), Some(vec![4, 0]), 3)?;
    }
    Ok(())
}

/// One linear layer applied twice (shared weights) and to `[N, T, I]` inputs.
#[test]
fn shared_weights_and_extra_axes() -> Result<()> {
    let varmap = VarMap::new();
    let fc = vnn::linear(3, 3, vb(&varmap).pp("fc"))?;
    let head = vnn::linear(6, 2, vb(&varmap).pp("head"))?;
    let x = input(&[4, 2, 3], 3)?;
    let p = Problem::new(
        varmap,
        move || {
            head.forward(
                &fc.forward(&fc.forward(&x)?.tanh()?)?
                    .tanh()?
                    .flatten_from(1)?,
            )
        },
        Loss::CrossEntropy,
        3,
    )?;
    check_eigen(&p, &one_group(&p), None, 4)?;
    check_eigen(&p, &per_param(&p), Some(vec![1, 2]), 2)
}

/// Strided, padded and dilated convolutions; the second one's output
/// gradients (a 2×2 max pooling behind it) are at most a quarter nonzero,
/// so its input-Jacobian transpose in every factor pass is the scatter of
/// `src/kernels/cpu/patches/scatter.rs` (dilation 2, padding 2), not the product and
/// col2im.
#[test]
fn conv2d_stride_padding_dilation() -> Result<()> {
    let varmap = VarMap::new();
    let cfg1 = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let cfg2 = Conv2dConfig {
        padding: 2,
        dilation: 2,
        ..Default::default()
    };
    let conv1 = vnn::conv2d(2, 9, 3, cfg1, vb(&varmap).pp("conv1"))?;
    let conv2 = vnn::conv2d_no_bias(9, 2, 3, cfg2, vb(&varmap).pp("conv2"))?;
    let fc = vnn::linear(8, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[3, 2, 8, 8], 4)?; // square: candle's conv2d backward errs on [7, 8] with stride 2
    let p = Problem::new(
        varmap,
        move || {
            let h = conv1.forward(&x)?.relu()?; // [3, 9, 4, 4]
            let h = vivit::nn::max_pool2d(&conv2.forward(&h)?.tanh()?, 2, 2)?; // [3, 2, 2, 2]
            fc.forward(&h.flatten_from(1)?)
        },
        Loss::CrossEntropy,
        4,
    )?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &per_param(&p), Some(vec![2, 0]), 2)
}

/// A convolution with 144 inputs per position behind a ReLU and a max
/// pooling, 4 classes (3 loss-factor columns): its output signals are at most
/// a quarter nonzero, so its weight factor is formed on their support
/// (`src/kernels/cpu/support.rs`), not by the dense product. With the ReLU
/// after the pooling (the README's cheaper order) the explicit GGN is the
/// same.
#[test]
fn conv2d_relu_max_pool_factor_on_the_support() -> Result<()> {
    let varmap = VarMap::new();
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let conv = vnn::conv2d(16, 4, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vnn::linear(36, 4, vb(&varmap).pp("fc"))?;
    let x = input(&[2, 16, 6, 6], 6)?;
    let (conv2, fc2, x2) = (conv.clone(), fc.clone(), x.clone());
    let p = Problem::new(
        varmap.clone(),
        move || {
            let h = vivit::nn::max_pool2d(&conv.forward(&x)?.relu()?, 2, 2)?; // [2, 4, 3, 3]
            fc.forward(&h.flatten_from(1)?)
        },
        Loss::CrossEntropy,
        6,
    )?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &per_param(&p), Some(vec![1, 0]), 3)?;
    let pool_first = Problem::new(
        varmap,
        move || {
            let h = vivit::nn::max_pool2d(&conv2.forward(&x2)?, 2, 2)?.relu()?;
            fc2.forward(&h.flatten_from(1)?)
        },
        Loss::CrossEntropy,
        6,
    )?;
    let params: Vec<_> = p.params().into_iter().map(|(_, v)| v).collect();
    let samples: Vec<usize> = (0..p.batch_size()?).collect();
    let (g, _) = p.ggn(&params, &samples)?;
    let (h, _) = pool_first.ggn(&params, &samples)?;
    let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = g
        .iter()
        .zip(&h)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        scale > 0.0 && diff <= 1e-12 * scale,
        "GGNs differ by {diff} (scale {scale})"
    );
    check_eigen(&pool_first, &one_group(&pool_first), None, 5)
}

#[test]
fn conv1d_dilation_avg_pool() -> Result<()> {
    let varmap = VarMap::new();
    let cfg = Conv1dConfig {
        padding: 1,
        stride: 1,
        dilation: 2,
        ..Default::default()
    };
    let conv = vnn::conv1d(2, 3, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vnn::linear(9, 2, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 2, 8], 5)?;
    let head = move |h: Tensor| -> candle_core::Result<Tensor> {
        let h = h
            .tanh()?
            .unsqueeze(2)?
            .avg_pool2d_with_stride((1, 2), (1, 2))?; // [4, 3, 1, 3]
        fc.forward(&h.flatten_from(1)?)
    };
    let (w, b) = (conv.weight().clone(), conv.bias().cloned());
    let (x2, head2) = (x.clone(), head.clone());
    let mut p = Problem::new(varmap, move || head(conv.forward(&x)?), Loss::Mse, 5)?;
    // the same conv as a 2-d one of height 1, whose kernel gradient candle gets right
    p.jacobian_forward = Some(Box::new(move || {
        let h = x2
            .unsqueeze(2)?
            .pad_with_zeros(3, 1, 1)?
            .conv2d(&w.unsqueeze(2)?, 0, 1, 2, 1)?;
        head2(
            h.squeeze(2)?
                .broadcast_add(&b.as_ref().expect("bias").reshape((1, 3, 1))?)?,
        )
    }));
    check_eigen(&p, &one_group(&p), None, 4)?;
    check_eigen(&p, &per_param(&p), None, 2)
}

#[test]
fn newton_mlp_cross_entropy() -> Result<()> {
    let p = mlp(Loss::CrossEntropy)?;
    check_newton(&p, &one_group(&p), None, None, 3)?;
    check_newton(&p, &per_param(&p), Some(vec![0, 2, 3]), Some(vec![3, 1]), 2)
}

#[test]
fn newton_residual_mse() -> Result<()> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, 4, vb(&varmap).pp("fc2"))?;
    let fc3 = vnn::linear(4, 2, vb(&varmap).pp("fc3"))?;
    let x = input(&[5, 3], 7)?;
    let p = Problem::new(
        varmap,
        move || {
            let h = fc1.forward(&x)?.tanh()?;
            fc3.forward(&(&h + fc2.forward(&h)?.tanh()?)?)
        },
        Loss::Mse,
        7,
    )?;
    check_newton(&p, &one_group(&p), None, None, 4)?;
    check_newton(
        &p,
        &[vec![0, 1], vec![2, 3, 4, 5]],
        Some(vec![4, 1]),
        None,
        3,
    )
}

#[test]
fn newton_conv() -> Result<()> {
    let p = strided_conv()?;
    check_newton(&p, &one_group(&p), None, Some(vec![0, 1, 2]), 4)
}
