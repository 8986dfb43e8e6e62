//! A training problem: a model, its loss and its training set.

use anyhow::Result;
use candle_core::{Module, Tensor};
use vivit::Recorded;

use crate::data::Dataset;
use crate::network::Network;

/// The loss of a task, one of vivit's tracked losses (both means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// `vivit::loss::cross_entropy` of logits `[n, c]` and class indices `[n]`.
    CrossEntropy,
    /// `vivit::loss::mse` of outputs and targets `[n, c]`, the mean over `n·c`.
    Mse,
}

impl Objective {
    /// The loss of `outputs` against `targets`.
    pub fn loss(self, outputs: &Tensor, targets: &Tensor) -> vivit::Result<Tensor> {
        match self {
            Self::CrossEntropy => vivit::loss::cross_entropy(outputs, targets),
            Self::Mse => vivit::loss::mse(outputs, targets),
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::CrossEntropy => "cross-entropy",
            Self::Mse => "MSE",
        }
    }
}

/// A model being trained on a training set.
pub struct Problem<'a> {
    pub net: &'a Network,
    pub train: &'a Dataset,
    pub objective: Objective,
}

impl Problem<'_> {
    /// The loss on `batch`, recorded for vivit (an ordinary loss tensor to
    /// other optimizers).
    pub fn record(&self, batch: &Dataset) -> Result<Recorded> {
        Ok(vivit::record(|| {
            let outputs = self.net.forward(&batch.inputs)?;
            self.objective.loss(&outputs, &batch.targets)
        })?)
    }

    /// The loss on `data`, not recorded.
    pub fn loss_on(&self, data: &Dataset) -> Result<Tensor> {
        let outputs = self.net.forward(&data.inputs)?;
        Ok(self.objective.loss(&outputs, &data.targets)?)
    }

    /// The loss on the whole training set.
    pub fn train_loss(&self) -> Result<f64> {
        Ok(self.loss_on(self.train)?.to_scalar::<f32>()?.into())
    }
}

impl candle_optimisers::Model for Problem<'_> {
    /// The full-batch training loss at the current parameters (L-BFGS's line search).
    fn loss(&self) -> candle_core::Result<Tensor> {
        self.loss_on(self.train)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    }
}
