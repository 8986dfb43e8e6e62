//! The options the computations share, their chainable setters, and the
//! lookup of results by group.

use std::collections::HashMap;

use super::StepSolver;
use crate::error::{Error, Result};
use crate::extension::{Extension, FactorId, FactorRequest};
use crate::group::{GroupId, ParamGroup};
use crate::linalg::Eigensolver;

/// The result stored for `group`, or [`Error::NoResult`].
pub(crate) fn lookup<T: Clone>(results: &HashMap<GroupId, T>, group: &ParamGroup) -> Result<T> {
    results
        .get(&group.id())
        .cloned()
        .ok_or(Error::NoResult(group.id()))
}

/// Settings of a computation (each uses the ones its seed class has).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Samples for the curvature (`subsampling` / `subsampling_ggn`).
    pub subsampling: Option<Vec<usize>>,
    /// Samples for the gradients (`subsampling_grad`).
    pub subsampling_grad: Option<Vec<usize>>,
    /// 0: exact GGN; `M ≥ 1`: Monte-Carlo GGN.
    pub mc_samples: usize,
    pub seed: Option<u64>,
    pub verbose: bool,
    pub warn_small_eigvals: f64,
    /// The eigensolver of the kept eigenpairs.
    pub eigensolver: Eigensolver,
    /// How a damped Newton step is solved.
    pub step_solver: StepSolver,
}

impl Options {
    /// The request for the GGN factor these options set (`name`: the
    /// subsampling option's name, for errors).
    pub fn ggn_request(&self, ext: &Extension<'_>, name: &'static str) -> FactorRequest<'_> {
        ext.ggn_request(
            self.mc_samples,
            self.subsampling.as_deref(),
            self.seed,
            name,
        )
    }

    /// The GGN factor these options set, backpropagated.
    pub fn ggn_factor(&self, ext: &mut Extension<'_>, name: &'static str) -> Result<FactorId> {
        let request = self.ggn_request(ext, name);
        Ok(ext.factors(&[request], self.verbose)?[0])
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            subsampling: None,
            subsampling_grad: None,
            mc_samples: 0,
            seed: None,
            verbose: false,
            warn_small_eigvals: 1e-4,
            eigensolver: Eigensolver::Auto,
            step_solver: StepSolver::Directional,
        }
    }
}

/// The setters of the computations along the kept directions
/// (`DirectionalDerivativesComputation`, `DirectionalDampedNewtonComputation`):
/// the curvature on `subsampling_ggn` / `mc_samples_ggn`, the gradients on
/// `subsampling_grad`, the small-eigenvalue warning and the eigensolver.
macro_rules! directional_setters {
    () => {
        curvature_setters!(subsampling_ggn, mc_samples_ggn);
        gradient_setter!();
        warn_setter!();
        eigensolver_setter!();
    };
}

/// Setters for the curvature options, named after the seed's arguments:
/// `setters!(subsampling, mc_samples)` or `setters!(subsampling_ggn, mc_samples_ggn)`.
macro_rules! curvature_setters {
    ($subsampling:ident, $mc_samples:ident) => {
        /// Computes the curvature on the samples `indices` of the batch only
        /// (distinct, in range; their order sets the Gram matrix's sample axis):
        /// `G = (1/|S|) Σ_{n∈S} J_nᵀ H_n J_n`.
        pub fn $subsampling(mut self, indices: impl IntoIterator<Item = usize>) -> Self {
            self.options.subsampling = Some(indices.into_iter().collect());
            self
        }

        /// `0` (the default) for the exact GGN, `M ≥ 1` for a Monte-Carlo GGN
        /// with `M` sampled loss-Hessian columns per sample (`C_eff = M`).
        pub fn $mc_samples(mut self, mc_samples: usize) -> Self {
            self.options.mc_samples = mc_samples;
            self
        }

        /// Seeds the Monte-Carlo draw; without it every backward pass draws afresh.
        pub fn seed(mut self, seed: u64) -> Self {
            self.options.seed = Some(seed);
            self
        }

        /// Prints what happens to stderr.
        pub fn verbose(mut self, verbose: bool) -> Self {
            self.options.verbose = verbose;
            self
        }
    };
}

/// The `warn_small_eigvals` setter.
macro_rules! warn_setter {
    () => {
        /// Warns (through `log`) when a kept eigenvalue has `|λ| <` this
        /// (default `1e-4`); 0 disables.
        pub fn warn_small_eigvals(mut self, threshold: f64) -> Self {
            self.options.warn_small_eigvals = threshold;
            self
        }
    };
}

/// The `subsampling_grad` setter.
macro_rules! gradient_setter {
    () => {
        /// Takes the gradients from the samples `indices` of the batch only
        /// (distinct, in range); `γ` then has one row per index.
        pub fn subsampling_grad(mut self, indices: impl IntoIterator<Item = usize>) -> Self {
            self.options.subsampling_grad = Some(indices.into_iter().collect());
            self
        }
    };
}

/// The `eigensolver` setter.
macro_rules! eigensolver_setter {
    () => {
        /// Chooses the eigensolver of the kept eigenpairs (default
        /// [`crate::Eigensolver::Auto`]): the full one, or the partial one
        /// for the `k` largest eigenpairs of a `top_k`-type criterion, which
        /// pays for a large Gram matrix and a small `k`.
        pub fn eigensolver(mut self, eigensolver: crate::Eigensolver) -> Self {
            self.options.eigensolver = eigensolver;
            self
        }
    };
}

/// The `step_solver` setter.
macro_rules! step_solver_setter {
    () => {
        /// Chooses how the damped Newton step is solved (default
        /// [`crate::StepSolver::Directional`]): along the kept eigenvectors
        /// with per-direction damping, or with every direction and one `δ`
        /// through the Gram matrix ([`crate::StepSolver::Woodbury`]).
        pub fn step_solver(mut self, step_solver: crate::StepSolver) -> Self {
            self.options.step_solver = step_solver;
            self
        }
    };
}

pub(crate) use {
    curvature_setters, directional_setters, eigensolver_setter, gradient_setter,
    step_solver_setter, warn_setter,
};
