//! `DampedNewtonConfig`: the settings of [`crate::DampedNewton`].

use crate::computations::StepSolver;
use crate::computations::{
    curvature_setters, eigensolver_setter, gradient_setter, step_solver_setter, Options,
};
use crate::damping::Damping;
use crate::error::{Error, Result};
use crate::group::Criterion;

/// How the parameters split into GGN diagonal blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blocks {
    /// One block: the full GGN.
    #[default]
    One,
    /// One block per parameter tensor.
    PerParameter,
    /// One block per tracked layer (its weight and bias).
    PerLayer,
}

/// Settings of [`crate::DampedNewton`]; chainable setters, sensible defaults.
///
/// The update of a parameter `θ` with step `s` (per block, from
/// [`crate::DirectionalDampedNewtonComputation`]) is
///
/// ```text
/// u ← μ u + s,   θ ← θ − lr · wd · θ + lr · u
/// ```
///
/// (`μ` the momentum, `wd` the decoupled weight decay; `u = s` for `μ = 0`).
/// With a trust region `κ`, `s` is first scaled by
/// `ν = min(1, √(κ / (lr² |ḡᵀs|)))`, K-FAC's KL clipping: for the full-rank
/// step `lr² |ḡᵀs| = ‖lr s‖²` in the norm of `G + δI`.
///
/// Defaults: [`StepSolver::Woodbury`] (the full-rank Levenberg–Marquardt
/// step `s = −(G + δI)⁻¹ ḡ` of the mini-batch GGN) with
/// [`Damping::constant`]`(0.03)`, the trust region `κ = 0.1`, a curvature
/// budget of 2,048 Gram rows, fresh curvature every step
/// ([`Self::curvature_interval`] 1), learning rate 1, exact GGN, one block,
/// no momentum, no weight decay; chosen on `cargo bench --bench training` by
/// rank across its tasks (`docs/training/` has the figures). For the
/// directional step ([`Self::directional`]) the criterion defaults to
/// [`Criterion::top_k_above`]`(10, 1e-6)` with the complement step.
/// Directions whose eigenvalue is not positive are never stepped along,
/// whatever the criterion keeps.
#[derive(Debug, Clone)]
pub struct DampedNewtonConfig {
    /// Learning rate: the update is `θ ← θ + lr · s`.
    pub lr: f64,
    /// Directions kept in each block ([`crate::StepSolver::Directional`]).
    pub criterion: Criterion,
    /// Damping of each kept direction.
    pub damping: Damping,
    /// Block structure (ignored by [`crate::DampedNewton::with_groups`]).
    pub blocks: Blocks,
    /// Also step along the gradient outside the kept eigenspace (`−g_⊥/δ_⊥`).
    pub complement: bool,
    /// Heavy-ball momentum `μ ∈ [0, 1)` on the step.
    pub momentum: f64,
    /// Decoupled weight decay `wd ≥ 0`: `θ ← θ − lr · wd · θ` each step.
    pub weight_decay: f64,
    /// The trust region `κ > 0` of the step (none if `None`).
    pub trust_region: Option<f64>,
    /// The most Gram rows `C_eff · N_c` the curvature may have (none if
    /// `None`): a larger batch has its curvature subsampled (see
    /// [`Self::curvature_budget`]).
    pub curvature_budget: Option<usize>,
    /// Steps `T ≥ 1` one curvature serves ([`StepSolver::Woodbury`] only; see
    /// [`Self::curvature_interval`]).
    pub curvature_interval: usize,
    pub(crate) options: Options,
}

impl Default for DampedNewtonConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            criterion: Criterion::top_k_above(10, 1e-6),
            damping: Damping::constant(0.03),
            blocks: Blocks::One,
            complement: true,
            momentum: 0.0,
            weight_decay: 0.0,
            trust_region: Some(0.1),
            curvature_budget: Some(2048),
            curvature_interval: 1,
            options: Options {
                warn_small_eigvals: 0.0,
                step_solver: StepSolver::Woodbury,
                ..Options::default()
            },
        }
    }
}

impl DampedNewtonConfig {
    /// The directional step of the seed's `DirectionalDampedNewtonComputation`
    /// (the default before the Woodbury step): [`StepSolver::Directional`]
    /// along the top 10 eigenvectors above `1e-6` with the complement step,
    /// [`Damping::constant`]`(1.0)`, lr 1, no trust region, no curvature
    /// budget; the other settings as [`Self::default`].
    pub fn directional() -> Self {
        Self {
            damping: Damping::constant(1.0),
            trust_region: None,
            curvature_budget: None,
            ..Self::default()
        }
        .step_solver(StepSolver::Directional)
    }

    /// Sets the learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets the criterion.
    pub fn criterion(mut self, criterion: Criterion) -> Self {
        self.criterion = criterion;
        self
    }

