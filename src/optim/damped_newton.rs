//! `DampedNewton`: a candle optimizer taking damped Newton steps.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, TensorId, Var};
use candle_nn::optim::Optimizer;
use candle_nn::VarMap;

use super::adaptation::Adaptation;
use super::amortization::Amortization;
use super::config::{Blocks, DampedNewtonConfig};
use super::update::{trust_scale, Update, Velocity};
use crate::computations::{DirectionalDampedNewtonComputation, Drive, Options};
use crate::error::{Error, Result};
use crate::extension::{backward_tape, Timings};
use crate::group::ParamGroup;
use crate::linalg::host::scalar;
use crate::record::{self, Recorded};
use crate::tape::Tape;

/// What a step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The loss before the step.
    pub loss: f64,
    /// The change the quadratic model predicted for the applied step.
    pub predicted_change: f64,
    /// The loss after the step on the same batch, where it was evaluated
    /// ([`DampedNewton::step_with_loss`]).
    pub new_loss: Option<f64>,
    /// Whether the step was taken back because it raised the loss (or made it
    /// non-finite) on the same batch ([`DampedNewton::step_with_loss`]).
    pub rejected: bool,
    /// Where the step's extended backward pass spent its time.
    pub timings: Timings,
}

/// An optimizer whose update is the damped Newton step `θ ← θ + lr · s` of
/// [`crate::DirectionalDampedNewtonComputation`], per GGN block, with
/// pluggable damping: by default the full-rank Levenberg–Marquardt step
/// `s = −(G + δI)⁻¹ ḡ` through the Gram matrix ([`crate::StepSolver::Woodbury`]),
/// inside a trust region (see [`DampedNewtonConfig`]). It implements
/// [`candle_nn::optim::Optimizer`], so it replaces SGD or Adam in a Candle
/// training loop:
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::{optim::Optimizer, VarBuilder, VarMap};
/// use vivit::{nn as vnn, Damping, DampedNewton, DampedNewtonConfig};
///
/// # fn main() -> vivit::Result<()> {
/// let dev = Device::Cpu;
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
/// let fc1 = vnn::linear(4, 8, vb.pp("fc1"))?;
/// let fc2 = vnn::linear(8, 3, vb.pp("fc2"))?;
/// let x = Tensor::randn(0f32, 1., (16, 4), &dev)?;
/// let y = Tensor::from_vec((0..16u32).map(|i| i % 3).collect(), 16, &dev)?;
///
/// // Woodbury, δ = 0.03, trust region 0.1; the seed's directional step:
/// // DampedNewtonConfig::directional().criterion(Criterion::top_k(5))
/// let config = DampedNewtonConfig::default().damping(Damping::constant(0.03));
/// let mut opt = DampedNewton::new(varmap.all_vars(), config)?;
/// for _ in 0..3 {
///     let loss = vivit::record(|| {
///         vivit::loss::cross_entropy(&fc2.forward(&fc1.forward(&x)?.relu()?)?, &y)
///     })?;
///     opt.backward_step(&loss)?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// `step(&grads)` finds the [`Recorded`] loss the gradients came from (keep
/// it alive until the step). The Woodbury step takes its `ḡ` from `grads` (so
/// `backward_step` runs one backward pass and the loss-Hessian factor passes,
/// and a term added to the loss outside [`crate::record()`] moves the
/// gradient, not the curvature); the directional step and a `subsampling_grad`
/// backpropagate per-sample gradients again. Trait methods' errors are
/// [`candle_core::Error::Wrapped`] around a [`crate::Error`]. A step that would
/// not be finite, or leave a parameter non-finite, is refused and leaves the
/// parameters as they were.
///
/// `Send` and `Sync`: two optimizers on two threads train independently, as
/// if one ran after the other (the scope of [`crate::record()`] is per thread).
#[derive(Debug, Clone)]
pub struct DampedNewton {
    vars: Vec<Var>,
    groups: Option<Vec<ParamGroup>>,
    config: DampedNewtonConfig,
    /// The momentum buffer `u` of each variable (empty without momentum).
    velocity: Velocity,
    /// The curvature kept for later steps
    /// ([`DampedNewtonConfig::curvature_interval`]) and the count of those computed.
    amortization: Amortization,
    /// The current Levenberg–Marquardt `δ` of each group.
    adaptation: Adaptation,
}

