//! Tracked layers behave exactly like their candle_nn twins, inside and outside `record`.

use anyhow::Result;
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Conv1dConfig, Conv2dConfig, VarBuilder, VarMap};
use vivit::nn as vnn;

/// A candle_nn layer, its tracked twin, and an input.
type Pair = (Box<dyn Module>, Box<dyn Module>, Tensor);

/// Largest absolute difference.
fn diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn same(a: &Tensor, b: &Tensor) -> Result<()> {
    assert_eq!(diff(a, b)?, 0.0, "outputs differ");
    Ok(())
}

#[test]
fn same_outputs_as_candle_nn() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let conv2_cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        dilation: 1,
        ..Default::default()
    };
    let conv1_cfg = Conv1dConfig {
        padding: 2,
        dilation: 2,
        ..Default::default()
    };
    let pairs: Vec<Pair> = vec![
        (
            Box::new(candle_nn::linear(6, 3, vb.pp("a"))?),
            Box::new(vnn::linear(6, 3, vb.pp("a"))?),
            Tensor::randn(0f32, 1., (4, 6), &dev)?,
        ),
        (
            Box::new(candle_nn::linear_no_bias(6, 3, vb.pp("b"))?),
            Box::new(vnn::linear_no_bias(6, 3, vb.pp("b"))?),
            Tensor::randn(0f32, 1., (4, 5, 6), &dev)?,
        ),
        (
            Box::new(candle_nn::conv2d(2, 3, 3, conv2_cfg, vb.pp("c"))?),
            Box::new(vnn::conv2d(2, 3, 3, conv2_cfg, vb.pp("c"))?),
            Tensor::randn(0f32, 1., (2, 2, 6, 6), &dev)?,
        ),
        (
            Box::new(candle_nn::conv1d(2, 3, 3, conv1_cfg, vb.pp("d"))?),
            Box::new(vnn::conv1d(2, 3, 3, conv1_cfg, vb.pp("d"))?),
            Tensor::randn(0f32, 1., (2, 2, 7), &dev)?,
        ),
    ];
    let mut pairs = pairs;
    // batch norms in evaluation with drawn statistics and parameters, a layer norm
    let (plain, tracked) = (
        candle_nn::batch_norm(2, 1e-3, vb.pp("e"))?,
        vnn::batch_norm(2, 1e-3, vb.pp("e"))?,
    );
    for (name, var) in vnn::vars_by_name(&varmap) {
        if name.starts_with("e.") {
            var.set(&(Tensor::randn(0f32, 1., var.shape(), &dev)?.abs()? + 0.5)?)?;
        }
    }
    for x in [(3, 2, 4, 5), (3, 2, 1, 7)] {
        let (plain, tracked) = (plain.clone(), tracked.clone());
        pairs.push((
            Box::new(candle_nn::func(move |x| plain.forward_t(x, false))),
            Box::new(candle_nn::func(move |x| tracked.forward_t(x, false))),
            Tensor::randn(0f32, 1., x, &dev)?,
        ));
    }
    pairs.push((
        Box::new(candle_nn::layer_norm(6, 1e-5, vb.pp("f"))?),
        Box::new(vnn::layer_norm(6, 1e-5, vb.pp("f"))?),
        // strided: candle_nn takes its formula, not the fused kernel
        Tensor::randn(0f32, 1., (4, 6, 3), &dev)?.transpose(1, 2)?,
    ));
    for (plain, tracked, x) in &pairs {
        let want = plain.forward(x)?;
        same(&tracked.forward(x)?, &want)?;
        // inside record, convolutions run as patches · weights: equal up to round-off
        let seen = std::cell::RefCell::new(None);
        let y = Tensor::zeros(want.flatten_from(1)?.dims(), DType::F32, &dev)?;
        vivit::record(|| {
            let out = tracked.forward(x)?;
            *seen.borrow_mut() = Some(out.clone());
            vivit::loss::mse(&out.flatten_from(1)?, &y)
        })?;
        let seen = seen.borrow().clone().expect("the closure ran");
        let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(
            diff(&seen, &want)? <= 1e-5 * scale,
            "recorded forward differs"
        );
    }
    Ok(())
}

