//! The problems of the computation benchmarks (see `main.rs`): models with
//! fixed weights and a fixed mini-batch from [`SEED`], on a given device.

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use vivit::nn as vnn;
use vivit::ParamGroup;

/// Number of classes of all problems.
pub const CLASSES: usize = 10;
/// Standard deviation of the weights (DeepOBS's truncated-normal scale) and
/// value of the biases.
pub const INIT_SCALE: f32 = 0.05;
/// Seed of the weights and data, and of the Monte-Carlo draws.
pub const SEED: u64 = 0;
/// The problems, in the order benchmarked.
pub const PROBLEMS: [&str; 5] = [
    "digits_mlp",
    "mnist_mlp",
    "fmnist_2c2d",
    "cifar10_3c3d",
    "fmnist_2c2d_bn",
];
/// The problem of the `eigh_partial` group: `mnist_mlp` with this many classes.
pub const PARTIAL_PROBLEM: &str = "mnist_mlp_c100";
/// Number of classes of [`PARTIAL_PROBLEM`].
pub const PARTIAL_CLASSES: usize = 100;
/// The network of the training suite's largest task (`mnist_mlp_784`: the
/// `mnist_mlp` layers at its mini-batch of 128), on random data; timed by
/// `examples/device_check` only.
pub const TRAINING_PROBLEM: &str = "mnist_mlp_784";

/// A model with its variables and a fixed mini-batch.
pub struct Problem {
    pub varmap: VarMap,
    model: candle_nn::Sequential,
    inputs: Tensor,
    targets: Tensor,
}

impl Problem {
    /// Builds the problem `name` of [`PROBLEMS`] (or [`PARTIAL_PROBLEM`],
    /// [`TRAINING_PROBLEM`]) from
    /// [`SEED`], f32 on `device`.
    pub fn new(name: &str, device: &Device) -> vivit::Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
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
            "mnist_mlp" | PARTIAL_PROBLEM | TRAINING_PROBLEM => {
                let classes = match name {
                    PARTIAL_PROBLEM => PARTIAL_CLASSES,
                    _ => CLASSES,
                };
                let batch = match name {
                    TRAINING_PROBLEM => 128,
                    _ => 64,
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
                    vec![batch, 784],
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
                        Tensor::zeros(c, DType::F32, device)?,
                        Tensor::ones(c, DType::F32, device)?,
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
        let inputs = normal(&input_shape, 1.0, &mut rng)?.to_device(device)?;
        let labels: Vec<u32> = (0..input_shape[0])
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let targets = Tensor::new(labels, device)?;
        Ok(Self {
            varmap,
            model,
            inputs,
            targets,
        })
    }

    /// The mean cross-entropy of the mini-batch.
    pub fn loss(&self) -> vivit::Result<Tensor> {
        vivit::loss::cross_entropy(&self.model.forward(&self.inputs)?, &self.targets)
    }

    /// One group of all parameters, keeping the 10 leading directions.
    pub fn groups(&self) -> [ParamGroup; 1] {
        [ParamGroup::new(self.varmap.all_vars()).criterion(vivit::Criterion::top_k(10))]
    }
}

/// Overwrites candle's (unseeded) initialisation in name order: weights
/// `N(0, INIT_SCALE²)`, biases `INIT_SCALE`.
fn seed_weights(varmap: &VarMap, rng: &mut StdRng) -> vivit::Result<()> {
    for (name, var) in vnn::vars_by_name(varmap) {
        let value = if name.ends_with(".bias") {
            Tensor::full(INIT_SCALE, var.shape(), var.device())?
        } else {
            normal(var.dims(), INIT_SCALE, rng)?.to_device(var.device())?
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
