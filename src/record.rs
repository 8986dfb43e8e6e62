//! The recording scope: what `vivit::record` remembers of a forward pass.
//!
//! BackPACK attaches hooks to modules; Candle has none. Instead, tracked layers
//! ([`crate::nn`]) and tracked losses ([`crate::loss`]) look at a thread-local
//! scope that [`record`] opens around the user's closure. There, every tracked
//! layer call remembers its input and runs as one op of its own, and the
//! tracked loss notes its id, its kind and its targets. A backward pass of
//! `⟨f, Z⟩` from the model output then yields, at each layer output `z_l`, the
//! per-sample signal `∂⟨f, Z⟩/∂z_l` for any seed `Z`: during such a factor
//! pass ([`FactorPasses::run`]) the layers' ops hand the gradient of their
//! output to the pass and skip their parameter gradients, so it costs the
//! input-Jacobian products only. That is how the
//! loss-Hessian factor reaches every layer output (see [`crate::extension`]).
//! The returned loss is an ordinary Candle loss: its backward gives the usual
//! weight gradients.
//!
//! Outside `record`, tracked layers and losses do no extra work and keep nothing
//! alive. When a [`Recorded`] drops, its tape goes with it.

use std::cell::RefCell;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::tape::{FactorPasses, LayerRecord, LossRecord, Tape};

#[derive(Debug, Default)]
struct Scope {
    layers: Vec<LayerRecord>,
    losses: Vec<LossRecord>,
    passes: FactorPasses,
    /// The first misuse a layer met inside the scope, returned by [`record`].
    refusal: Option<Error>,
}

/// The factor passes of the recording scope open on this thread, and the
/// index in the tape that the next layer call gets.
pub(crate) fn factor_passes() -> Option<(FactorPasses, usize)> {
    SCOPE.with(|s| {
        s.borrow()
            .as_ref()
            .map(|s| (s.passes.clone(), s.layers.len()))
    })
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Whether a recording scope is open on this thread.
pub(crate) fn recording() -> bool {
    SCOPE.with(|s| s.borrow().is_some())
}

pub(crate) fn push_layer(record: LayerRecord) {
    SCOPE.with(|s| {
        if let Some(scope) = s.borrow_mut().as_mut() {
            scope.layers.push(record);
        }
    })
}

/// Makes the open recording scope fail with `error` (the first one counts);
/// returns the candle error the refusing layer's forward returns meanwhile.
pub(crate) fn refuse(error: Error) -> candle_core::Error {
    let message = candle_core::Error::Msg(error.to_string());
    SCOPE.with(|s| {
        if let Some(scope) = s.borrow_mut().as_mut() {
            scope.refusal.get_or_insert(error);
        }
    });
    message
}

pub(crate) fn push_loss(record: LossRecord) {
    SCOPE.with(|s| {
        if let Some(scope) = s.borrow_mut().as_mut() {
            scope.losses.push(record);
        }
    })
}

/// Closes the scope when dropped, also when the closure errs or panics.
struct ScopeGuard;

impl ScopeGuard {
    fn open() -> Result<Self> {
        SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_some() {
                return Err(Error::NestedRecord);
            }
            *s = Some(Scope::default());
            Ok(ScopeGuard)
        })
    }

    fn close(self) -> Scope {
        let scope = SCOPE.with(|s| s.borrow_mut().take());
        std::mem::forget(self);
        scope.expect("the scope opened by this guard is still open")
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPE.with(|s| s.borrow_mut().take());
    }
}

/// Tapes of the live `Recorded`s, so that a `GradStore` can be traced back.
static LIVE: Mutex<Vec<Weak<Tape>>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<Weak<Tape>>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tape whose loss produced `grads` (the most recent if several).
pub(crate) fn tape_of(grads: &GradStore) -> Option<Arc<Tape>> {
    live()
        .iter()
        .rev()
        .filter_map(Weak::upgrade)
        .find(|tape| grads.get(tape.probe.as_tensor()).is_some())
}