/// The loss returned by `record` has the right gradients for the weights, the
/// biases and the input: `⟨∇L, v⟩` equals the central difference
/// `(L(θ + h v) − L(θ − h v)) / 2h` of the plain forward along a random `v`.
/// The loss is quadratic in each of them, so the difference is exact up to
/// round-off: `O(ε L / h)` for the quotient, `O(ε Σ|gᵢvᵢ|)` for the inner
/// product (both with generous constants).
#[test]
fn gradients_inside_record_are_right() -> Result<()> {
    let dev = Device::Cpu;
    let conv2_cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        dilation: 2,
        ..Default::default()
    };
    let conv1_cfg = Conv1dConfig {
        padding: 2,
        stride: 2,
        dilation: 2,
        ..Default::default()
    };
    type Build = fn(VarBuilder, Conv2dConfig, Conv1dConfig) -> candle_core::Result<Box<dyn Module>>;
    let batch_norm: Build = |vb, _, _| {
        let bn = vnn::batch_norm(3, 1e-3, vb)?;
        Ok(Box::new(candle_nn::func(move |x| bn.forward_t(x, false))))
    };
    let layer_norm: Build = |vb, _, _| Ok(Box::new(vnn::layer_norm(6, 1e-5, vb)?));
    let layers: [(Build, &[usize], bool); 7] = [
        (
            |vb, _, _| Ok(Box::new(vnn::linear(6, 3, vb)?)),
            &[4, 6],
            true,
        ),
        (
            |vb, _, _| Ok(Box::new(vnn::linear_no_bias(6, 3, vb)?)),
            &[4, 5, 6],
            true,
        ),
        (
            |vb, c, _| Ok(Box::new(vnn::conv2d(2, 3, 3, c, vb)?)),
            &[2, 2, 7, 6],
            true,
        ),
        (
            |vb, _, c| Ok(Box::new(vnn::conv1d(2, 3, 3, c, vb)?)),
            &[2, 2, 9],
            true,
        ),
        // batch norms in evaluation (the loss is quadratic in x, w and b),
        // on [N, C, H, W] and [N, C]
        (batch_norm, &[2, 3, 4, 5], true),
        (batch_norm, &[4, 3], true),
        // a layer norm on [N, T, D] (quadratic in w and b, not in x: see below)
        (layer_norm, &[2, 3, 6], false),
    ];
    for (build, input, input_quadratic) in layers {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
        let layer = build(vb, conv2_cfg, conv1_cfg)?;
        let mut vars = Vec::new();
        for (name, var) in vnn::vars_by_name(&varmap) {
            // drawn running statistics (detached: no gradient), drawn norm parameters
            let drawn = Tensor::randn(0f64, 1., var.shape(), &dev)?;
            match name.rsplit('.').next() {
                Some("running_mean") => var.set(&drawn)?,
                Some("running_var") => var.set(&(drawn.abs()? + 0.5)?)?,
                _ => {
                    var.set(&drawn)?;
                    vars.push(var);
                }
            }
        }
        let x = candle_core::Var::randn(0f64, 1., input, &dev)?;
        let out_dims = layer.forward(&x)?.flatten_from(1)?.dims().to_vec();
        let y = Tensor::randn(0f64, 1., out_dims, &dev)?;
        let loss_of = |x: &Tensor| -> candle_core::Result<f64> {
            candle_nn::loss::mse(&layer.forward(x)?.flatten_from(1)?, &y)?.to_scalar::<f64>()
        };
        let loss = vivit::record(|| vivit::loss::mse(&layer.forward(&x)?.flatten_from(1)?, &y))?;
        let grads = loss.backward()?;
        // the input's gradient through a layer norm is candle's backward of
        // x̂ after the op's g ⊙ w, which the brute-force tests check
        if input_quadratic {
            vars.push(x.clone());
        }
        for var in &vars {
            let grad = grads.get(var).expect("every variable gets a gradient");
            let v = Tensor::randn(0f64, 1., var.shape(), &dev)?;
            let analytic = (grad * &v)?.sum_all()?.to_scalar::<f64>()?;
            let theta = var.as_tensor().copy()?;
            let h = 1e-3;
            var.set(&(&theta + (&v * h)?)?)?;
            let up = loss_of(&x)?;
            var.set(&(&theta - (&v * h)?)?)?;
            let down = loss_of(&x)?;
            var.set(&theta)?;
            let numeric = (up - down) / (2.0 * h);
            // round-off: of the inner product, relative to Σ|gᵢvᵢ| (terms may
            // cancel), and of the difference quotient, ε·L/h
            let scale = (grad * &v)?.abs()?.sum_all()?.to_scalar::<f64>()?;
            let tol = 1e-9 * scale + 1e3 * f64::EPSILON * up.abs().max(down.abs()) / h;
            assert!(
                (analytic - numeric).abs() <= tol,
                "input {input:?}, variable {:?}: {analytic} vs {numeric}",
                var.dims()
            );
        }
    }
    Ok(())
}

#[test]
fn conversions_keep_the_parameters() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let plain = candle_nn::linear(3, 2, vb.pp("fc"))?;
    let tracked = vnn::Linear::from(plain.clone());
    assert_eq!(tracked.weight().id(), plain.weight().id());
    let conv = candle_nn::conv2d(1, 2, 3, Conv2dConfig::default(), vb.pp("conv"))?;
    let tracked = vnn::Conv2d::from(conv.clone());
    assert_eq!(tracked.weight().id(), conv.weight().id());
    assert_eq!(tracked.config(), conv.config());
    Ok(())
}
