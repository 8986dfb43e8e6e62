//! Tracked embedding.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::linalg::host;
use crate::record;
use crate::tape::LayerKind;

/// An embedding `y_{n…} = W[i_{n…}]` of ids `[N, …]` into rows of the weight
/// `W` `[V, D]`, visible to the computations; the forward is exactly
/// candle_nn's.
///
/// The per-sample weight factor is the output signals scattered into the
/// rows of the ids a sample looked up, summed over repeated ids,
/// `(∂ℓ_n/∂W)[v] = Σ_{t : i_{nt} = v} g_{nt}`, without a one-hot.
///
/// # Errors
/// Its forward fails (candle's `index_select`) for an id outside `0..V`;
/// inside [`crate::record()`], [`crate::Error::InvalidIds`] names it.
#[derive(Debug, Clone)]
pub struct Embedding {
    inner: candle_nn::Embedding,
}

impl Embedding {
    /// An embedding from its weight `[V, D]` and `D`.
    pub fn new(embeddings: Tensor, hidden_size: usize) -> Self {
        Self::from(candle_nn::Embedding::new(embeddings, hidden_size))
    }

    /// The weight `[V, D]`.
    pub fn embeddings(&self) -> &Tensor {
        self.inner.embeddings()
    }

    /// `D`.
    pub fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }
}

impl From<candle_nn::Embedding> for Embedding {
    fn from(inner: candle_nn::Embedding) -> Self {
        Self { inner }
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !record::recording() {
            return self.inner.forward(ids);
        }
        // one flag reduced on the ids' device; the ids themselves only on a fault
        let vocab = self.embeddings().dim(0)?;
        let outside = host::any_outside(ids, 0.0, vocab as f64 - 1.0)?;
        if host::scalar(&outside)? > 0.0 {
            let ids = host::read::<i64>(ids)?;
            let (low, high) = (ids.iter().copied().min(), ids.iter().copied().max());
            if let Some(id) = [low, high]
                .into_iter()
                .flatten()
                .find(|&i| i < 0 || i as usize >= vocab)
            {
                return Err(record::refuse(crate::Error::InvalidIds { id, vocab }));
            }
        }
        let output = self.inner.forward(ids)?;
        let weight = self.embeddings();
        super::record_call(LayerKind::Embedding, weight, None, ids.detach(), output)
    }
}

/// A tracked [`Embedding`] of `in_size` ids into `out_size` features,
/// initialised like [`candle_nn::embedding`](fn@candle_nn::embedding) (standard normal).
pub fn embedding(in_size: usize, out_size: usize, vb: VarBuilder) -> Result<Embedding> {
    candle_nn::embedding(in_size, out_size, vb).map(Embedding::from)
}