impl DampedNewton {
    /// An optimizer over explicit parameter groups, each with its own criterion
    /// and damping; `config.criterion`, `damping` and `blocks` are not used.
    pub fn with_groups(groups: Vec<ParamGroup>, config: DampedNewtonConfig) -> Self {
        let vars = groups.iter().flat_map(|g| g.params().to_vec()).collect();
        Self::build(vars, Some(groups), config)
    }

    /// An optimizer over the float variables of `varmap`, ordered by name
    /// (`VarMap::all_vars` has no stable order), without the running
    /// statistics of batch normalization (the variables named `running_mean`
    /// and `running_var`, as [`crate::nn::batch_norm`] registers them): they
    /// are not trained.
    pub fn from_varmap(varmap: &VarMap, config: DampedNewtonConfig) -> Self {
        let vars = crate::nn::vars_by_name(varmap)
            .into_iter()
            .filter(|(name, v)| v.dtype().is_float() && !crate::nn::is_running_statistic(name))
            .map(|(_, v)| v)
            .collect();
        Self::build(vars, None, config)
    }

    /// An optimizer over `vars` (in `groups`, if given) that has taken no step.
    fn build(vars: Vec<Var>, groups: Option<Vec<ParamGroup>>, config: DampedNewtonConfig) -> Self {
        Self {
            vars,
            groups,
            config,
            velocity: Velocity::default(),
            amortization: Amortization::default(),
            adaptation: Adaptation::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DampedNewtonConfig {
        &self.config
    }

    /// The current `δ` of each group's Levenberg–Marquardt damping, in group
    /// order (`None` for a group whose damping does not adapt), as of the last
    /// step; empty before the first. Each group adapts its own `δ`, even where
    /// several were given clones of one [`crate::Damping`].
    pub fn current_damping(&self) -> Vec<Option<f64>> {
        self.adaptation.deltas()
    }

    /// Computes and applies the step for the recorded loss.
    ///
    /// # Errors
    /// Any error of [`crate::DirectionalDampedNewtonComputation::compute`],
    /// [`Error::InvalidConfig`], and [`Error::NeedsModel`] for a
    /// Levenberg–Marquardt damping (it adapts from the loss after the step,
    /// which only [`Self::step_with_loss`] evaluates); the parameters are
    /// then unchanged.
    pub fn step_recorded(&mut self, recorded: &Recorded) -> Result<StepReport> {
        self.refuse_adaptive("DampedNewton::step_recorded")?;
        self.step_tape(recorded.tape()?, None)
    }

    /// [`Error::NeedsModel`] if a block's damping adapts from the loss after
    /// the step, which `caller` does not evaluate.
    fn refuse_adaptive(&self, caller: &'static str) -> Result<()> {
        let adapts = match &self.groups {
            Some(groups) => groups.iter().any(|g| g.damping_ref().adaptive().is_some()),
            None => self.config.damping.adaptive().is_some(),
        };
        if adapts {
            return Err(Error::NeedsModel(caller));
        }
        Ok(())
    }

    /// As [`Self::step_recorded`], then evaluates the loss on the same batch
    /// with `loss_after` (the forward pass at the new parameters), takes the
    /// step back if it raised the loss (as Levenberg–Marquardt does), and
    /// feeds the actual change back to a Levenberg–Marquardt damping (the
    /// ratio `ρ = ΔL / m(s)` drives its `δ`).
    ///
    /// ```
    /// use candle_core::{DType, Device, Module, Tensor};
    /// use candle_nn::{VarBuilder, VarMap};
    /// use vivit::{optim::LevenbergMarquardt, Damping, DampedNewton, DampedNewtonConfig};
    ///
    /// # fn main() -> vivit::Result<()> {
    /// let dev = Device::Cpu;
    /// let varmap = VarMap::new();
    /// let fc = vivit::nn::linear(4, 3, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    /// let x = Tensor::randn(0f32, 1., (16, 4), &dev)?;
    /// let y = Tensor::from_vec((0..16u32).map(|i| i % 3).collect(), 16, &dev)?;
    /// let loss = || vivit::loss::cross_entropy(&fc.forward(&x)?, &y);
    /// let damping = Damping::levenberg_marquardt(LevenbergMarquardt::new(1.0));
    /// let mut opt = DampedNewton::from_varmap(&varmap, DampedNewtonConfig::default().damping(damping));
    /// let report = opt.step_with_loss(&vivit::record(loss)?, || loss().map_err(candle_core::Error::wrap))?;
    /// assert!(report.new_loss.is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Self::step_recorded`], or the error of `loss_after` (the
    /// parameters are then restored).
    pub fn step_with_loss(
        &mut self,
        recorded: &Recorded,
        loss_after: impl FnOnce() -> candle_core::Result<Tensor>,
    ) -> Result<StepReport> {
        let saved: Vec<(Var, Tensor)> = self
            .vars
            .iter()
            .map(|v| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        let velocity = self.velocity.clone();
        let restore = |opt: &mut Self| -> Result<()> {
            for (var, value) in &saved {
                var.set(value)?;
            }
            opt.velocity = velocity.clone();
            Ok(())
        };
        let mut report = self.step_tape(recorded.tape()?, None)?;
        let new_loss = match loss_after()
            .map_err(Error::from)
            .and_then(|l| Ok(scalar(&l)?))
        {
            Ok(loss) => loss,
            Err(e) => {
                restore(self)?;
                return Err(e);
            }
        };
        let actual = new_loss - report.loss;
        if actual.is_nan() || actual > 0.0 {
            restore(self)?;
            report.rejected = true;
        }
        self.adaptation.observe(actual, report.predicted_change);
        report.new_loss = Some(new_loss);
        Ok(report)
    }

    /// [`Self::step_with_loss`] with the loss of candle-optimisers' `model`
    /// (feature `optimisers`).
    ///
    /// # Errors
    /// As [`Self::step_with_loss`].
    #[cfg(feature = "optimisers")]
    pub fn step_with_model<M: candle_optimisers::Model>(
        &mut self,
        recorded: &Recorded,
        model: &M,
    ) -> Result<StepReport> {
        self.step_with_loss(recorded, || model.loss())
    }

    /// The step on `tape`, with the Woodbury step's `ḡ` from `gradients`
    /// (`∇L` by parameter id) where given.
    fn step_tape(
        &mut self,
        tape: &Tape,
        gradients: Option<HashMap<TensorId, Tensor>>,
    ) -> Result<StepReport> {
        self.config.check()?;
        let DampedNewtonConfig {
            lr,
            momentum,
            weight_decay,
            ..
        } = self.config;
        // a direction without positive curvature is never stepped along
        let groups: Vec<ParamGroup> = match &self.groups {
            Some(groups) => groups.clone(),
            None => self.blocks(tape),
        }
        .into_iter()
        .map(|g| {
            let positive = g.criterion_ref().positive();
            g.criterion(positive)
        })
        .collect();
        let groups = self.adaptation.apply(groups);
        let drive = Drive {
            kept: self
                .amortization
                .reusable(&groups, self.config.curvature_interval),
            gradients,
            ..Drive::default()
        };
        let mut computation = DirectionalDampedNewtonComputation::driven(
            self.budgeted_options(tape)?,
            self.config.complement,
            drive,
        );
        let timings = backward_tape(tape, &groups, &mut [&mut computation])?;
        let (mut steps, refreshed) = computation.into_steps();
        let scale = trust_scale(self.config.trust_region, lr, &steps);
        let update = Update {
            lr,
            momentum,
            weight_decay,
            scale,
        };
        let vars_steps = groups
            .iter()
            .zip(&steps)
            .flat_map(|(group, step)| group.params().iter().zip(&step.step));
        self.velocity.apply(vars_steps, update)?;
        self.amortization.commit(
            &mut steps,
            refreshed,
            &groups,
            self.config.curvature_interval,
        );
        Ok(StepReport {
            loss: tape.loss_value()?,
            predicted_change: steps.iter().map(|s| s.predicted_change(scale * lr)).sum(),
            new_loss: None,
            rejected: false,
            timings,
        })
    }

    /// The options of this step: the configured ones, with the curvature
    /// subsample of [`DampedNewtonConfig::curvature_budget`] where the batch
    /// exceeds it.
    fn budgeted_options(&self, tape: &Tape) -> Result<Options> {
        let mut options = self.config.options.clone();
        let (Some(budget), None) = (self.config.curvature_budget, &options.subsampling) else {
            return Ok(options);
        };
        let output = &tape.loss.output;
        let n = output.dim(0)?;
        let columns = match options.mc_samples {
            0 => output.elem_count() / n.max(1),
            m => m,
        };
        if n * columns > budget {
            let kept = (budget / columns).clamp(1, n);
            let stride = n / kept;
            let offset = self.amortization.computed() % stride;
            options.subsampling = Some((0..kept).map(|i| offset + i * stride).collect());
        }
        Ok(options)
    }

    /// The groups of `config.blocks` over this optimizer's variables.
    fn blocks(&self, tape: &Tape) -> Vec<ParamGroup> {
        let group = |params: Vec<Var>| {
            ParamGroup::new(params)
                .criterion(self.config.criterion.clone())
                .damping(self.config.damping.clone())
        };
        match self.config.blocks {
            Blocks::One => vec![group(self.vars.clone())],
            Blocks::PerParameter => self.vars.iter().map(|v| group(vec![v.clone()])).collect(),
            Blocks::PerLayer => {
                // a variable belongs to the layer whose weight or bias it is
                let owner = |var: &Var| {
                    tape.layers
                        .iter()
                        .find(|l| {
                            l.weight.id() == var.id()
                                || l.bias.as_ref().map(Tensor::id) == Some(var.id())
                        })
                        .map_or(var.id(), |l| l.weight.id())
                };
                let mut layers: Vec<(TensorId, Vec<Var>)> = Vec::new();
                for var in &self.vars {
                    let key = owner(var);
                    match layers.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, vars)) => vars.push(var.clone()),
                        None => layers.push((key, vec![var.clone()])),
                    }
                }
                layers.into_iter().map(|(_, vars)| group(vars)).collect()
            }
        }
    }
}

