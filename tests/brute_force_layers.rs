//! Norms, embeddings and a transformer block against the explicit GGN
//! (`common::brute_force`).

mod common;

use anyhow::Result;
use candle_core::{Device, Module, ModuleT, Tensor, D};
use candle_nn::{Init, VarMap};
use common::brute_force::{input, one_group, per_param, vb, Loss, Problem};
use common::ggn_checks::{check_eigen, check_newton};
use vivit::nn as vnn;

/// `fc2(tanh(norm(fc1 x)))` on inputs `[5, 3]`, the norm's weight and bias
/// drawn (not the initial 1 and 0).
fn normed_mlp(rms: bool, loss: Loss) -> Result<Problem> {
    let varmap = VarMap::new();
    let fc1 = vnn::linear(3, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vnn::linear(4, 3, vb(&varmap).pp("fc2"))?;
    let norm_vb = vb(&varmap).pp("norm");
    let init = Init::Randn {
        mean: 1.0,
        stdev: 0.5,
    };
    let weight = norm_vb.get_with_hints(4, "weight", init)?;
    let norm: Box<dyn Module> = if rms {
        Box::new(vnn::RmsNorm::new(weight, 1e-5))
    } else {
        let bias = norm_vb.get_with_hints(
            4,
            "bias",
            Init::Randn {
                mean: 0.0,
                stdev: 0.5,
            },
        )?;
        Box::new(vnn::LayerNorm::new(weight, bias, 1e-5))
    };
    let x = input(&[5, 3], 2)?;
    let forward = move || fc2.forward(&norm.forward(&fc1.forward(&x)?)?.tanh()?);
    Problem::new(varmap, forward, loss, 2)
}

#[test]
fn layer_norm() -> Result<()> {
    for loss in [Loss::CrossEntropy, Loss::Mse] {
        let p = normed_mlp(false, loss)?;
        check_eigen(&p, &one_group(&p), None, 5)?;
        check_eigen(&p, &per_param(&p), Some(vec![4, 1, 2]), 3)?;
        check_newton(&p, &one_group(&p), None, None, 3)?;
        check_newton(&p, &per_param(&p), Some(vec![0, 3]), Some(vec![1, 2, 4]), 2)?;
    }
    Ok(())
}

#[test]
fn rms_norm() -> Result<()> {
    let p = normed_mlp(true, Loss::CrossEntropy)?;
    check_eigen(&p, &one_group(&p), None, 5)?;
    check_eigen(&p, &per_param(&p), Some(vec![0, 2]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 3)
}

/// Token ids with repeats inside each sample (and one id never used), an
/// embedding of 6 rows into 3 features, a tracked linear head per token and
/// token-level cross-entropy; the same embedding also feeds a mean over
/// positions (a second call of one weight).
#[test]
fn embedding_with_repeated_ids() -> Result<()> {
    let varmap = VarMap::new();
    let emb = vnn::embedding(6, 3, vb(&varmap).pp("emb"))?;
    let head = vnn::linear(3, 3, vb(&varmap).pp("head"))?;
    let ids = Tensor::new(&[[0u32, 2, 2, 1], [3, 3, 3, 0], [1, 0, 4, 2]], &Device::Cpu)?;
    let context = Tensor::new(&[[4u32, 4], [1, 2], [0, 0]], &Device::Cpu)?;
    let forward = move || {
        let mean = emb.forward(&context)?.mean_keepdim(1)?; // [N, 1, 3]
        head.forward(&emb.forward(&ids)?.broadcast_add(&mean)?.tanh()?)
    };
    for loss in [Loss::CrossEntropy, Loss::CrossEntropyIgnoring(-100)] {
        let p = Problem::new(varmap.clone(), forward.clone(), loss, 4)?;
        check_eigen(&p, &one_group(&p), None, 6)?;
        check_eigen(&p, &per_param(&p), Some(vec![2, 0]), 3)?;
        check_newton(&p, &one_group(&p), None, None, 3)?;
        check_newton(&p, &per_param(&p), Some(vec![1]), Some(vec![0, 1]), 2)?;
    }
    Ok(())
}

/// A convolution, batch normalization in evaluation mode with drawn running
/// statistics, tanh and a linear head.
#[test]
fn batch_norm_in_evaluation() -> Result<()> {
    let varmap = VarMap::new();
    let conv = vnn::conv2d(2, 3, 2, Default::default(), vb(&varmap).pp("conv"))?;
    let bn_vb = vb(&varmap).pp("bn");
    let randn = |mean: f64| Init::Randn { mean, stdev: 0.5 };
    let bn = candle_nn::BatchNorm::new(
        3,
        Tensor::new(&[0.1f64, -0.3, 0.2], &Device::Cpu)?,
        Tensor::new(&[0.5f64, 1.5, 0.8], &Device::Cpu)?,
        bn_vb.get_with_hints(3, "weight", randn(1.0))?,
        bn_vb.get_with_hints(3, "bias", randn(0.0))?,
        1e-5,
    )?;
    let bn = vnn::BatchNorm::from(bn);
    let fc = vnn::linear(12, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 2, 3, 3], 5)?;
    let forward = move || {
        let h = bn.forward_t(&conv.forward(&x)?, false)?.tanh()?;
        fc.forward(&h.flatten_from(1)?)
    };
    let p = Problem::new(varmap, forward, Loss::CrossEntropy, 5)?;
    check_eigen(&p, &one_group(&p), None, 6)?;
    check_eigen(&p, &per_param(&p), Some(vec![3, 1]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 3)?;
    check_newton(&p, &per_param(&p), None, Some(vec![0, 2]), 2)
}

/// A pre-norm transformer block on `[2, 3, 4]` tokens: tracked LayerNorm,
/// q, k, v, o projections, single-head softmax attention with a residual,
/// a second tracked LayerNorm and a linear head, token-level cross-entropy.
#[test]
fn transformer_block_with_tracked_norms() -> Result<()> {
    let varmap = VarMap::new();
    let d = 4;
    let ln1 = vnn::layer_norm(d, 1e-5, vb(&varmap).pp("ln1"))?;
    let ln2 = vnn::layer_norm(d, 1e-5, vb(&varmap).pp("ln2"))?;
    let proj = |name: &str| vnn::linear(d, d, vb(&varmap).pp(name));
    let (q, k, v, o) = (proj("q")?, proj("k")?, proj("v")?, proj("o")?);
    let head = vnn::linear(d, 3, vb(&varmap).pp("head"))?;
    let x = input(&[2, 3, d], 7)?;
    let forward = move || {
        let h = ln1.forward(&x)?;
        let scores = (q.forward(&h)?.matmul(&k.forward(&h)?.transpose(1, 2)?)? * 0.5)?;
        let attended = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v.forward(&h)?)?;
        let r = (&x + o.forward(&attended)?)?;
        head.forward(&ln2.forward(&r)?)
    };
    let p = Problem::new(varmap, forward, Loss::CrossEntropy, 7)?;
    check_eigen(&p, &one_group(&p), None, 6)?;
    // by name: head, k, ln1, ln2, o, q, v (k.bias has no curvature: it shifts
    // each query's scores by a constant, which the softmax ignores)
    let norms_apart = vec![
        vec![4, 5],
        vec![6, 7],
        vec![0, 1, 2, 3, 8, 9, 10, 11, 12, 13],
    ];
    check_eigen(&p, &norms_apart, Some(vec![1]), 2)?;
    check_newton(&p, &one_group(&p), None, None, 4)?;
    check_newton(&p, &norms_apart, Some(vec![0]), None, 2)
}

/// A grouped 2-d convolution (4 → 6 channels in 2 groups, stride 2,
/// padding 1) and a depthwise 1-d one (3 channels, dilation 2), each with a
/// linear head.
#[test]
fn grouped_and_depthwise_convolutions() -> Result<()> {
    let varmap = VarMap::new();
    let cfg = candle_nn::Conv2dConfig {
        groups: 2,
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let conv = vnn::conv2d(4, 6, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vnn::linear(24, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[3, 4, 4, 4], 3)?;
    let forward = move || fc.forward(&conv.forward(&x)?.tanh()?.flatten_from(1)?);
    let p = Problem::new(varmap, forward, Loss::CrossEntropy, 3)?;
    check_eigen(&p, &one_group(&p), None, 6)?;
    check_eigen(&p, &per_param(&p), Some(vec![2, 0]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 3)?;

    let varmap = VarMap::new();
    let cfg = candle_nn::Conv1dConfig {
        groups: 3,
        dilation: 2,
        ..Default::default()
    };
    let depthwise = vnn::conv1d(3, 3, 2, cfg, vb(&varmap).pp("dw"))?;
    let fc = vnn::linear(9, 2, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 3, 5], 4)?;
    let forward = move || fc.forward(&depthwise.forward(&x)?.tanh()?.flatten_from(1)?);
    let p = Problem::new(varmap, forward, Loss::Mse, 4)?;
    check_eigen(&p, &one_group(&p), None, 6)?;
    check_newton(&p, &per_param(&p), Some(vec![1, 3]), None, 2)
}

/// A 2-d transposed convolution (2 → 2 channels, kernel 3, stride 2,
/// padding 1, output padding 1) after a linear layer, with MSE on its
/// image; and a 1-d one (padding 1, dilation 2, output padding 1).
#[test]
fn transposed_convolutions() -> Result<()> {
    let varmap = VarMap::new();
    let fc = vnn::linear(3, 8, vb(&varmap).pp("fc"))?;
    let cfg = candle_nn::ConvTranspose2dConfig {
        padding: 1,
        output_padding: 1,
        stride: 2,
        dilation: 1,
    };
    let up = vnn::conv_transpose2d(2, 2, 3, cfg, vb(&varmap).pp("up"))?;
    let x = input(&[3, 3], 8)?;
    let forward = move || up.forward(&fc.forward(&x)?.tanh()?.reshape((3, 2, 2, 2))?);
    let p = Problem::new(varmap, forward, Loss::Mse, 8)?;
    assert_eq!((p.forward)()?.dims(), &[3, 2, 4, 4]);
    check_eigen(&p, &one_group(&p), None, 6)?;
    check_eigen(&p, &per_param(&p), Some(vec![1, 2]), 3)?;
    check_newton(&p, &one_group(&p), None, None, 3)?;

    let varmap = VarMap::new();
    let cfg = candle_nn::ConvTranspose1dConfig {
        padding: 1,
        output_padding: 1,
        stride: 2,
        dilation: 2,
        groups: 1,
    };
    let up = vnn::conv_transpose1d(2, 3, 2, cfg, vb(&varmap).pp("up"))?;
    let fc = vnn::linear(18, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[3, 2, 3], 9)?;
    let forward = move || fc.forward(&up.forward(&x)?.tanh()?.flatten_from(1)?);
    let p = Problem::new(varmap, forward, Loss::CrossEntropy, 9)?;
    check_eigen(&p, &one_group(&p), None, 6)?;
    check_newton(&p, &per_param(&p), None, Some(vec![0, 2]), 2)
}

/// The 1-d transposed convolution against its definition,
/// `y[o, q·s + a·d − p] += x[i, q] W[i, o, a]` (`p_out` more zeros at the end).
#[test]
fn transposed_1d_forward_is_the_definition() -> Result<()> {
    let varmap = VarMap::new();
    for (padding, output_padding, stride, dilation) in [(0, 0, 1, 1), (1, 1, 2, 2), (2, 0, 3, 1)] {
        let cfg = candle_nn::ConvTranspose1dConfig {
            padding,
            output_padding,
            stride,
            dilation,
            groups: 1,
        };
        let name = format!("t{padding}");
        let ours = vnn::conv_transpose1d_no_bias(2, 3, 3, cfg, vb(&varmap).pp(name))?;
        let x = input(&[2, 2, 4], 3)?;
        let got = ours.forward(&x)?;
        let (xs, w) = (x.to_vec3::<f64>()?, ours.weight().to_vec3::<f64>()?);
        let len = 3 * stride + 2 * dilation + output_padding + 1 - 2 * padding;
        let mut want = vec![vec![vec![0f64; len]; 3]; 2];
        for (n, sample) in xs.iter().enumerate() {
            for (i, row) in sample.iter().enumerate() {
                for (q, &v) in row.iter().enumerate() {
                    for (o, kernel) in w[i].iter().enumerate() {
                        for (a, &weight) in kernel.iter().enumerate() {
                            let at = (q * stride + a * dilation) as i64 - padding as i64;
                            if (0..len as i64).contains(&at) {
                                want[n][o][at as usize] += v * weight;
                            }
                        }
                    }
                }
            }
        }
        let want = Tensor::new(want, &Device::Cpu)?;
        assert_eq!(got.dims(), want.dims(), "{cfg:?}");
        let diff = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(diff < 1e-14, "{cfg:?}: {diff}");
    }
    Ok(())
}
