//! The classifier of the examples: a ReLU MLP of tracked layers, 64-128-64-10 for
//! the digits unless other widths are asked for.

use std::cell::RefCell;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use vivit::nn as vnn;
use vivit::Recorded;

use super::data::Split;

/// Layer widths of the digits MLP, input to output.
const WIDTHS: [usize; 4] = [64, 128, 64, 10];

/// The MLP, its variables, and the mini-batch of the last recorded loss (so
/// that [`candle_optimisers::Model::loss`] re-evaluates the loss on it).
pub struct Mlp {
    varmap: VarMap,
    layers: Vec<vnn::Linear>,
    batch: RefCell<Option<Split>>,
}

impl Mlp {
    /// The digits MLP (64-128-64-10), initialized as [`Mlp::with_widths`].
    pub fn new(seed: u64, dev: &Device) -> Result<Self> {
        Self::with_widths(&WIDTHS, seed, dev)
    }

    /// An MLP of the layer `widths` (input to output, ReLU between layers) with
    /// PyTorch's default initialization, `U(−1/√fan_in, 1/√fan_in)` for weights
    /// and biases, drawn from `seed` (candle's CPU generator cannot be seeded,
    /// so the variables are overwritten after creation).
    pub fn with_widths(widths: &[usize], seed: u64, dev: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut layers = Vec::new();
        for (i, w) in widths.windows(2).enumerate() {
            let name = format!("fc{}", i + 1);
            let layer = vnn::linear(w[0], w[1], vb.pp(&name))?;
            let bound = 1.0 / (w[0] as f32).sqrt();
            let uniform = Uniform::new_inclusive(-bound, bound)?;
            for suffix in ["weight", "bias"] {
                let var = Self::var(&varmap, &format!("{name}.{suffix}"))?;
                let values: Vec<f32> = (0..var.elem_count())
                    .map(|_| uniform.sample(&mut rng))
                    .collect();
                var.set(&Tensor::from_vec(values, var.shape(), dev)?)?;
            }
            layers.push(layer);
        }
        Ok(Self {
            varmap,
            layers,
            batch: RefCell::new(None),
        })
    }

    fn var(varmap: &VarMap, name: &str) -> Result<Var> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("the VarMap's lock is poisoned"))?;
        data.get(name)
            .cloned()
            .with_context(|| format!("no variable {name}"))
    }

    /// The variables (for candle optimizers; their order does not matter).
    pub fn vars(&self) -> Vec<Var> {
        self.varmap.all_vars()
    }

    /// The variables by name (for [`vivit::DampedNewton::from_varmap`]).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Logits `[n, out]` of inputs `[n, in]` (`[n, 10]` of images `[n, 64]` for the digits).
    pub fn logits(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = images.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }

    /// Mean cross-entropy on `batch`, recorded for vivit's computations;
    /// `batch` becomes the one that [`candle_optimisers::Model::loss`] uses.
    pub fn record_loss(&self, batch: &Split) -> Result<Recorded> {
        let loss = vivit::record(|| {
            vivit::loss::cross_entropy(&self.logits(&batch.images)?, &batch.labels)
        })?;
        self.batch.replace(Some(batch.clone()));
        Ok(loss)
    }

    /// Mean cross-entropy on `split`, not recorded.
    pub fn loss(&self, split: &Split) -> Result<f64> {
        let loss = vivit::loss::cross_entropy(&self.logits(&split.images)?, &split.labels)?;
        Ok(loss.to_scalar::<f32>()?.into())
    }

    /// Fraction of `split` classified correctly.
    pub fn accuracy(&self, split: &Split) -> Result<f64> {
        let predicted = self.logits(&split.images)?.argmax(D::Minus1)?;
        let correct = predicted
            .eq(&split.labels)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(f64::from(correct) / split.len() as f64)
    }
}

impl candle_optimisers::Model for Mlp {
    /// The loss on the batch of the last [`Mlp::record_loss`], at the current
    /// parameters.
    fn loss(&self) -> candle_core::Result<Tensor> {
        let batch = self.batch.borrow();
        let batch = batch
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("no loss was recorded yet".into()))?;
        vivit::loss::cross_entropy(&self.logits(&batch.images)?, &batch.labels)
            .map_err(candle_core::Error::wrap)
    }
}