impl Optimizer for DampedNewton {
    type Config = DampedNewtonConfig;

    fn new(vars: Vec<Var>, config: DampedNewtonConfig) -> candle_core::Result<Self> {
        let vars = vars.into_iter().filter(|v| v.dtype().is_float()).collect();
        Ok(Self::build(vars, None, config))
    }

    /// Steps on the recorded loss whose `backward` gave `grads`, with `ḡ`
    /// from `grads` for the Woodbury step (see [`DampedNewton`]); a
    /// Levenberg–Marquardt damping is refused ([`Error::NeedsModel`]: use
    /// [`DampedNewton::step_with_loss`]).
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.refuse_adaptive("Optimizer::step (and backward_step)")
            .map_err(candle_core::Error::wrap)?;
        let tape =
            record::tape_of(grads).ok_or_else(|| candle_core::Error::wrap(Error::NotRecorded))?;
        // detached: the step's products then take the CPU kernels
        let gradients = self
            .vars
            .iter()
            .filter_map(|v| Some((v.id(), grads.get(v.as_tensor())?.detach())))
            .collect();
        self.step_tape(&tape, Some(gradients))
            .map(|_| ())
            .map_err(candle_core::Error::wrap)
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }
}

/// candle-optimisers' settings interface (feature `optimisers`).
#[cfg(feature = "optimisers")]
impl candle_optimisers::OptimParams for DampedNewton {
    fn params(&self) -> &DampedNewtonConfig {
        &self.config
    }

    fn set_params(&mut self, config: DampedNewtonConfig) {
        self.config = config;
    }
}
