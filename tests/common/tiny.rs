//! Tiny f64 training tasks for the optimizer tests: a one-hidden-layer tanh
//! MLP with deterministic weights and data (no random generator involved).

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarMap;
use vivit::nn as vnn;

use super::mlp::Mlp;

/// A small MLP with its data; `seed` fixes the data and initial weights.
pub struct Task {
    pub varmap: VarMap,
    pub fc1: vnn::Linear,
    pub fc2: vnn::Linear,
    pub x: Tensor,
    pub y: Tensor,
    pub classify: bool,
}

pub fn lcg(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

impl Task {
    /// Regression: y = sin(x·w) on 3 inputs; classification: 3 classes by the
    /// sign pattern of two projections of 4 inputs.
    pub fn new(classify: bool, seed: u64) -> Result<Self> {
        Self::build(classify, false, seed)
    }

    /// The classification task with every fourth label shifted by one class:
    /// not separable, so the loss has a finite minimum above 0.
    pub fn with_label_noise(seed: u64) -> Result<Self> {
        Self::build(true, true, seed)
    }

    fn build(classify: bool, noisy: bool, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let (n, i, o) = if classify { (48, 4, 3) } else { (40, 3, 1) };
        let Mlp { varmap, fc1, fc2 } = Mlp::new(i, 12, o, DType::F64)?;
        // deterministic initial weights and data
        for (k, (name, var)) in vnn::vars_by_name(&varmap).into_iter().enumerate() {
            let values = lcg(seed + k as u64, var.elem_count());
            let scale = if name.ends_with("weight") { 0.7 } else { 0.1 };
            var.set(&(Tensor::from_vec(values, var.shape(), &dev)? * scale)?)?;
        }
        let x = Tensor::from_vec(lcg(seed + 100, n * i), (n, i), &dev)?;
        let xs = x.to_vec2::<f64>()?;
        let y = if classify {
            let labels: Vec<u32> = xs
                .iter()
                .enumerate()
                .map(|(n, r)| {
                    let label = match (r[0] + r[1] > 0.0, r[2] - r[3] > 0.0) {
                        (true, _) => 0,
                        (false, true) => 1,
                        (false, false) => 2,
                    };
                    // label noise: every fourth sample's class shifted by one
                    if noisy && n % 4 == 3 {
                        (label + 1) % 3
                    } else {
                        label
                    }
                })
                .collect();
            Tensor::new(labels.as_slice(), &dev)?
        } else {
            let t: Vec<f64> = xs
                .iter()
                .map(|r| (1.5 * r[0] - r[1] + 0.5 * r[2]).sin())
                .collect();
            Tensor::from_vec(t, (n, 1), &dev)?
        };
        Ok(Self {
            varmap,
            fc1,
            fc2,
            x,
            y,
            classify,
        })
    }

    pub fn loss(&self) -> vivit::Result<Tensor> {
        let out = self.fc2.forward(&self.fc1.forward(&self.x)?.tanh()?)?;
        if self.classify {
            vivit::loss::cross_entropy(&out, &self.y)
        } else {
            vivit::loss::mse(&out, &self.y)
        }
    }

    pub fn record(&self) -> vivit::Result<vivit::Recorded> {
        vivit::record(|| self.loss())
    }

    /// The variables, sorted by name.
    pub fn vars(&self) -> Vec<Var> {
        vnn::vars_by_name(&self.varmap)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    pub fn values(&self) -> Result<Vec<Vec<f64>>> {
        self.vars()
            .iter()
            .map(|v| Ok(v.flatten_all()?.to_vec1::<f64>()?))
            .collect()
    }
}

impl Task {
    /// The loss on the task's data at the current parameters, for
    /// `DampedNewton::step_with_loss`.
    pub fn loss_after(&self) -> candle_core::Result<Tensor> {
        Task::loss(self).map_err(candle_core::Error::wrap)
    }
}

#[cfg(feature = "optimisers")]
impl candle_optimisers::Model for Task {
    fn loss(&self) -> candle_core::Result<Tensor> {
        self.loss_after()
    }
}