    /// Sets the damping.
    pub fn damping(mut self, damping: Damping) -> Self {
        self.damping = damping;
        self
    }

    /// Sets the block structure.
    pub fn blocks(mut self, blocks: Blocks) -> Self {
        self.blocks = blocks;
        self
    }

    /// Adds the complement step `−g_⊥/δ_⊥`, which turns a constant damping
    /// into the Levenberg–Marquardt step of the truncated GGN.
    pub fn complement(mut self, complement: bool) -> Self {
        self.complement = complement;
        self
    }

    /// Sets the heavy-ball momentum `μ` (`u ← μ u + s`, `θ ← θ + lr · u`).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the decoupled weight decay `wd` (`θ ← θ − lr · wd · θ` each step).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets the trust region `κ`: the step is scaled down to
    /// `lr² |ḡᵀs| ≤ κ` where it is larger.
    pub fn trust_region(mut self, kappa: f64) -> Self {
        self.trust_region = Some(kappa);
        self
    }

    /// Bounds the Gram matrix to `budget` rows: where the batch of `N`
    /// samples has `C_eff · N > budget` (`C_eff` = the model's outputs per
    /// sample, or the Monte-Carlo samples), the curvature is taken on
    /// `N_c = max(1, ⌊budget / C_eff⌋)` of them, every `⌊N / N_c⌋`-th from
    /// an offset that advances by one each time the curvature is computed,
    /// so that every sample of a repeated (full) batch takes its turn. The
    /// gradient stays on the whole batch. An explicit [`Self::subsampling_ggn`] takes precedence.
    pub fn curvature_budget(mut self, budget: usize) -> Self {
        self.curvature_budget = Some(budget);
        self
    }

    /// Computes the curvature every `T`-th step only and reuses it for the
    /// fresh gradients of the steps in between (as K-FAC and Shampoo amortize
    /// their inverses): with the GGN factor `V`, `G̃ = VᵀV` and the Cholesky
    /// factor of `G̃ + δI` kept from step `t₀`, step `t₀ + j` (`j < T`) is
    ///
    /// ```text
    /// s = −(V Vᵀ + δ I)⁻¹ ḡ_{t₀+j} = (V c − ḡ) / δ,   (G̃ + δI) c = Vᵀ ḡ,
    /// ```
    ///
    /// which costs the gradient (one backward pass), `Vᵀ ḡ`, two triangular
    /// solves and `V c`: no loss-Hessian factor is backpropagated, no Gram
    /// matrix formed, nothing factorized. `T = 1` (the default) computes the
    /// curvature at every step and keeps nothing. The curvature is also
    /// recomputed where it no longer fits: other blocks, or a changed `δ`
    /// (Levenberg–Marquardt damping under
    /// [`crate::DampedNewton::step_with_loss`]). Needs
    /// [`StepSolver::Woodbury`].
    pub fn curvature_interval(mut self, steps: usize) -> Self {
        self.curvature_interval = steps;
        self
    }

    curvature_setters!(subsampling_ggn, mc_samples_ggn);
    gradient_setter!();
    eigensolver_setter!();
    step_solver_setter!();

    /// [`Self::mc_samples_ggn`], the name [`crate::DirectionalDampedNewtonComputation`]
    /// and this configuration share.
    #[deprecated(note = "use mc_samples_ggn, as on DirectionalDampedNewtonComputation")]
    pub fn mc_samples(self, m: usize) -> Self {
        self.mc_samples_ggn(m)
    }

    /// Checks the settings a step uses before it changes anything.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for the learning rate, [`Error::InvalidConfig`]
    /// for a momentum outside `[0, 1)`, a trust region that is not finite
    /// and positive, a weight decay that is not finite and `≥ 0`, a curvature
    /// interval of 0, or one above 1 with [`StepSolver::Directional`].
    pub(crate) fn check(&self) -> Result<()> {
        if !self.lr.is_finite() {
            return Err(Error::NonFinite {
                what: "the learning rate",
                value: self.lr,
            });
        }
        let setting = |what: &'static str, value: f64, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig { what, value })
            }
        };
        let m = self.momentum;
        setting("the momentum", m, (0.0..1.0).contains(&m))?;
        if let Some(kappa) = self.trust_region {
            setting("the trust region", kappa, kappa.is_finite() && kappa > 0.0)?;
        }
        let wd = self.weight_decay;
        setting("the weight decay", wd, wd.is_finite() && wd >= 0.0)?;
        let t = self.curvature_interval;
        setting("the curvature interval", t as f64, t >= 1)?;
        setting(
            "the curvature interval (above 1 it needs StepSolver::Woodbury)",
            t as f64,
            t == 1 || self.options.step_solver == StepSolver::Woodbury,
        )
    }
}
