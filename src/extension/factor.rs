//! Backpropagating the loss-Hessian factor to every tracked layer output.
//!
//! For each of the `C_eff` columns `S[c]` `[N_g, C]` of the loss-Hessian factor
//! (see [`crate::loss`]), one backward pass of `⟨f, Z_c⟩` through the recorded
//! graph (a factor pass: tracked layers compute no parameter gradient) leaves
//! `J_{z_l}ᵀ Z_c` at every layer output `z_l`, row by row per sample.

use candle_core::{DType, Shape, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::calls::{call_factor, kept_dims, kept_signal, CallFactor};
use super::layer::LayerFactor;
use crate::error::{Error, Result};
use crate::kernels::{Slot, Stacked};
use crate::tape::{LayerRecord, Signal, Tape};

/// The columns backpropagated from the model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columns {
    /// The exact loss-Hessian factor (`C` columns, `1/√N_g` included).
    Exact,
    /// A Monte-Carlo loss-Hessian factor with `samples` columns.
    MonteCarlo { samples: usize, seed: u64 },
    /// The per-sample loss gradients `∇_f ℓ_n` (one column, unscaled), so that
    /// the layer factor's columns are the per-sample parameter gradients `g_n`.
    Gradient,
}

/// Which factor, on which samples of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FactorSpec {
    pub columns: Columns,
    pub subsampling: Option<Vec<usize>>,
}

/// All calls of one tracked weight in the forward pass.
#[derive(Debug)]
pub(crate) struct TrackedLayer<'t> {
    pub calls: Vec<&'t LayerRecord>,
}

impl<'t> TrackedLayer<'t> {
    /// Groups the tape's layer calls by weight.
    pub fn from_tape(tape: &'t Tape) -> Result<Vec<Self>> {
        let mut layers: Vec<TrackedLayer<'t>> = Vec::new();
        for call in &tape.layers {
            match layers
                .iter_mut()
                .find(|l| l.calls[0].weight.id() == call.weight.id())
            {
                Some(layer) => {
                    let first = layer.calls[0];
                    let same_bias =
                        first.bias.as_ref().map(|b| b.id()) == call.bias.as_ref().map(|b| b.id());
                    if first.kind != call.kind || !same_bias {
                        return Err(Error::UnsupportedLayer(format!(
                            "weight {:?} is shared by layers of different kinds or biases",
                            call.weight.dims()
                        )));
                    }
                    layer.calls.push(call);
                }
                None => layers.push(TrackedLayer { calls: vec![call] }),
            }
        }
        Ok(layers)
    }

    pub fn weight(&self) -> &Tensor {
        &self.calls[0].weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.calls[0].bias.as_ref()
    }
}

/// A backpropagated factor: per-layer algebra and the loss factor's basis.
#[derive(Debug)]
pub(crate) struct Backpropagated {
    /// Columns `C_eff` of the loss-Hessian factor (per sample).
    pub columns: usize,
    /// The factor of each layer marked as needed.
    pub layers: Vec<Option<LayerFactor>>,
    /// `U` `[N_g, P, K, K−1]` when the loss factor has fewer columns than the
    /// reference's (exact cross-entropy, `P` positions of `K` classes): Gram
    /// vectors in the reference layout are `ẽ[:, p, n] = U_{np} ẽ'[:, p, n]`,
    /// and the Gram matrix misses `N_g·P` zero eigenvalues.
    pub basis: Option<Tensor>,
}

/// The seed columns of one factor and how to read its signals.
struct Seeds {
    /// Rows of the subsampled samples, if any.
    rows: Option<Tensor>,
    /// The columns `S[c]` `[N_g, C]` of the loss factor, `[C_eff, N_g, C]`.
    factor: Tensor,
    basis: Option<Tensor>,
}

impl Seeds {
    fn new(tape: &Tape, spec: &FactorSpec) -> Result<Self> {
        let output = &tape.loss.output;
        let rows = spec
            .subsampling
            .as_ref()
            .map(|idx| {
                let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                crate::linalg::host::indices_to_device(idx, output.device())
            })
            .transpose()?;
        let rows_out = select_rows(rows.as_ref(), &output.detach())?;
        let mask = match &tape.loss.mask {
            Some(mask) => Some(select_rows(rows.as_ref(), mask)?),
            None => None,
        };
        let (loss, mask) = (tape.loss.kind, mask.as_ref());
        let (factor, basis) = match spec.columns {
            Columns::Exact => loss.sqrt_hessian(&rows_out, mask)?,
            Columns::MonteCarlo { samples, seed } => {
                let mut rng = StdRng::seed_from_u64(seed);
                let factor = loss.sampled_sqrt_hessian(&rows_out, mask, samples, &mut rng)?;
                (factor, None)
            }
            Columns::Gradient => {
                let targets = select_rows(rows.as_ref(), &tape.loss.targets)?;
                let gradient = loss.gradient(&rows_out, &targets, mask)?;
                (gradient.unsqueeze(0)?, None)
            }
        };
        Ok(Seeds {
            rows,
            factor,
            basis,
        })
    }

    /// The subsampled rows of `t`.
    fn select(&self, t: &Tensor) -> Result<Tensor> {
        select_rows(self.rows.as_ref(), t)
    }

    fn columns(&self) -> Result<usize> {
        Ok(self.factor.dim(0)?)
    }

