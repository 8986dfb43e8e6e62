//! Shared test helpers: models rebuilt from fixture specs, comparisons, the
//! explicit GGN (`brute_force`), random nets (`arch`), the two-layer MLP
//! (`mlp`) and proptest settings.
#![allow(dead_code)]

pub mod arch;
pub mod brute_force;
pub mod conv_spec;
pub mod ggn_checks;
pub mod losses;
pub mod mlp;
pub mod proptest_config;
pub mod reference_checks;
pub mod tiny;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor, Var, D};
use serde_json::Value;
use vivit::nn as vnn;

/// A layer of a fixture model spec (see tests/reference/generate.py).
pub enum Layer {
    Linear(vnn::Linear),
    Conv2d(vnn::Conv2d),
    Conv1d(vnn::Conv1d),
    ConvTranspose2d(vnn::ConvTranspose2d),
    /// In evaluation mode.
    BatchNorm(vnn::BatchNorm),
    Relu,
    Sigmoid,
    Tanh,
    Identity,
    MaxPool(usize, usize),
    AvgPool(usize, usize),
    Flatten,
    Pad(usize, usize, f64),
    Slice(usize, usize),
    ParallelSum(Vec<Vec<Layer>>),
}

pub struct Model {
    pub layers: Vec<Layer>,
    pub params: Vec<Var>,
}

fn usize_of(spec: &Value, key: &str) -> Result<usize> {
    spec[key]
        .as_u64()
        .map(|v| v as usize)
        .with_context(|| format!("missing {key} in {spec}"))
}

/// The device the fixture models and data are built on: the CPU unless
/// [`set_device`] chose another (`examples/device_check`).
pub fn device() -> Device {
    DEVICE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or(Device::Cpu)
}

/// Builds the fixture models and data on `device` from now on.
pub fn set_device(device: Device) {
    *DEVICE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(device);
}

static DEVICE: std::sync::Mutex<Option<Device>> = std::sync::Mutex::new(None);

/// A tensor of a fixture (`shape`, `data`) in `dtype`, on [`device`].
pub fn tensor_of(v: &Value, dtype: DType) -> Result<Tensor> {
    let shape: Vec<usize> = serde_json::from_value(v["shape"].clone())?;
    let data: Vec<f64> = serde_json::from_value(v["data"].clone())?;
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(&device())?)
}

pub fn dtype_of(fixture: &Value) -> DType {
    match fixture["dtype"].as_str() {
        Some("float32") => DType::F32,
        _ => DType::F64,
    }
}

impl Model {
    /// Rebuilds the model of a fixture with its parameter values.
    pub fn from_fixture(fixture: &Value) -> Result<Self> {
        let dtype = dtype_of(fixture);
        let mut params: Vec<Var> = fixture["params"]
            .as_array()
            .context("params")?
            .iter()
            .map(|p| Ok(Var::from_tensor(&tensor_of(p, dtype)?)?))
            .collect::<Result<_>>()?;
        params.reverse();
        let mut pending = params.clone();
        let layers = build(fixture["model"].as_array().context("model")?, &mut pending)?;
        if !pending.is_empty() {
            bail!("{} parameters left over", pending.len());
        }
        params.reverse();
        Ok(Self { layers, params })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        run(&self.layers, x)
    }
}

fn take(pending: &mut Vec<Var>, bias: bool) -> Result<(Tensor, Option<Tensor>)> {
    let w = pending.pop().context("missing weight")?;
    let b = if bias {
        Some(pending.pop().context("missing bias")?.as_tensor().clone())
    } else {
        None
    };
    Ok((w.as_tensor().clone(), b))
}

