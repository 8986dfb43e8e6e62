//! The backward extension machinery shared by every computation.
//!
//! One [`backward`] call turns a [`Recorded`] forward pass into per-layer factors
//! (loss-Hessian factor backpropagated to every tracked layer output, see
//! `factor.rs`), per-group Gram matrices `G̃ = Vᵀ V` (`layer.rs`) and products
//! `V·e`, and hands them to the computations, which share them: several
//! computations with the same factor settings backpropagate once.

mod block;
mod calls;
mod factor;
mod kept;
mod layer;
mod members;
mod operator;
mod timings;

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::group::ParamGroup;
use crate::record::Recorded;
use crate::tape::Tape;
pub(crate) use block::{Block, Factor};
use factor::{backprop, check_dtype, Backpropagated, Columns, FactorSpec, TrackedLayer};
pub(crate) use kept::KeptFactor;

pub use crate::linalg::host::Transfers;
use members::{resolve, Member};
pub(crate) use timings::mark;
pub use timings::{Stage, Timings};

/// A computation that runs inside an extended backward pass.
///
/// Implemented by [`crate::EigvalshComputation`], [`crate::EighComputation`] and
/// the other computations; pass several to [`backward`] to share one pass.
pub trait Computation {
    /// Runs the computation on every group. Called by [`backward`].
    #[doc(hidden)]
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()>;
}

/// Runs `computations` on `groups` in one extended backward pass over
/// `recorded`, and returns where the pass spent its time.
///
/// Computations that ask for the same factor (exact or Monte-Carlo with the
/// same seed, same subsampling) share its backpropagation and Gram matrices.
///
/// ```
/// # use candle_core::{DType, Device, Module, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use vivit::{Criterion, EighComputation, EigvalshComputation, ParamGroup};
/// # fn main() -> vivit::Result<()> {
/// # let dev = Device::Cpu;
/// # let varmap = VarMap::new();
/// # let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
/// # let fc = vivit::nn::linear(4, 3, vb.pp("fc"))?;
/// # let x = Tensor::randn(0f64, 1., (5, 4), &dev)?;
/// # let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
/// let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
/// let groups = [ParamGroup::new(varmap.all_vars()).criterion(Criterion::top_k(2))];
/// let mut eigvalsh = EigvalshComputation::new();
/// let mut eigh = EighComputation::new();
/// vivit::backward(&loss, &groups, &mut [&mut eigvalsh, &mut eigh])?;
/// assert_eq!(eigvalsh.result(&groups[0])?.dims(), &[15]); // C·N eigenvalues
/// assert_eq!(eigh.result(&groups[0])?.evals.dims(), &[2]);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::LossNotTracked`], group errors ([`Error::ParamInTwoGroups`],
/// [`Error::ParamNotRecorded`], [`Error::EmptyGroup`]), [`Error::NonFinite`]
/// for a non-finite loss, and whatever a computation reports.
pub fn backward(
    recorded: &Recorded,
    groups: &[ParamGroup],
    computations: &mut [&mut dyn Computation],
) -> Result<Timings> {
    backward_tape(recorded.tape()?, groups, computations)
}

/// [`backward`] on a tape.
pub(crate) fn backward_tape(
    tape: &Tape,
    groups: &[ParamGroup],
    computations: &mut [&mut dyn Computation],
) -> Result<Timings> {
    timings::start();
    let mut run = || -> Result<()> {
        let mut ext = Extension::new(tape, groups)?;
        for computation in computations.iter_mut() {
            computation.run(&mut ext, groups)?;
        }
        Ok(())
    };
    let outcome = run();
    let timings = timings::finish();
    outcome.map(|()| timings)
}

/// The state of one extended backward pass (opaque).
#[doc(hidden)]
pub struct Extension<'a> {
    tape: &'a Tape,
    layers: Vec<TrackedLayer<'a>>,
    members: Vec<Vec<Member>>,
    /// Seed of Monte-Carlo factors whose computation set none.
    default_seed: u64,
    factors: Vec<(FactorSpec, Backpropagated)>,
    /// Cross-Gram matrices by (left factor, right factor, group).
    grams: RefCell<HashMap<(usize, usize, usize), Tensor>>,
}

/// A factor a computation asks for: its columns, on which samples (`name` is
/// the option the subsampling came from, for error messages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FactorRequest<'s> {
    columns: Columns,
    subsampling: Option<&'s [usize]>,
    name: &'static str,
}

/// Handle of a backpropagated factor inside an [`Extension`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FactorId(usize);