/// A loss computed inside [`record`], with the tape the computations need.
///
/// It dereferences to the loss [`Tensor`], so it goes wherever a loss goes:
/// `loss.backward()`, `optimizer.backward_step(&loss)`, `loss.to_scalar()`.
///
/// `Recorded` is `Send` and `Sync`: it holds tensors and a reference-counted
/// tape, so it can move to or be shared with another thread and be computed on
/// there; the recording scope of [`record`] itself is per thread.
#[derive(Debug)]
pub struct Recorded {
    loss: Tensor,
    tape: std::result::Result<Arc<Tape>, &'static str>,
}

impl Recorded {
    /// The loss tensor.
    pub fn loss(&self) -> &Tensor {
        &self.loss
    }

    /// The tape, or why there is none.
    pub(crate) fn tape(&self) -> Result<&Arc<Tape>> {
        self.tape
            .as_ref()
            .map_err(|&detail| Error::LossNotTracked { detail })
    }
}

impl Deref for Recorded {
    type Target = Tensor;

    fn deref(&self) -> &Tensor {
        &self.loss
    }
}

/// Runs a forward pass while remembering what the backward extension needs.
///
/// The closure computes the loss of a mini-batch with tracked layers
/// ([`crate::nn`]) and a tracked loss ([`crate::loss`]); anything in between is
/// free-form Candle code (activations, pooling, reshapes, residual additions,
/// branches). Samples must be independent of each other (no train-mode batch
/// norm), as the GGN `G = (1/N) Σ_n J_nᵀ H_n J_n` assumes.
///
/// The returned [`Recorded`] is the loss (it dereferences to the loss tensor,
/// whose backward gives the usual gradients); if the closure did not return a
/// tracked loss, computations on it fail with [`Error::LossNotTracked`], but
/// the loss still trains with any optimizer.
///
/// # Errors
/// Whatever the closure returns; [`Error::NestedRecord`] inside another
/// `record`; [`Error::UnsupportedLayer`] for a train-mode
/// [`crate::nn::BatchNorm`] call inside it.
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
///
/// # fn main() -> vivit::Result<()> {
/// let dev = Device::Cpu;
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
/// let fc = vivit::nn::linear(4, 3, vb.pp("fc"))?;
/// let x = Tensor::randn(0f32, 1., (8, 4), &dev)?;
/// let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &dev)?;
/// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?.tanh()?, &y))?;
/// let grads = loss.backward()?; // an ordinary loss
/// # let _ = grads;
/// # Ok(())
/// # }
/// ```
pub fn record<F, E>(f: F) -> Result<Recorded>
where
    F: FnOnce() -> std::result::Result<Tensor, E>,
    E: Into<Error>,
{
    let guard = ScopeGuard::open()?;
    let loss = f().map_err(Into::into);
    let scope = guard.close();
    if let Some(refusal) = scope.refusal {
        return Err(refusal);
    }
    let loss = loss?;
    let no_loss = scope.losses.is_empty();
    let passes = scope.passes;
    let Some(loss_record) = scope.losses.into_iter().find(|l| l.loss == loss.id()) else {
        let detail = if no_loss {
            " (no tracked loss was called)"
        } else {
            " (the closure returned a tensor computed from the tracked loss, not the loss itself)"
        };
        return Ok(Recorded {
            loss,
            tape: Err(detail),
        });
    };
    let probe = Var::zeros((), loss.dtype(), loss.device())?;
    let tape = Arc::new(Tape {
        layers: scope.layers,
        loss: loss_record,
        value: loss.detach(),
        value_on_host: std::sync::OnceLock::new(),
        passes,
        probe,
    });
    let mut live = live();
    live.retain(|t| t.strong_count() > 0);
    live.push(Arc::downgrade(&tape));
    Ok(Recorded {
        loss: loss.add(tape.probe.as_tensor())?,
        tape: Ok(tape),
    })
}