fn build(specs: &[Value], pending: &mut Vec<Var>) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    for spec in specs {
        let bias = spec["bias"].as_bool().unwrap_or(false);
        layers.push(match spec["type"].as_str().context("type")? {
            "linear" => {
                let (w, b) = take(pending, bias)?;
                Layer::Linear(vnn::Linear::new(w, b))
            }
            kind @ ("conv2d" | "conv1d") => {
                let (w, b) = take(pending, bias)?;
                let (padding, stride, dilation) = (
                    usize_of(spec, "padding")?,
                    usize_of(spec, "stride")?,
                    usize_of(spec, "dilation")?,
                );
                if kind == "conv2d" {
                    let cfg = candle_nn::Conv2dConfig {
                        padding,
                        stride,
                        dilation,
                        ..Default::default()
                    };
                    Layer::Conv2d(vnn::Conv2d::new(w, b, cfg))
                } else {
                    let cfg = candle_nn::Conv1dConfig {
                        padding,
                        stride,
                        dilation,
                        ..Default::default()
                    };
                    Layer::Conv1d(vnn::Conv1d::new(w, b, cfg))
                }
            }
            "conv_transpose2d" => {
                let (w, b) = take(pending, bias)?;
                let cfg = candle_nn::ConvTranspose2dConfig {
                    padding: usize_of(spec, "padding")?,
                    output_padding: usize_of(spec, "output_padding")?,
                    stride: usize_of(spec, "stride")?,
                    dilation: 1,
                };
                Layer::ConvTranspose2d(vnn::ConvTranspose2d::new(w, b, cfg))
            }
            "batchnorm2d" => {
                let (w, b) = take(pending, true)?;
                let stats = |key: &str| -> Result<Tensor> {
                    let values: Vec<f64> = serde_json::from_value(spec[key].clone())?;
                    Ok(Tensor::new(values, w.device())?.to_dtype(w.dtype())?)
                };
                let eps = spec["eps"].as_f64().context("eps")?;
                let features = usize_of(spec, "features")?;
                let (mean, var) = (stats("running_mean")?, stats("running_var")?);
                let b = b.context("batch norm bias")?;
                let bn = candle_nn::BatchNorm::new(features, mean, var, w, b, eps)?;
                Layer::BatchNorm(vnn::BatchNorm::from(bn))
            }
            "relu" => Layer::Relu,
            "sigmoid" => Layer::Sigmoid,
            "tanh" => Layer::Tanh,
            "identity" => Layer::Identity,
            "maxpool2d" => Layer::MaxPool(usize_of(spec, "kernel")?, usize_of(spec, "stride")?),
            "avgpool2d" => Layer::AvgPool(usize_of(spec, "kernel")?, usize_of(spec, "stride")?),
            "flatten" => Layer::Flatten,
            "pad" => Layer::Pad(
                usize_of(spec, "left")?,
                usize_of(spec, "right")?,
                spec["value"].as_f64().context("value")?,
            ),
            "slice" => Layer::Slice(usize_of(spec, "start")?, usize_of(spec, "end")?),
            "parallel_sum" => {
                let mut branches = Vec::new();
                for branch in spec["branches"].as_array().context("branches")? {
                    branches.push(build(branch.as_array().context("branch")?, pending)?);
                }
                Layer::ParallelSum(branches)
            }
            other => bail!("unknown layer type {other}"),
        });
    }
    Ok(layers)
}

fn run(layers: &[Layer], x: &Tensor) -> candle_core::Result<Tensor> {
    let mut h = x.clone();
    for layer in layers {
        h = match layer {
            Layer::Linear(l) => l.forward(&h)?,
            Layer::Conv2d(l) => l.forward(&h)?,
            Layer::Conv1d(l) => l.forward(&h)?,
            Layer::ConvTranspose2d(l) => l.forward(&h)?,
            Layer::BatchNorm(l) => l.forward_t(&h, false)?,
            Layer::Relu => h.relu()?,
            Layer::Sigmoid => candle_nn::ops::sigmoid(&h)?,
            Layer::Tanh => h.tanh()?,
            Layer::Identity => h,
            Layer::MaxPool(k, s) => vivit::nn::max_pool2d(&h, *k, *s)?,
            Layer::AvgPool(k, s) => h.avg_pool2d_with_stride(*k, *s)?,
            Layer::Flatten => h.flatten_from(1)?,
            Layer::Pad(l, r, v) => {
                let mut side = h.dims().to_vec();
                let last = side.len() - 1;
                side[last] = *l;
                let left = (Tensor::ones(side.clone(), h.dtype(), h.device())? * *v)?;
                side[last] = *r;
                let right = (Tensor::ones(side, h.dtype(), h.device())? * *v)?;
                Tensor::cat(&[&left, &h, &right], D::Minus1)?
            }
            Layer::Slice(a, b) => h.narrow(D::Minus1, *a, b - a)?,
            Layer::ParallelSum(branches) => {
                let mut sum: Option<Tensor> = None;
                for branch in branches {
                    let out = run(branch, &h)?;
                    sum = Some(match sum {
                        Some(s) => (s + out)?,
                        None => out,
                    });
                }
                sum.expect("at least one branch")
            }
        };
    }
    Ok(h)
}

/// Records the fixture's loss on its data.
pub fn record_fixture(fixture: &Value, model: &Model) -> Result<vivit::Recorded> {
    let dtype = dtype_of(fixture);
    let x = tensor_of(&fixture["x"], dtype)?;
    let loss = fixture["loss"].as_str().context("loss")?.to_string();
    let y = if loss == "cross_entropy" {
        tensor_of(&fixture["y"], DType::F64)?.to_dtype(DType::U32)?
    } else {
        tensor_of(&fixture["y"], dtype)?
    };
    Ok(vivit::record(|| {
        let out = model.forward(&x)?;
        if loss == "cross_entropy" {
            vivit::loss::cross_entropy(&out, &y)
        } else {
            vivit::loss::mse(&out, &y)
        }
    })?)
}

pub fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Largest absolute value.
pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `|a − b| ≤ rtol · max(max|b|, floor)` elementwise; the message names the case.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rtol: f64) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: lengths {} vs {}",
        a.len(),
        b.len()
    );
    let scale = max_abs(b).max(1e-12);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rtol * scale,
            "{what}: entry {i}: {x} vs {y} (|diff| {:e} > {rtol:e} · {scale:e})",
            (x - y).abs()
        );
    }
}

/// As [`assert_close`], up to one sign for the whole vector.
pub fn assert_close_up_to_sign(what: &str, a: &[f64], b: &[f64], rtol: f64) {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let flipped: Vec<f64> = a.iter().map(|x| if dot < 0.0 { -x } else { *x }).collect();
    assert_close(what, &flipped, b, rtol);
}
