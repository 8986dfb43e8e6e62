//! Where an extended backward pass spends its time: the stage each part of
//! the pass belongs to, kept as data ([`Timings`]) and, with `verbose`,
//! printed as it happens.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::linalg::host::{self, Transfers};

/// A stage of an extended backward pass. A pass is a sequence of stretches,
/// each opened by the mark of its stage and closed by the next mark (or the
/// end of the pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Checks and bookkeeping: before the first mark, and after a group's
    /// step is done.
    Other,
    /// Backpropagating the loss-Hessian factor (and the per-sample gradients)
    /// to the outputs of the tracked layers.
    FactorBackprop,
    /// Forming Gram matrices `G̃ = Vᵀ V` (or the partial solver's products).
    Gram,
    /// Eigenvalues (and Gram eigenvectors) of `G̃`, full or partial, and the
    /// criterion's choice.
    Eigensolver,
    /// Eigenvectors in parameter space, `e_k = V ẽ_k / √λ_k`.
    Eigenvectors,
    /// Directional derivatives `γ[n,k]`, `λ[n,k]`.
    DirectionalDerivatives,
    /// The Cholesky factorization of `G̃ + δ I` (the Woodbury step).
    Cholesky,
    /// A damped Newton step from the solved quantities.
    Step,
}

/// The stages of one extended backward pass, in order: each stretch with its
/// duration. Returned by [`crate::backward`] and in
/// [`crate::optim::StepReport::timings`]; the same marks are the `verbose`
/// lines.
///
/// ```
/// # use candle_core::{DType, Device, Module, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use vivit::{extension::Stage, EigvalshComputation, ParamGroup};
/// # fn main() -> vivit::Result<()> {
/// # let dev = Device::Cpu;
/// # let varmap = VarMap::new();
/// # let fc = vivit::nn::linear(4, 3, VarBuilder::from_varmap(&varmap, DType::F64, &dev))?;
/// # let x = Tensor::randn(0f64, 1., (5, 4), &dev)?;
/// # let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
/// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
/// let groups = [ParamGroup::new(varmap.all_vars())];
/// let timings = vivit::backward(&loss, &groups, &mut [&mut EigvalshComputation::new()])?;
/// assert!(timings.total(Stage::FactorBackprop) <= timings.elapsed());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    stretches: Vec<(Stage, Duration)>,
    transfers: Transfers,
}

impl Timings {
    /// The copies of values between the model's device and the host during
    /// the pass (Gram matrices to the eigensolvers and back, Monte-Carlo
    /// draws, the scalars read to steer the pass): on a GPU the traffic over
    /// the bus, each read a synchronization; on the CPU conversions.
    ///
    /// Eigvalsh of a linear layer `4 → 3` on `N = 5` samples with
    /// cross-entropy in f64: the loss value goes to the host to be checked
    /// (8 bytes); the exact factor has `N (C − 1) = 10` columns, so the Gram
    /// matrix `10 × 10` goes there too (800 bytes), and the `N C = 15`
    /// eigenvalues (with the `N` zeros the factor leaves out) come back
    /// (120 bytes):
    ///
    /// ```
    /// # use candle_core::{DType, Device, Module, Tensor};
    /// # use candle_nn::{VarBuilder, VarMap};
    /// # use vivit::{extension::Transfers, EigvalshComputation, ParamGroup};
    /// # fn main() -> vivit::Result<()> {
    /// # let dev = Device::Cpu;
    /// # let varmap = VarMap::new();
    /// # let fc = vivit::nn::linear(4, 3, VarBuilder::from_varmap(&varmap, DType::F64, &dev))?;
    /// # let x = Tensor::randn(0f64, 1., (5, 4), &dev)?;
    /// # let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
    /// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
    /// let groups = [ParamGroup::new(varmap.all_vars())];
    /// let timings = vivit::backward(&loss, &groups, &mut [&mut EigvalshComputation::new()])?;
    /// let moved = Transfers { to_host: 2, to_host_bytes: 808, to_device: 1, to_device_bytes: 120 };
    /// assert_eq!(timings.transfers(), moved);
    /// # Ok(())
    /// # }
    /// ```
    pub fn transfers(&self) -> Transfers {
        self.transfers
    }

    /// The stretches of the pass, in order.
    pub fn stretches(&self) -> &[(Stage, Duration)] {
        &self.stretches
    }

    /// The time spent in `stage`, all its stretches together.
    pub fn total(&self, stage: Stage) -> Duration {
        self.stretches
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|(_, d)| *d)
            .sum()
    }

    /// The whole pass.
    pub fn elapsed(&self) -> Duration {
        self.stretches.iter().map(|(_, d)| *d).sum()
    }
}

/// The marks of a pass running on this thread.
struct Pass {
    start: Instant,
    marks: Vec<(Stage, Instant)>,
    /// This thread's transfers when the pass opened.
    moved: Transfers,
}

thread_local! {
    /// The extended backward passes running on this thread, innermost last.
    static PASSES: RefCell<Vec<Pass>> = const { RefCell::new(Vec::new()) };
}

/// Opens a pass on this thread.
pub(super) fn start() {
    PASSES.with(|p| {
        p.borrow_mut().push(Pass {
            start: Instant::now(),
            marks: Vec::new(),
            moved: host::transfers(),
        })
    });
}

/// Closes the innermost pass on this thread and returns its stretches.
pub(super) fn finish() -> Timings {
    let now = Instant::now();
    let Some(pass) = PASSES.with(|p| p.borrow_mut().pop()) else {
        return Timings::default();
    };
    let mut stretches = Vec::with_capacity(pass.marks.len() + 1);
    let mut open = (Stage::Other, pass.start);
    for &(stage, at) in pass.marks.iter().chain([(Stage::Other, now)].iter()) {
        stretches.push((open.0, at.saturating_duration_since(open.1)));
        open = (stage, at);
    }
    Timings {
        stretches,
        transfers: host::transfers().since(pass.moved),
    }
}

/// Opens a stretch of `stage` in the innermost pass of this thread; with
/// `verbose`, prints `message` to stderr with the time since the pass started.
pub(crate) fn mark(stage: Stage, verbose: bool, message: impl FnOnce() -> String) {
    let now = Instant::now();
    let start = PASSES.with(|p| {
        let mut passes = p.borrow_mut();
        let pass = passes.last_mut()?;
        pass.marks.push((stage, now));
        Some(pass.start)
    });
    if verbose {
        let ms = start.map_or(0.0, |t| now.duration_since(t).as_secs_f64() * 1e3);
        eprintln!("[vivit {ms:8.1} ms] {}", message());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stretches run from mark to mark, the first from the start as `Other`,
    /// the last to the end; nested passes keep their own marks.
    #[test]
    fn stretches_run_from_mark_to_mark() {
        start();
        mark(Stage::FactorBackprop, false, String::new);
        start();
        mark(Stage::Cholesky, false, String::new);
        let inner = finish();
        mark(Stage::Gram, false, String::new);
        let outer = finish();
        let stages = |t: &Timings| t.stretches().iter().map(|(s, _)| *s).collect::<Vec<_>>();
        assert_eq!(stages(&inner), [Stage::Other, Stage::Cholesky]);
        assert_eq!(
            stages(&outer),
            [Stage::Other, Stage::FactorBackprop, Stage::Gram]
        );
        assert!(outer.total(Stage::FactorBackprop) >= inner.elapsed());
        assert_eq!(finish(), Timings::default(), "no pass open");
    }
}
