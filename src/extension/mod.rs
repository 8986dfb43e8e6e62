//! The backward extension machinery shared by every computation.
//!
//! One [`backward`] call turns a [`Recorded`] forward pass into per-layer factors
//! (loss-Hessian factor backpropagated to every tracked layer output, see
//! `factor.rs`), per-group Gram matrices `G̃ = Vᵀ V` (`layer.rs`) and products
//! `V·e`, and hands them to the computations, which share them: several
//! computations with the same factor settings backpropagate once.

mod factor;
mod layer;
mod patches;

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::group::ParamGroup;
use crate::record::{Recorded, Tape};
pub(crate) use factor::FactorSpec;
use factor::{backprop, check_dtype, TrackedLayer};
use layer::{LayerFactor, Role};

/// A computation that runs inside an extended backward pass.
///
/// Implemented by [`crate::EigvalshComputation`], [`crate::EighComputation`] and
/// the other computations; pass several to [`backward`] to share one pass.
pub trait Computation {
    /// Runs the computation on every group. Called by [`backward`].
    #[doc(hidden)]
    fn run(&mut self, ext: &mut Extension<'_>, groups: &[ParamGroup]) -> Result<()>;
}

/// Runs `computations` on `groups` in one extended backward pass over `recorded`.
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
/// assert_eq!(eigh.result(&groups[0])?.0.dims(), &[2]);
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
) -> Result<()> {
    let mut ext = Extension::new(recorded, groups)?;
    for computation in computations.iter_mut() {
        computation.run(&mut ext, groups)?;
    }
    Ok(())
}

/// A parameter of a group: which layer, weight or bias.
#[derive(Debug, Clone, Copy)]
struct Member {
    layer: usize,
    role: Role,
}

/// The state of one extended backward pass (opaque).
#[doc(hidden)]
pub struct Extension<'a> {
    tape: &'a Tape,
    layers: Vec<TrackedLayer<'a>>,
    members: Vec<Vec<Member>>,
    /// Seed of Monte-Carlo factors whose computation set none.
    default_seed: u64,
    factors: Vec<(FactorSpec, Vec<Option<LayerFactor>>)>,
    grams: HashMap<(usize, usize), Tensor>,
}

/// Handle of a backpropagated factor inside an [`Extension`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FactorId(usize);

/// Prints a `verbose` line to stderr.
pub(crate) fn say(verbose: bool, message: impl FnOnce() -> String) {
    if verbose {
        eprintln!("[vivit] {}", message());
    }
}

impl<'a> Extension<'a> {
    fn new(recorded: &'a Recorded, groups: &[ParamGroup]) -> Result<Self> {
        let tape = recorded.tape()?;
        check_dtype(&tape.loss.output)?;
        let loss = recorded.to_dtype(DType::F64)?.to_scalar::<f64>()?;
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

    /// The dtype of the model output.
    pub(crate) fn dtype(&self) -> DType {
        self.tape.loss.output.dtype()
    }

    /// Backpropagates the factor (once per distinct setting).
    ///
    /// `name` is the option the subsampling came from, for error messages.
    pub(crate) fn factor(
        &mut self,
        mc_samples: usize,
        subsampling: Option<&[usize]>,
        seed: Option<u64>,
        name: &'static str,
        verbose: bool,
    ) -> Result<FactorId> {
        if let Some(idx) = subsampling {
            check_subsampling(idx, self.batch_size()?, name)?;
        }
        let spec = FactorSpec {
            mc_samples,
            subsampling: subsampling.map(<[usize]>::to_vec),
            seed: if mc_samples == 0 {
                0
            } else {
                seed.unwrap_or(self.default_seed)
            },
        };
        if let Some(i) = self.factors.iter().position(|(s, _)| *s == spec) {
            return Ok(FactorId(i));
        }
        let mut needed = vec![false; self.layers.len()];
        for member in self.members.iter().flatten() {
            needed[member.layer] = true;
        }
        say(verbose, || {
            format!(
                "backpropagate the {} loss-Hessian factor ({}) on {} samples to {} tracked layers",
                if mc_samples == 0 {
                    "exact"
                } else {
                    "Monte-Carlo"
                },
                if mc_samples == 0 {
                    "C columns".to_string()
                } else {
                    format!("M = {mc_samples} columns, seed {}", spec.seed)
                },
                spec.subsampling
                    .as_ref()
                    .map_or(self.batch_size().unwrap_or(0), Vec::len),
                needed.iter().filter(|&&n| n).count(),
            )
        });
        let factors = backprop(self.tape, &self.layers, &needed, &spec)?;
        self.factors.push((spec, factors));
        Ok(FactorId(self.factors.len() - 1))
    }

    fn layer_factor(&self, factor: FactorId, member: Member) -> &LayerFactor {
        self.factors[factor.0].1[member.layer]
            .as_ref()
            .expect("factors are built for every layer that holds a group parameter")
    }

    /// The Gram matrix `G̃ = Σ_{p∈group} V_pᵀ V_p` `[C·N_g, C·N_g]` (cached).
    pub(crate) fn gram(&mut self, factor: FactorId, group: usize, verbose: bool) -> Result<Tensor> {
        if let Some(gram) = self.grams.get(&(factor.0, group)) {
            return Ok(gram.clone());
        }
        let mut sum: Option<Tensor> = None;
        for &member in &self.members[group] {
            let block = self.layer_factor(factor, member).gram(member.role)?;
            sum = Some(match sum {
                Some(sum) => (sum + block)?,
                None => block,
            });
        }
        let gram = sum.expect("groups are checked to be non-empty");
        say(verbose, || {
            format!(
                "group {group}: Gram matrix {n}×{n} from {} parameters",
                self.members[group].len(),
                n = gram.dim(0).unwrap_or(0)
            )
        });
        self.grams.insert((factor.0, group), gram.clone());
        Ok(gram)
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

/// Maps every group parameter to the tracked layer (and role) that uses it.
fn resolve(layers: &[TrackedLayer<'_>], groups: &[ParamGroup]) -> Result<Vec<Vec<Member>>> {
    let mut owner = HashMap::new();
    groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            if group.params().is_empty() {
                return Err(Error::EmptyGroup(g));
            }
            group
                .params()
                .iter()
                .enumerate()
                .map(|(p, param)| {
                    if let Some(first) = owner.insert(param.id(), g) {
                        return Err(Error::ParamInTwoGroups {
                            param: p,
                            shape: param.dims().to_vec(),
                            first,
                            second: g,
                        });
                    }
                    layers
                        .iter()
                        .enumerate()
                        .find_map(|(layer, l)| {
                            if l.weight().id() == param.id() {
                                Some(Member {
                                    layer,
                                    role: Role::Weight,
                                })
                            } else if l.bias().map(Tensor::id) == Some(param.id()) {
                                Some(Member {
                                    layer,
                                    role: Role::Bias,
                                })
                            } else {
                                None
                            }
                        })
                        .ok_or_else(|| Error::ParamNotRecorded {
                            group: g,
                            param: p,
                            shape: param.dims().to_vec(),
                        })
                })
                .collect()
        })
        .collect()
}