impl<'a> Extension<'a> {
    fn new(tape: &'a Tape, groups: &[ParamGroup]) -> Result<Self> {
        check_dtype(&tape.loss.output)?;
        let loss = tape.loss_value()?;
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                what: "the loss",
                value: loss,
            });
        }
        let layers = TrackedLayer::from_tape(tape)?;
        let members = resolve(&layers, groups)?;
        Ok(Self {
            tape,
            layers,
            members,
            default_seed: rand::random(),
            factors: Vec::new(),
            grams: RefCell::new(HashMap::new()),
        })
    }

    /// The batch size `N` of the recorded pass.
    fn batch_size(&self) -> Result<usize> {
        Ok(self.tape.loss.output.dim(0)?)
    }

    /// The exact (`mc_samples == 0`) or Monte-Carlo GGN factor on the samples
    /// `subsampling` (all if `None`), to be backpropagated by [`Self::factors`].
    ///
    /// `name` is the option the subsampling came from, for error messages.
    pub(crate) fn ggn_request<'s>(
        &self,
        mc_samples: usize,
        subsampling: Option<&'s [usize]>,
        seed: Option<u64>,
        name: &'static str,
    ) -> FactorRequest<'s> {
        let columns = match mc_samples {
            0 => Columns::Exact,
            samples => Columns::MonteCarlo {
                samples,
                seed: seed.unwrap_or(self.default_seed),
            },
        };
        FactorRequest {
            columns,
            subsampling,
            name,
        }
    }

    /// The per-sample gradients `g_n = ∇_θ ℓ_n` on the samples `subsampling`,
    /// as a factor with one column per sample, to be backpropagated by
    /// [`Self::factors`].
    pub(crate) fn gradient_request<'s>(
        subsampling: Option<&'s [usize]>,
        name: &'static str,
    ) -> FactorRequest<'s> {
        FactorRequest {
            columns: Columns::Gradient,
            subsampling,
            name,
        }
    }

    /// The factors `requests` ask for, backpropagated once per distinct
    /// setting (the new ones together, their factor passes in parallel).
    pub(crate) fn factors(
        &mut self,
        requests: &[FactorRequest<'_>],
        verbose: bool,
    ) -> Result<Vec<FactorId>> {
        let wanted = requests
            .iter()
            .map(|request| {
                if let Some(idx) = request.subsampling {
                    check_subsampling(idx, self.batch_size()?, request.name)?;
                }
                Ok(FactorSpec {
                    columns: request.columns,
                    subsampling: request.subsampling.map(<[usize]>::to_vec),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut specs: Vec<FactorSpec> = Vec::new();
        for spec in &wanted {
            if !self.factors.iter().any(|(s, _)| s == spec) && !specs.contains(spec) {
                specs.push(spec.clone());
            }
        }
        if !specs.is_empty() {
            let mut needed = vec![false; self.layers.len()];
            for member in self.members.iter().flatten() {
                needed[member.layer] = true;
            }
            for spec in &specs {
                mark(Stage::FactorBackprop, verbose, || {
                    format!(
                        "backpropagate {:?} on {} samples to {} tracked layers",
                        spec.columns,
                        spec.subsampling
                            .as_ref()
                            .map_or(self.batch_size().unwrap_or(0), Vec::len),
                        needed.iter().filter(|&&n| n).count(),
                    )
                });
            }
            let factors = backprop(self.tape, &self.layers, &needed, &specs)?;
            mark(Stage::Gram, verbose, || "factor backpropagated".to_string());
            self.factors.extend(specs.into_iter().zip(factors));
        }
        Ok(wanted
            .iter()
            .map(|spec| {
                let position = self.factors.iter().position(|(s, _)| s == spec);
                FactorId(position.expect("every requested factor is backpropagated"))
            })
            .collect())
    }

    /// The backpropagated factor `factor`.
    pub(crate) fn factor(&self, factor: FactorId) -> Factor<'_> {
        Factor::new(self, factor)
    }

    /// Keeps the weight factors of `factor` whole for many products
    /// [`Block::apply`] (see [`layer::LayerFactor::keep_weight_factor`]).
    pub(crate) fn keep_weight_factors(&mut self, factor: FactorId) {
        for layer in self.factors[factor.0].1.layers.iter_mut().flatten() {
            layer.keep_weight_factor();
        }
    }
}

fn check_subsampling(idx: &[usize], batch_size: usize, name: &'static str) -> Result<()> {
    if idx.is_empty() {
        return Err(Error::SubsamplingEmpty { name });
    }
    let mut seen = vec![false; batch_size];
    for &index in idx {
        if index >= batch_size {
            return Err(Error::SubsamplingOutOfRange {
                name,
                index,
                batch_size,
            });
        }
        if std::mem::replace(&mut seen[index], true) {
            return Err(Error::SubsamplingRepeated { name, index });
        }
    }
    Ok(())
}
