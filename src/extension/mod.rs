//! The backward extension machinery shared by every computation.
//!
//! One [`backward`] call turns a [`Recorded`] forward pass into per-layer factors
//! (loss-Hessian factor backpropagated to every tracked layer output, see
//! `factor.rs`), per-group Gram matrices `G̃ = Vᵀ V` (`layer.rs`) and products
//! `V·e`, and hands them to the computations, which share them: several
//! computations with the same factor settings backpropagate once.

mod factor;
mod kept;
mod layer;
mod members;
mod operator;
mod timings;

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::group::ParamGroup;
use crate::kernels::matmul;
use crate::record::Recorded;
use crate::tape::Tape;
use factor::{backprop, check_dtype, Backpropagated, Columns, FactorSpec, TrackedLayer};
pub(crate) use kept::KeptFactor;
use layer::{LayerFactor, Role};
use members::{resolve, Member};
pub(crate) use operator::GramOperator;
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
    grams: HashMap<(usize, usize, usize), Tensor>,
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
        let loss = tape.value.to_dtype(DType::F64)?.to_scalar::<f64>()?;
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
            grams: HashMap::new(),
        })
    }

    /// The batch size `N` of the recorded pass.
    pub(crate) fn batch_size(&self) -> Result<usize> {
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

    /// The number of samples `N_g` a factor is built on.
    pub(crate) fn factor_samples(&self, factor: FactorId) -> usize {
        let (spec, _) = &self.factors[factor.0];
        spec.subsampling
            .as_ref()
            .map_or(self.tape.loss.output.dims()[0], Vec::len)
    }

    /// How many zero eigenvalues the Gram matrix of `factor` leaves out (see
    /// [`Backpropagated::basis`]).
    pub(crate) fn omitted_zeros(&self, factor: FactorId) -> usize {
        match self.factors[factor.0].1.basis {
            Some(_) => self.factor_samples(factor),
            None => 0,
        }
    }

    /// Gram-space vectors `e` `[K, C_eff·N_g]` in the reference's layout
    /// `[K, C·N_g]` (index `c·N_g + n`).
    pub(crate) fn reference_layout(&self, factor: FactorId, e: &Tensor) -> Result<Tensor> {
        let Some(basis) = &self.factors[factor.0].1.basis else {
            return Ok(e.clone());
        };
        let (n, c, c_eff) = basis.dims3()?;
        let k = e.dim(0)?;
        // ẽ[k, :, n] = U_n ẽ'[k, :, n]
        let e = e.reshape((k, c_eff, n))?.permute((2, 1, 0))?.contiguous()?; // [N, C_eff, K]
        Ok(matmul(basis, &e)? // [N, C, K]
            .permute((2, 1, 0))?
            .contiguous()?
            .reshape((k, c * n))?)
    }

    /// Keeps the weight factors of `factor` whole for many products
    /// [`Self::apply`] (see [`LayerFactor::keep_weight_factor`]).
    pub(crate) fn keep_weight_factors(&mut self, factor: FactorId) {
        for layer in self.factors[factor.0].1.layers.iter_mut().flatten() {
            layer.keep_weight_factor();
        }
    }

    fn layer_factor(&self, factor: FactorId, member: Member) -> &LayerFactor {
        self.factors[factor.0].1.layers[member.layer]
            .as_ref()
            .expect("factors are built for every layer that holds a group parameter")
    }

    /// The Gram matrix `G̃ = Σ_{p∈group} V_pᵀ V_p` `[C·N_g, C·N_g]` (cached).
    pub(crate) fn gram(&mut self, factor: FactorId, group: usize, verbose: bool) -> Result<Tensor> {
        let gram = self.cross_gram(factor, factor, group)?;
        mark(Stage::Eigensolver, verbose, || {
            format!(
                "group {group}: Gram matrix {n}×{n} from {} parameters",
                self.members[group].len(),
                n = gram.dim(0).unwrap_or(0)
            )
        });
        Ok(gram)
    }

    /// `Σ_{p∈group} V_pᵀ U_p` `[C_v·N_v, C_u·N_u]` for the factors `V` (`left`)
    /// and `U` (`right`) of the group's parameters (cached).
    pub(crate) fn cross_gram(
        &mut self,
        left: FactorId,
        right: FactorId,
        group: usize,
    ) -> Result<Tensor> {
        let mut grams = self.cross_grams(left, &[right], group)?;
        Ok(grams.pop().expect("one Gram matrix per right factor"))
    }

    /// [`Self::cross_gram`] of `left` with each factor of `rights` (cached),
    /// computed layer by layer together, so that each slice of a weight factor
    /// too large to keep is formed once for all of them.
    pub(crate) fn cross_grams(
        &mut self,
        left: FactorId,
        rights: &[FactorId],
        group: usize,
    ) -> Result<Vec<Tensor>> {
        let key = |right: FactorId| (left.0, right.0, group);
        let mut missing: Vec<FactorId> = Vec::new();
        for &right in rights {
            if !self.grams.contains_key(&key(right)) && !missing.contains(&right) {
                missing.push(right);
            }
        }
        if !missing.is_empty() {
            let mut sums: Vec<Option<Tensor>> = vec![None; missing.len()];
            for (m, roles) in self.group_layers(group) {
                let v = self.layer_factor(left, m);
                let us: Vec<&LayerFactor> =
                    missing.iter().map(|&r| self.layer_factor(r, m)).collect();
                sums = v
                    .cross_grams(&us, &roles, sums)?
                    .into_iter()
                    .map(Some)
                    .collect();
            }
            for (right, sum) in missing.into_iter().zip(sums) {
                let gram = sum.expect("groups are checked to be non-empty");
                self.grams.insert(key(right), gram);
            }
        }
        Ok(rights
            .iter()
            .map(|&r| self.grams[&key(r)].clone())
            .collect())
    }

    /// The group's parameters layer by layer (a member of the layer and the
    /// roles of the group's parameters in it), so weight and bias share work.
    fn group_layers(&self, group: usize) -> Vec<(Member, Vec<Role>)> {
        let mut layers: Vec<(Member, Vec<Role>)> = Vec::new();
        for &m in &self.members[group] {
            match layers.iter_mut().find(|(first, _)| first.layer == m.layer) {
                Some((_, roles)) => roles.push(m.role),
                None => layers.push((m, vec![m.role])),
            }
        }
        layers
    }

    /// The model's dtype and device.
    pub(crate) fn dtype_device(&self) -> (DType, candle_core::Device) {
        let output = &self.tape.loss.output;
        (output.dtype(), output.device().clone())
    }

    /// The number of rows `C_eff·N_g` of the Gram matrices of `factor`.
    pub(crate) fn gram_size(&self, factor: FactorId) -> usize {
        self.factors[factor.0].1.columns * self.factor_samples(factor)
    }

    /// The group's Gram matrix of `factor` as an operator (never formed for
    /// layers applied once per sample).
    pub(crate) fn gram_operator(&self, factor: FactorId, group: usize) -> Result<GramOperator> {
        let layers: Vec<(&LayerFactor, Vec<Role>)> = self
            .group_layers(group)
            .into_iter()
            .map(|(m, roles)| (self.layer_factor(factor, m), roles))
            .collect();
        let columns = self.factors[factor.0].1.columns;
        GramOperator::new(&layers, columns, self.factor_samples(factor))
    }

    /// `V_p · e` for every parameter `p` of the group, `e` `[K, C·N_g]`: `[K, *p.shape]` each.
    pub(crate) fn apply(&self, factor: FactorId, group: usize, e: &Tensor) -> Result<Vec<Tensor>> {
        self.members[group]
            .iter()
            .map(|&m| Ok(self.layer_factor(factor, m).apply(m.role, e)?))
            .collect()
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
