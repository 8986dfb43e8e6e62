//! The tape: what a recorded forward pass leaves for the computations (the
//! tracked layer calls, the tracked loss, the factor passes over its graph).
//! A leaf: it knows no loss formulas and no layer algebra.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::{Shape, Tensor, TensorId, Var};

/// The kind of a tracked loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossKind {
    /// Softmax cross-entropy over the last axis, at every position.
    CrossEntropy,
    /// Squared error of every entry.
    Mse,
    /// Sigmoid binary cross-entropy of every entry.
    BinaryCrossEntropyWithLogits,
}

/// What a tracked layer computes, as far as its per-sample factor algebra cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    /// `y = x Wᵀ + b` on the last axis.
    Linear,
    /// A 1-d or 2-d convolution (1-d is treated as 2-d with a height of one).
    Conv {
        /// `(height, width)` of the padding, stride and dilation.
        padding: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    },
    /// A 1-d or 2-d transposed convolution, weight `[I, O, k…]`, groups = 1
    /// (1-d as 2-d with a height of one).
    ConvTranspose {
        /// `(height, width)` of the padding, stride and dilation.
        padding: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    },
    /// `y = x̂ ⊙ w + b` per feature `d`, with `x̂` the normalized input, on the
    /// last axis (`features_last`: LayerNorm, RMSNorm) or axis 1 (BatchNorm).
    Scale { features_last: bool },
    /// `y_{nt} = W[i_{nt}]`, the rows of the ids `i`.
    Embedding,
}

/// One call of a tracked layer in the recorded forward pass.
#[derive(Debug)]
pub(crate) struct LayerRecord {
    pub kind: LayerKind,
    /// The layer's weight (same tensor id as the user's `Var`).
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// What the weight multiplies, detached: the input `[N, …, I]` of a
    /// linear layer, the patches `[N, I·k_h·k_w, P]` of a convolution, the
    /// input `[N, I, P]` of a transposed convolution, the
    /// normalized input `x̂` of a scale (the output's shape), the ids `[N, T…]` of an
    /// embedding.
    pub inputs: Tensor,
    /// Where the factor passes find the gradient of the call's output.
    pub signal: Signal,
}

/// Where a factor pass finds the gradient `∂⟨f, Z⟩/∂z` of a layer call's output.
#[derive(Debug)]
pub(crate) enum Signal {
    /// The call's op hands it over ([`FactorPasses::capture`]) under the call's
    /// index in the tape; zeros of `shape` if the backward does not reach it.
    Captured { index: usize, shape: Shape },
    /// A zero variable added to the output, for layers that run candle's ops
    /// (the generic kernel path): its gradient.
    Probe(Var),
}

/// One call of a tracked loss.
#[derive(Debug)]
pub(crate) struct LossRecord {
    pub kind: LossKind,
    /// The model output fed to the loss, with its graph.
    pub output: Tensor,
    /// The targets (class indices as u32, 0 at ignored positions; or
    /// regression or binary targets, shaped as the output).
    pub targets: Tensor,
    /// `1` at the positions `[N, T…]` that count, `0` at ignored ones, in the
    /// output's dtype (cross-entropy with an ignore index only).
    pub mask: Option<Tensor>,
    /// Id of the loss tensor the loss function returned.
    pub loss: TensorId,
}

/// The identity of a recorded graph for its factor passes.
///
/// A factor pass ([`FactorPasses::run`]) is a backward pass whose tracked
/// layers skip their parameter gradients and hand their output gradients
/// `∂⟨f, Z⟩/∂z` to the pass ([`FactorPasses::capture`]). Passes are per
/// thread: a backward of the same loss on another thread (or outside `run`)
/// is an ordinary one. Candle runs a backward on the calling thread, so the
/// layers' ops see the pass there; passes nest when a thread waiting inside
/// one (in a parallel product) runs another.
#[derive(Debug, Default, Clone)]
pub(crate) struct FactorPasses(Arc<()>);

/// A factor pass running on this thread: its graph, and the output gradients
/// of the tracked layer calls by call index.
struct Pass {
    graph: *const (),
    signals: Vec<Option<Tensor>>,
}

