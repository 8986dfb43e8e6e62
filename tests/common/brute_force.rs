//! The explicit GGN of tiny f64 nets; the comparison of every computation
//! with it is in [`super::ggn_checks`].
//!
//! The GGN is built from per-sample, per-output Jacobian rows (one candle
//! backward each) and the closed-form loss Hessian:
//! `G_S = (1/|S|) Σ_{n∈S} J_nᵀ H_n J_n`, `H_n = diag(p_n) − p_n p_nᵀ` (cross-entropy)
//! or `(2/C) I` (MSE, mean over N·C). Per-sample gradients come from one
//! backward of each sample's unreduced loss.
//!
//! # Tolerances
//!
//! Both sides compute in f64 (unit roundoff `u = 2⁻⁵³ ≈ 1.1e-16`). Their sums
//! run over at most `D·C·N ≤ SIZE²` products (asserted), so with the usual
//! probabilistic bound rounding errors grow like `u·SIZE` relative to the
//! largest eigenvalue `λ_max`. Eigenvectors `e_k = V ẽ_k / √λ_k`, slopes and
//! the steps divide by `√λ_k` or `λ_k`, which amplifies that by at most
//! `λ_max/λ_k ≤ KAPPA`: directions below `λ_max/KAPPA` are not compared (the
//! Newton checks keep only directions above it). Hence [`RTOL`] `= u·SIZE·KAPPA`,
//! relative to the largest value compared.

use anyhow::{ensure, Result};
use candle_core::{DType, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::to_f64;

/// Bound on `√(D·C·N)` of the problems compared.
pub const SIZE: f64 = 1e3;
/// Largest `λ_max/λ_k` of a compared direction.
pub const KAPPA: f64 = 1e4;
/// `u·SIZE·KAPPA` ≈ 1.1e-9 (see the module docs).
pub const RTOL: f64 = f64::EPSILON / 2.0 * SIZE * KAPPA;

pub use super::losses::Loss;

pub type Forward = Box<dyn Fn() -> candle_core::Result<Tensor>>;

/// A net (its forward pass on a fixed batch), its loss and its targets.
pub struct Problem {
    pub varmap: VarMap,
    pub forward: Forward,
    /// The same function for the Jacobians, where candle's gradient of a
    /// tracked layer's own op is wrong (conv1d kernels in candle 0.10.2).
    pub jacobian_forward: Option<Forward>,
    pub loss: Loss,
    pub targets: Tensor,
}

/// A builder of f64 variables in `varmap` on [`super::device`] (the CPU
/// unless `examples/device_check` chose another).
pub fn vb(varmap: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F64, &super::device())
}

/// The 5-4-3 tanh MLP of tracked linear layers on a batch of `batch` inputs
/// from `seed` (candle's initialization), with `loss`.
pub fn tanh_mlp(loss: Loss, batch: usize, seed: u64) -> Result<Problem> {
    let varmap = VarMap::new();
    let fc1 = vivit::nn::linear(5, 4, vb(&varmap).pp("fc1"))?;
    let fc2 = vivit::nn::linear(4, 3, vb(&varmap).pp("fc2"))?;
    let x = input(&[batch, 5], seed)?;
    Problem::new(
        varmap,
        move || fc2.forward(&fc1.forward(&x)?.tanh()?),
        loss,
        seed,
    )
}

/// A padded, stride-2 3×3 convolution (2 → 2 channels) on 4 inputs
/// `[2, 4, 4]`, tanh, and a tracked linear head to 3 classes, with
/// cross-entropy.
pub fn strided_conv() -> Result<Problem> {
    let varmap = VarMap::new();
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let conv = vivit::nn::conv2d(2, 2, 3, cfg, vb(&varmap).pp("conv"))?;
    let fc = vivit::nn::linear(8, 3, vb(&varmap).pp("fc"))?;
    let x = input(&[4, 2, 4, 4], 8)?;
    Problem::new(
        varmap,
        move || fc.forward(&conv.forward(&x)?.tanh()?.flatten_from(1)?),
        Loss::CrossEntropy,
        8,
    )
}

/// `[[0, 1, …]]`, one group of every parameter of `problem`.
pub fn one_group(problem: &Problem) -> Vec<Vec<usize>> {
    vec![(0..problem.params().len()).collect()]
}

/// A group per parameter of `problem`.
pub fn per_param(problem: &Problem) -> Vec<Vec<usize>> {
    (0..problem.params().len()).map(|i| vec![i]).collect()
}

/// Deterministic inputs `sin((i + 1)(seed + 0.37))` of `shape`, on
/// [`super::device`].
pub fn input(shape: &[usize], seed: u64) -> Result<Tensor> {
    let count: usize = shape.iter().product();
    let data: Vec<f64> = (0..count)
        .map(|i| ((i as f64 + 1.0) * (seed as f64 + 0.37)).sin())
        .collect();
    Ok(Tensor::from_vec(data, shape, &super::device())?)
}

impl Problem {
    /// Targets from `seed` ([`Loss::targets`]).
    pub fn new(
        varmap: VarMap,
        forward: impl Fn() -> candle_core::Result<Tensor> + 'static,
        loss: Loss,
        seed: u64,
    ) -> Result<Self> {
        let targets = loss.targets(&forward()?, seed)?;
        Ok(Self {
            varmap,
            forward: Box::new(forward),
            jacobian_forward: None,
            loss,
            targets,
        })
    }

