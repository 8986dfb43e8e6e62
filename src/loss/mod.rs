//! Tracked losses and the square roots of their Hessians.
//!
//! Every loss reduces with a **mean**, as PyTorch's `reduction="mean"`, over
//! the samples `n` and the positions `p` of an output `[N, …]`:
//!
//! - [`cross_entropy()`] on logits `[N, T…, C]`: `L = (1/(N·T)) Σ_{n,p} −log
//!   softmax(f_{np})[y_{np}]`, and [`cross_entropy_with_ignore`], the mean
//!   over the positions whose target is not the ignore index;
//! - [`mse`] on `[N, …]`: `L = (1/E) Σ (f − y)²` over all `E` entries;
//! - [`binary_cross_entropy_with_logit`] on `[N, …]`: `L = (1/E) Σ
//!   softplus(f) − y f`, the mean of `−y log σ(f) − (1 − y) log(1 − σ(f))`.
//!
//! A sample may hold many positions (tokens of a sequence, pixels): it stays
//! the unit of the per-sample quantities, `ℓ_n`, `g_n`, `G_n`, with
//! `L = (1/N) Σ_n ℓ_n`, so that attention may mix the positions of a sample.
//! The square roots of the Hessians, exact and Monte-Carlo, are in
//! `hessian.rs`.

mod cross_entropy;
mod entrywise;
mod hessian;

use candle_core::Tensor;

pub use cross_entropy::{cross_entropy, cross_entropy_with_ignore};
pub use entrywise::{binary_cross_entropy_with_logit, mse};

use crate::record;
use crate::tape::{LossKind, LossRecord};

/// Tells the recording scope, if one is open, that `loss` is a tracked loss
/// of `output`.
fn remember(
    kind: LossKind,
    output: &Tensor,
    targets: &Tensor,
    mask: Option<Tensor>,
    loss: &Tensor,
) {
    if record::recording() {
        record::push_loss(LossRecord {
            kind,
            output: output.clone(),
            targets: targets.clone(),
            mask,
            loss: loss.id(),
        });
    }
}