    /// Zeros for the signals of each call of the needed layers (`[layer][call]`,
    /// none for the others): `[C_eff, N_g, *output]`.
    fn stacks(
        &self,
        tape: &Tape,
        layers: &[TrackedLayer<'_>],
        needed: &[bool],
    ) -> Result<Vec<Vec<Stacked>>> {
        let output = &tape.loss.output;
        let columns = self.columns()?;
        let kept = match &self.rows {
            Some(rows) => rows.dim(0)?,
            None => output.dim(0)?,
        };
        layers
            .iter()
            .zip(needed)
            .map(|(layer, &needed)| {
                if !needed {
                    return Ok(Vec::new());
                }
                layer
                    .calls
                    .iter()
                    .map(|call| {
                        let dims = match &call.signal {
                            Signal::Captured { shape, .. } => shape.dims(),
                            Signal::Probe(probe) => probe.dims(),
                        };
                        let mut dims = kept_dims(call, dims);
                        if let Some(batch) = dims.first_mut() {
                            *batch = kept;
                        }
                        Ok(Stacked::new(
                            columns,
                            Shape::from(dims),
                            output.dtype(),
                            output.device(),
                        ))
                    })
                    .collect()
            })
            .collect()
    }

    /// Puts the signals `J_zᵀ Z_c` of one factor pass at each call of the
    /// needed layers (rows of the subsampled samples) into their `slots` (in
    /// the order of the layers and their calls); calls the pass does not reach
    /// keep zeros.
    fn fill(
        &self,
        tape: &Tape,
        layers: &[TrackedLayer<'_>],
        needed: &[bool],
        c: usize,
        slots: Vec<Slot<'_>>,
    ) -> Result<()> {
        let output = &tape.loss.output;
        let column = self.factor.get(c)?;
        let seed = match &self.rows {
            Some(rows) => output.zeros_like()?.index_add(rows, &column, 0)?,
            None => column,
        };
        let (grads, captured) = tape
            .passes
            .run(tape.layers.len(), || (output * seed)?.sum_all()?.backward());
        let grads = grads?;
        let calls = layers
            .iter()
            .zip(needed)
            .filter(|(_, &needed)| needed)
            .flat_map(|(layer, _)| &layer.calls);
        for (call, slot) in calls.zip(slots) {
            let signal = match &call.signal {
                Signal::Captured { index, .. } => captured[*index].as_ref(),
                Signal::Probe(probe) => grads.get(probe.as_tensor()),
            };
            if let Some(signal) = signal {
                let inputs = || self.select(&call.inputs);
                slot.fill(&kept_signal(call, inputs, &self.select(signal)?)?)?;
            }
        }
        Ok(())
    }

    /// The factor of each needed layer from its stacked signals `[layer][call]`.
    fn factor(
        self,
        layers: &[TrackedLayer<'_>],
        needed: &[bool],
        stacks: Vec<Vec<Stacked>>,
    ) -> Result<Backpropagated> {
        let c_eff = self.columns()?;
        let factors = layers
            .iter()
            .zip(stacks)
            .enumerate()
            .map(|(l, (layer, layer_stacks))| {
                if !needed[l] {
                    return Ok(None);
                }
                let calls = layer
                    .calls
                    .iter()
                    .zip(layer_stacks)
                    .map(|(call, stacked)| {
                        let b = stacked.into_tensor()?;
                        call_factor(call, || self.select(&call.inputs), &b)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(CallFactor::join(calls, layer.weight().shape())?))
            })
            .collect::<Result<_>>()?;
        Ok(Backpropagated {
            columns: c_eff,
            layers: factors,
            basis: self.basis,
        })
    }
}

/// The factors for each of `specs` of the `layers` marked in `needed`.
///
/// All factor passes (every column of every spec) are independent, and
/// candle's elementwise backward ops are single-threaded, so they run in
/// parallel together.
pub(crate) fn backprop(
    tape: &Tape,
    layers: &[TrackedLayer<'_>],
    needed: &[bool],
    specs: &[FactorSpec],
) -> Result<Vec<Backpropagated>> {
    let seeds = specs
        .iter()
        .map(|spec| Seeds::new(tape, spec))
        .collect::<Result<Vec<_>>>()?;
    let mut stacks = seeds
        .iter()
        .map(|seeds| seeds.stacks(tape, layers, needed))
        .collect::<Result<Vec<_>>>()?;
    // each pass (spec s, column c) with its slots, needed layers' calls in order
    let mut passes = Vec::new();
    for (s, spec_stacks) in stacks.iter_mut().enumerate() {
        let mut columns: Vec<Vec<Slot<'_>>> =
            (0..seeds[s].columns()?).map(|_| Vec::new()).collect();
        for stacked in spec_stacks.iter_mut().flatten() {
            for (column, slot) in columns.iter_mut().zip(stacked.slots()) {
                column.push(slot);
            }
        }
        passes.extend(
            columns
                .into_iter()
                .enumerate()
                .map(|(c, slots)| (s, c, slots)),
        );
    }
    passes
        .into_par_iter()
        .try_for_each(|(s, c, slots)| seeds[s].fill(tape, layers, needed, c, slots))?;
    seeds
        .into_iter()
        .zip(stacks)
        .map(|(seeds, stacks)| seeds.factor(layers, needed, stacks))
        .collect()
}

/// The `rows` of `t` (all if `None`).
fn select_rows(rows: Option<&Tensor>, t: &Tensor) -> Result<Tensor> {
    Ok(match rows {
        Some(rows) => t.index_select(rows, 0)?,
        None => t.clone(),
    })
}

/// Checks that the model computes in a float dtype the eigensolver supports.
pub(crate) fn check_dtype(t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::UnsupportedDType(other)),
    }
}
