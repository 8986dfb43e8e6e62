//! Tracked layers behave exactly like their candle_nn twins, inside and outside `record`.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
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
    for (plain, tracked, x) in &pairs {
        let want = plain.forward(x)?;
        same(&tracked.forward(x)?, &want)?;
        // inside record the main run is candle_nn's forward; the probe run
        // (convolutions as patches · weights) agrees up to round-off
        let seen = std::cell::RefCell::new(Vec::new());
        let y = Tensor::zeros(want.flatten_from(1)?.dims(), DType::F32, &dev)?;
        vivit::record(|| {
            let out = tracked.forward(x)?;
            seen.borrow_mut().push(out.clone());
            vivit::loss::mse(&out.flatten_from(1)?, &y)
        })?;
        let seen = seen.borrow();
        same(&seen[0], &want)?;
        let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff(&seen[1], &want)? <= 1e-5 * scale, "probe run differs");
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