    /// Parameters in a stable order (sorted by VarMap name).
    pub fn params(&self) -> Vec<(String, Var)> {
        vivit::nn::vars_by_name(&self.varmap)
    }

    pub fn batch_size(&self) -> Result<usize> {
        Ok(self.targets.dim(0)?)
    }

    pub fn record(&self) -> Result<vivit::Recorded> {
        Ok(vivit::record(|| {
            self.loss.record(&(self.forward)()?, &self.targets)
        })?)
    }

    /// The explicit GGN block of `params` on the samples `samples`, row-major
    /// `D×D`: `G_S = (1/Z_S) Σ_{n∈S} J_nᵀ (Σ_p w_{np} ∇²φ_{np}) J_n`.
    pub fn ggn(&self, params: &[Var], samples: &[usize]) -> Result<(Vec<f64>, usize)> {
        let z = self
            .loss
            .normalizer(&self.output()?, &self.targets, samples)?;
        self.weighted_ggn(params, samples, 1.0 / z)
    }

    /// The per-sample GGN `G_n` of sample `n` among the samples `samples`,
    /// those whose mean is `G_S`: `G_n = (|S|/Z_S) J_nᵀ (Σ_p w_{np} ∇²φ_{np}) J_n`.
    pub fn sample_ggn(&self, params: &[Var], n: usize, samples: &[usize]) -> Result<Vec<f64>> {
        let z = self
            .loss
            .normalizer(&self.output()?, &self.targets, samples)?;
        Ok(self.weighted_ggn(params, &[n], samples.len() as f64 / z)?.0)
    }

    /// The output, from the forward pass for the Jacobians.
    fn output(&self) -> candle_core::Result<Tensor> {
        match &self.jacobian_forward {
            Some(forward) => forward(),
            None => (self.forward)(),
        }
    }

    /// `scale · Σ_{n∈samples} J_nᵀ (Σ_p w_{np} ∇²φ_{np}) J_n` row-major `D×D`,
    /// from one backward per output entry of each sample.
    fn weighted_ggn(
        &self,
        params: &[Var],
        samples: &[usize],
        scale: f64,
    ) -> Result<(Vec<f64>, usize)> {
        let out = self.output()?;
        let (n, f) = (out.dim(0)?, out.elem_count() / out.dim(0)?);
        let d: usize = params.iter().map(|p| p.elem_count()).sum();
        ensure!(
            (d * f * n) as f64 <= SIZE * SIZE,
            "D·F·N = {} exceeds the size the tolerances assume",
            d * f * n
        );
        let mut g = vec![0f64; d * d];
        for &n in samples {
            let f_n = out.narrow(0, n, 1)?;
            let mut jac = Vec::with_capacity(f); // rows J_n[k, :]
            for k in 0..f {
                let grads = f_n.flatten_all()?.narrow(0, k, 1)?.sum_all()?.backward()?;
                jac.push(flatten_grads(&grads, params)?);
            }
            let h = self.loss.hessian(&f_n, &self.targets.narrow(0, n, 1)?)?;
            for (a, row_a) in jac.iter().enumerate() {
                for (b, row_b) in jac.iter().enumerate() {
                    let w = h[a][b] * scale;
                    if w == 0.0 {
                        continue;
                    }
                    for i in 0..d {
                        let wi = w * row_a[i];
                        for j in 0..d {
                            g[i * d + j] += wi * row_b[j];
                        }
                    }
                }
            }
        }
        Ok((g, d))
    }

    /// Per-sample gradients `∇_θ ℓ_n` on the samples `S`, flattened over
    /// `params`: `ℓ_n = (|S|/Z_S) Σ_p w_{np} φ_{np}`, so that their mean is
    /// the gradient of the mean loss on `S`.
    pub fn sample_gradients(&self, params: &[Var], samples: &[usize]) -> Result<Vec<Vec<f64>>> {
        let out = (self.forward)()?;
        let z = self.loss.normalizer(&out, &self.targets, samples)?;
        samples
            .iter()
            .map(|&n| {
                let f = out.narrow(0, n, 1)?;
                let y = self.targets.narrow(0, n, 1)?;
                let loss = (self.loss.weighted_sum(&f, &y)? * (samples.len() as f64 / z))?;
                flatten_grads(&loss.backward()?, params)
            })
            .collect()
    }

    /// Names and variables of the parameters at `indices`.
    pub fn group_params(&self, indices: &[usize]) -> (Vec<String>, Vec<Var>) {
        let named = self.params();
        indices.iter().map(|&i| named[i].clone()).unzip()
    }
}

/// The gradients of `params` in `grads`, flattened and concatenated (zero where absent).
fn flatten_grads(grads: &candle_core::backprop::GradStore, params: &[Var]) -> Result<Vec<f64>> {
    let mut row = Vec::new();
    for p in params {
        match grads.get(p.as_tensor()) {
            Some(gp) => row.extend(to_f64(gp)?),
            None => row.extend(std::iter::repeat_n(0.0, p.elem_count())),
        }
    }
    Ok(row)
}
