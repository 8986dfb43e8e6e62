//! The training sets of the tasks, all on the CPU in f32: the bundled 8×8
//! digits (as they are, with noisy labels, as their own targets, upsampled to
//! 28×28) and a teacher network's noisy outputs on Gaussian inputs.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::data::Dataset;
use crate::digits::Digits;
use crate::network::{Layer, Network};

/// Classes of the digits.
const CLASSES: u32 = 10;

/// The 1,500 training images of the digits `[1500, 64]` (in `[0, 1]`) and their labels.
pub fn digits() -> Result<Dataset> {
    let digits = Digits::load(&Device::Cpu)?;
    Dataset::new(digits.train.images, digits.train.labels)
}

/// `data` with a `fraction` of its labels (the samples picked with `seed`)
/// replaced by one of the nine other classes, drawn uniformly: that
/// fraction of the labels is wrong.
pub fn noisy_labels(data: &Dataset, fraction: f64, seed: u64) -> Result<Dataset> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut labels = data.targets.to_vec1::<u32>()?;
    let n = labels.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let wrong = (fraction * n as f64).round() as usize;
    for &i in &order[..wrong.min(n)] {
        // a uniform draw from the classes other than labels[i]
        let other = rng.random_range(0..CLASSES - 1);
        labels[i] = if other >= labels[i] { other + 1 } else { other };
    }
    Dataset::new(
        data.inputs.clone(),
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    )
}

/// The images of `data` as their own targets.
pub fn autoencoding(data: &Dataset) -> Result<Dataset> {
    Dataset::new(data.inputs.clone(), data.inputs.clone())
}

/// The 8×8 images of `data` upsampled bilinearly to `side × side` and
/// flattened, `[n, side²]`, with the same labels.
pub fn upsampled(data: &Dataset, side: usize) -> Result<Dataset> {
    let n = data.len();
    let inputs = data
        .inputs
        .reshape((n, 1, 8, 8))?
        .upsample_bilinear2d(side, side, false)?
        .reshape((n, side * side))?;
    Dataset::new(inputs, data.targets.clone())
}

/// A teacher–student regression set of `n` samples: inputs `x ~ N(0, I)`
/// `[n, inputs]`, targets `teacher(x) + σ ε` `[n, 1]` with `ε ~ N(0, 1)`, the
/// teacher a network of `teacher` layers initialized from `seed` (which
/// also draws the inputs and the noise).
pub fn teacher_student(
    n: usize,
    inputs: usize,
    teacher: &[Layer],
    sigma: f32,
    seed: u64,
) -> Result<Dataset> {
    let dev = Device::Cpu;
    let teacher = Network::new(teacher, seed)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gaussian = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect()
    };
    let x = Tensor::from_vec(gaussian(n * inputs), (n, inputs), &dev)?;
    let noise = Tensor::from_vec(gaussian(n), (n, 1), &dev)?;
    let y = (teacher.forward(&x)? + (noise * f64::from(sigma))?)?;
    Dataset::new(x, y.to_dtype(DType::F32)?)
}
