//! What one iteration of a computation benchmark runs (see `main.rs`).

use std::hint::black_box;
use std::time::Instant;

use candle_nn::{Optimizer, SGD};
use vivit::{
    Computation, DampedNewton, DampedNewtonConfig, DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation, Eigensolver, EighComputation, EigvalshComputation,
};

use super::problems::{Problem, SEED};

/// The GGN a computation uses: exact, or Monte-Carlo with one sample.
#[derive(Debug, Clone, Copy)]
pub enum Ggn {
    Exact,
    Mc1,
}

/// Where `DampedNewton`'s step takes the gradient from.
#[derive(Debug, Clone, Copy)]
pub enum Gradient {
    /// `backward_step`: the gradients of the loss's backward.
    Handed,
    /// `loss.backward()` then `step_recorded`: the gradient factor pass
    /// again (what `backward_step` did before it used the handed gradients).
    Recomputed,
}

/// What one benchmark iteration runs.
#[derive(Debug, Clone, Copy)]
pub enum Task {
    /// Forward, backward and a plain SGD update (`candle_nn::SGD`).
    SgdStep,
    /// All eigenvalues of the GGN.
    Eigvalsh,
    /// The 10 leading eigenpairs of the GGN.
    Eigh,
    /// The 10 leading eigenpairs of the GGN with the given eigensolver.
    EighWith(Eigensolver),
    /// Directional derivatives along the 10 leading eigenvectors.
    DirectionalDerivatives(Ggn),
    /// The directionally damped Newton step along them.
    Newton(Ggn),
    /// A `DampedNewton` step with the default configuration (forward,
    /// backward and step).
    BackwardStep(Gradient),
}

/// Every benchmarked task, in order.
pub const TASKS: [Task; 9] = [
    Task::Eigvalsh,
    Task::Eigh,
    Task::SgdStep,
    Task::DirectionalDerivatives(Ggn::Exact),
    Task::DirectionalDerivatives(Ggn::Mc1),
    Task::Newton(Ggn::Exact),
    Task::Newton(Ggn::Mc1),
    Task::BackwardStep(Gradient::Handed),
    Task::BackwardStep(Gradient::Recomputed),
];
/// The tasks of the `eigh_partial` group.
pub const PARTIAL_TASKS: [Task; 2] = [
    Task::EighWith(Eigensolver::Partial),
    Task::EighWith(Eigensolver::Full),
];

impl Task {
    /// The criterion group.
    pub fn group(self) -> &'static str {
        match self {
            Task::SgdStep => "sgd_step",
            Task::Eigvalsh => "eigvalsh",
            Task::Eigh => "eigh",
            Task::EighWith(_) => "eigh_partial",
            Task::DirectionalDerivatives(_) => "directional_derivatives",
            Task::Newton(_) => "newton",
            Task::BackwardStep(_) => "backward_step",
        }
    }

    /// The variant, if the task has several.
    pub fn variant(self) -> Option<&'static str> {
        match self {
            Task::DirectionalDerivatives(ggn) | Task::Newton(ggn) => Some(match ggn {
                Ggn::Exact => "exact",
                Ggn::Mc1 => "mc1",
            }),
            Task::BackwardStep(gradient) => Some(match gradient {
                Gradient::Handed => "handed",
                Gradient::Recomputed => "recomputed",
            }),
            Task::EighWith(solver) => Some(match solver {
                Eigensolver::Partial => "partial",
                Eigensolver::Full => "full",
                Eigensolver::Auto => "auto",
            }),
            _ => None,
        }
    }

    /// The full id, `group/problem[/variant]`.
    pub fn id(self, problem: &str) -> String {
        match self.variant() {
            Some(variant) => format!("{}/{problem}/{variant}", self.group()),
            None => format!("{}/{problem}", self.group()),
        }
    }

    /// The computation of the task (`None` for the optimizer steps).
    fn computation(self, verbose: bool) -> Option<Box<dyn Computation>> {
        fn mc<C>(computation: C, ggn: Ggn, mc1: impl FnOnce(C) -> C) -> C {
            match ggn {
                Ggn::Exact => computation,
                Ggn::Mc1 => mc1(computation),
            }
        }
        Some(match self {
            Task::SgdStep | Task::BackwardStep(_) => return None,
            Task::Eigvalsh => Box::new(EigvalshComputation::new().verbose(verbose)),
            Task::Eigh => Box::new(EighComputation::new().verbose(verbose)),
            Task::EighWith(solver) => {
                Box::new(EighComputation::new().eigensolver(solver).verbose(verbose))
            }
            Task::DirectionalDerivatives(ggn) => Box::new(mc(
                DirectionalDerivativesComputation::new().verbose(verbose),
                ggn,
                |c| c.mc_samples_ggn(1).seed(SEED),
            )),
            Task::Newton(ggn) => Box::new(mc(
                DirectionalDampedNewtonComputation::new().verbose(verbose),
                ggn,
                |c| c.mc_samples_ggn(1).seed(SEED),
            )),
        })
    }

    /// One iteration on `problem`: record and compute, or an optimizer step.
    pub fn run(self, problem: &Problem, verbose: bool) -> vivit::Result<()> {
        if let Task::BackwardStep(gradient) = self {
            let config = DampedNewtonConfig::default().verbose(verbose);
            let mut opt = DampedNewton::from_varmap(&problem.varmap, config);
            let loss = vivit::record(|| problem.loss())?;
            return match gradient {
                Gradient::Handed => Ok(opt.backward_step(&loss)?),
                Gradient::Recomputed => {
                    // the gradients stay alive through the step, as in backward_step
                    let grads = loss.backward()?;
                    let step = opt.step_recorded(&loss).map(|_| ());
                    black_box(grads);
                    step
                }
            };
        }
        let Some(mut computation) = self.computation(verbose) else {
            let mut sgd = SGD::new(problem.varmap.all_vars(), 1e-3)?;
            return Ok(sgd.backward_step(&problem.loss()?)?);
        };
        let groups = problem.groups();
        let start = Instant::now();
        let loss = vivit::record(|| problem.loss())?;
        if verbose {
            eprintln!(
                "[bench] record: {:.1} ms",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        vivit::backward(&loss, &groups, &mut [computation.as_mut()])?;
        black_box(computation);
        Ok(())
    }
}