thread_local! {
    /// The factor passes running on this thread, innermost last.
    static PASSES: RefCell<Vec<Pass>> = const { RefCell::new(Vec::new()) };
}

impl FactorPasses {
    fn graph(&self) -> *const () {
        Arc::as_ptr(&self.0)
    }

    /// Whether the innermost pass on this thread runs on this graph.
    pub fn running(&self) -> bool {
        PASSES.with(|p| p.borrow().last().is_some_and(|p| p.graph == self.graph()))
    }

    /// Hands the output gradient of tracked layer call `index` to the pass
    /// running on this graph, if any.
    pub fn capture(&self, index: usize, grad: &Tensor) {
        PASSES.with(|p| {
            if let Some(pass) = p.borrow_mut().last_mut() {
                if pass.graph == self.graph() {
                    if let Some(slot) = pass.signals.get_mut(index) {
                        *slot = Some(grad.clone());
                    }
                }
            }
        })
    }

    /// Runs the backward pass `f` as a factor pass over a graph of `calls`
    /// tracked layer calls; returns its result and the output gradients the
    /// calls handed over (`None` for calls the backward did not reach or that
    /// run candle's ops).
    pub fn run<R>(&self, calls: usize, f: impl FnOnce() -> R) -> (R, Vec<Option<Tensor>>) {
        /// Ends the pass, also on panic.
        struct End;
        impl Drop for End {
            fn drop(&mut self) {
                PASSES.with(|p| p.borrow_mut().pop());
            }
        }
        PASSES.with(|p| {
            p.borrow_mut().push(Pass {
                graph: self.graph(),
                signals: vec![None; calls],
            })
        });
        let end = End;
        let result = f();
        let signals = PASSES.with(|p| {
            p.borrow_mut()
                .last_mut()
                .map(|pass| std::mem::take(&mut pass.signals))
                .unwrap_or_default()
        });
        drop(end);
        (result, signals)
    }
}

/// What the computations need of a recorded forward pass.
#[derive(Debug)]
pub(crate) struct Tape {
    /// Tracked layer calls, in call order.
    pub layers: Vec<LayerRecord>,
    /// The tracked loss; its `output` carries the graph.
    pub loss: LossRecord,
    /// The loss value, detached.
    pub value: Tensor,
    /// The loss value on the host, once read ([`Tape::loss_value`]).
    pub value_on_host: std::sync::OnceLock<f64>,
    /// Factor passes running on the graph (see [`FactorPasses`]).
    pub passes: FactorPasses,
    /// Zero variable added to the returned loss: its gradient in a `GradStore`
    /// tells that the store came from this tape's loss.
    pub probe: Var,
}

impl Tape {
    /// The loss value as an f64 on the host: read (one counted copy) at the
    /// first call, then kept, so that a pass and the step after it
    /// synchronize for it once.
    pub fn loss_value(&self) -> crate::Result<f64> {
        if let Some(&value) = self.value_on_host.get() {
            return Ok(value);
        }
        let value = crate::linalg::host::scalar(&self.value)?;
        Ok(*self.value_on_host.get_or_init(|| value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A factor pass runs on its thread and graph only: another thread sees
    /// none, another graph's layers hand it nothing, and nested passes each
    /// get their own gradients.
    #[test]
    fn factor_passes_are_per_thread_and_per_graph() -> candle_core::Result<()> {
        let (graph, other) = (FactorPasses::default(), FactorPasses::default());
        let g = Tensor::ones(2, candle_core::DType::F32, &Device::Cpu)?;
        let ((), signals) = graph.run(3, || {
            assert!(graph.running() && !other.running());
            let elsewhere = std::thread::scope(|s| s.spawn(|| graph.running()).join());
            assert!(!elsewhere.expect("the thread ran"));
            graph.capture(0, &g);
            other.capture(1, &g);
            let ((), inner) = graph.run(3, || graph.capture(2, &g));
            assert!(inner[2].is_some() && inner[0].is_none());
        });
        assert!(!graph.running());
        let got: Vec<bool> = signals.iter().map(Option::is_some).collect();
        assert_eq!(got, [true, false, false]);
        Ok(())
    }
}
