//! The models of the tasks: sequences of vivit's tracked layers and
//! parameter-free functions, with PyTorch's default initialization from a seed.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use vivit::nn as vnn;

/// One layer of a model, as the tasks describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// A tracked linear layer `in → out`.
    Linear { inputs: usize, outputs: usize },
    /// A tracked square convolution, stride 1, symmetric zero padding.
    Conv {
        inputs: usize,
        outputs: usize,
        kernel: usize,
        padding: usize,
    },
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `vivit::nn::max_pool2d` over non-overlapping `k × k` windows.
    MaxPool(usize),
    /// `[n, …] → [n, channels, height, width]`.
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// `[n, …] → [n, features]`.
    Flatten,
}

/// A built [`Layer`].
enum Built {
    Linear(vnn::Linear),
    Conv(vnn::Conv2d),
    Function(Layer),
}

/// A model: its variables and its layers, applied in order.
pub struct Network {
    varmap: VarMap,
    layers: Vec<Built>,
}

impl Network {
    /// The model of `layers` on the CPU in f32, every weight and bias drawn
    /// from `U(−1/√fan_in, 1/√fan_in)` (PyTorch's default for linear and
    /// convolution layers) with `seed` (candle's CPU generator cannot be
    /// seeded, so the variables are overwritten after creation).
    pub fn new(layers: &[Layer], seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut built = Vec::with_capacity(layers.len());
        for (i, &layer) in layers.iter().enumerate() {
            let name = format!("layer{i:02}");
            let fan_in = match layer {
                Layer::Linear { inputs, outputs } => {
                    built.push(Built::Linear(vnn::linear(inputs, outputs, vb.pp(&name))?));
                    inputs
                }
                Layer::Conv {
                    inputs,
                    outputs,
                    kernel,
                    padding,
                } => {
                    let config = Conv2dConfig {
                        padding,
                        ..Conv2dConfig::default()
                    };
                    let conv = vnn::conv2d(inputs, outputs, kernel, config, vb.pp(&name))?;
                    built.push(Built::Conv(conv));
                    inputs * kernel * kernel
                }
                function => {
                    built.push(Built::Function(function));
                    continue;
                }
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let uniform = Uniform::new_inclusive(-bound, bound)?;
            for suffix in ["weight", "bias"] {
                let var = variable(&varmap, &format!("{name}.{suffix}"))?;
                let values: Vec<f32> = (0..var.elem_count())
                    .map(|_| uniform.sample(&mut rng))
                    .collect();
                var.set(&Tensor::from_vec(values, var.shape(), &dev)?)?;
            }
        }
        Ok(Self {
            varmap,
            layers: built,
        })
    }

    /// The variables by name (for `DampedNewton::from_varmap`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The variables, ordered by name (for the other optimizers).
    pub fn vars(&self) -> Vec<Var> {
        vnn::vars_by_name(&self.varmap)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }
}

impl Module for Network {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                Built::Linear(linear) => linear.forward(&x)?,
                Built::Conv(conv) => conv.forward(&x)?,
                Built::Function(function) => function.apply(&x)?,
            };
        }
        Ok(x)
    }
}

impl Layer {
    /// The layer on `x` if it has no parameters.
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Layer::Relu => x.relu(),
            Layer::Tanh => x.tanh(),
            Layer::MaxPool(k) => vnn::max_pool2d(x, k, k),
            Layer::Image {
                channels,
                height,
                width,
            } => x.reshape(((), channels, height, width)),
            Layer::Flatten => x.flatten_from(1),
            Layer::Linear { .. } | Layer::Conv { .. } => Err(candle_core::Error::Msg(
                "a layer with parameters is applied as built".into(),
            )),
        }
    }
}

/// The variable `name` of `varmap`.
fn variable(varmap: &VarMap, name: &str) -> Result<Var> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("the VarMap's lock is poisoned"))?;
    data.get(name)
        .cloned()
        .with_context(|| format!("no variable {name}"))
}
