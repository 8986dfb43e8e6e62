//! Tracked batch normalization, in evaluation mode.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::{BatchNormConfig, VarBuilder};

use crate::kernels::ScaleCall;
use crate::record;

/// Batch normalization of inputs `[N, C, …]` with running statistics,
/// `y = x̂ ⊙ w + b` per channel `c` with `x̂ = (x − μ_c)/√(σ²_c + ε)`, whose
/// weight and bias `[C]` are visible to the computations in evaluation mode,
/// [`ModuleT::forward_t`]`(x, false)` (exactly candle_nn's forward).
///
/// Only there are the samples independent, as the GGN
/// `G = (1/N) Σ_n J_nᵀ H_n J_n` assumes; a train-mode call (batch statistics)
/// inside [`crate::record()`] is refused with [`crate::Error::UnsupportedLayer`]
/// and leaves the running statistics as they were. Outside `record` both
/// modes are candle_nn's.
///
/// [`batch_norm`] registers the running mean and variance as variables of the
/// `VarMap` (`….running_mean`, `….running_var`, as candle_nn does): they are
/// not trained. [`crate::DampedNewton::from_varmap`] leaves them out; leave
/// them out of explicit parameter groups too, or the computations refuse
/// them ([`crate::Error::ParamNotRecorded`]).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
}

impl BatchNorm {
    /// The running mean `[C]`.
    pub fn running_mean(&self) -> &Tensor {
        self.inner.running_mean()
    }

    /// The running variance `[C]`.
    pub fn running_var(&self) -> &Tensor {
        self.inner.running_var()
    }

    /// The weight and bias `[C]`, if affine.
    pub fn weight_and_bias(&self) -> Option<(&Tensor, &Tensor)> {
        self.inner.weight_and_bias()
    }
}

impl From<candle_nn::BatchNorm> for BatchNorm {
    fn from(inner: candle_nn::BatchNorm) -> Self {
        Self { inner }
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !record::recording() {
            return self.inner.forward_t(x, train);
        }
        if train {
            let error = crate::Error::UnsupportedLayer(
                "BatchNorm in train mode inside vivit::record: batch statistics couple the \
                 samples; call forward_t(x, false)"
                    .into(),
            );
            return Err(record::refuse(error));
        }
        let Some((weight, bias)) = self.inner.weight_and_bias() else {
            return self.inner.forward_t(x, false);
        };
        // candle_nn's forward, op for op, keeping x̂ = (x − μ)/σ: y = x̂ ⊙ w + b
        // with the statistics and parameters broadcast along the channels
        let mut channels = vec![1; x.rank()];
        channels[1] = x.dim(1)?;
        let stat = |t: &Tensor| t.reshape(channels.as_slice());
        let std = (stat(self.running_var())? + self.inner.eps())?.sqrt()?;
        let x_hat = x
            .broadcast_sub(&stat(self.running_mean())?)?
            .broadcast_div(&std)?;
        let w = stat(weight)?;
        let output = x_hat.broadcast_mul(&w)?.broadcast_add(&stat(bias)?)?;
        let x_hat = x_hat.detach();
        let call = ScaleCall {
            input: x,
            x_hat: &x_hat,
            multiplier: &w.broadcast_div(&std)?,
            weight,
            bias: Some(bias),
            output: &output,
            features_last: false,
        };
        super::record_scale(call)
    }
}

/// Whether the variable `name` (a `VarMap` path) is a running statistic of
/// [`batch_norm`]: its last component is `running_mean` or `running_var`.
pub(crate) fn is_running_statistic(name: &str) -> bool {
    matches!(
        name.rsplit('.').next(),
        Some("running_mean" | "running_var")
    )
}

/// A tracked [`BatchNorm`] of `num_features` channels, initialised like
/// [`candle_nn::batch_norm`](fn@candle_nn::batch_norm).
pub fn batch_norm<C: Into<BatchNormConfig>>(
    num_features: usize,
    config: C,
    vb: VarBuilder,
) -> Result<BatchNorm> {
    candle_nn::batch_norm(num_features, config, vb).map(BatchNorm::from)
}
