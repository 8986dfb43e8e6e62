//! Small random f64 architectures for property tests: optional 2-d
//! convolutions (plain, grouped or transposed: [`super::conv_spec`]; with pooling) then linear layers (optionally with a tracked
//! LayerNorm or RMSNorm), random activations and residual additions,
//! cross-entropy, MSE or binary cross-entropy, with deterministic weights and
//! data from a seed. `Debug` prints the net compactly, e.g.
//! `N=3 [2×6×6] Conv2d(2→2 k3 s1 p1 d1) tanh +res | maxpool2 | Linear(18→3) | cross-entropy, seed 5`.
//!
//! Only what the brute force can differentiate correctly with candle 0.10.2 is
//! drawn: square images (conv2d's backward errs for stride 2 when the two
//! spatial sizes leave different remainders), 2×2 pooling (max pooling through
//! `vivit::nn::max_pool2d`: candle's backward scales the gradient by 1/4), no
//! conv1d (wrong kernel gradient).

use std::fmt;

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::VarMap;
use proptest::prelude::*;
use vivit::nn as vnn;

use super::brute_force::{input, Loss, Problem};
use super::conv_spec::{ConvSpec, RawConv};

#[derive(Debug, Clone, Copy)]
pub enum Act {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

impl Act {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::Identity => Ok(x.clone()),
            Act::Relu => x.relu(),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => candle_nn::ops::sigmoid(x),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Act::Identity => "",
            Act::Relu => " relu",
            Act::Tanh => " tanh",
            Act::Sigmoid => " sigmoid",
        }
    }
}

#[derive(Clone, Copy)]
pub struct DenseSpec {
    pub inputs: usize,
    pub out: usize,
    pub bias: bool,
    pub act: Act,
    /// `h + act(linear(h))`, same width.
    pub residual: bool,
    /// A tracked norm between the linear layer and the activation (hidden
    /// layers of width ≥ 2 only: a norm of one feature is constant).
    pub norm: Norm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    None,
    Layer,
    Rms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    None,
    Avg,
    Max,
}

#[derive(Debug, Clone, Copy)]
pub enum InputShape {
    Vector(usize),
    /// `[channels, side, side]`.
    Image(usize, usize),
}

/// The widest hidden linear layer.
const MAX_WIDTH: usize = 5;

/// A drawn architecture, already made consistent (see [`Arch::strategy`]).
#[derive(Clone)]
pub struct Arch {
    pub batch: usize,
    pub input: InputShape,
    pub convs: Vec<ConvSpec>,
    pub pool: Pool,
    pub dense: Vec<DenseSpec>,
    pub loss: Loss,
    pub seed: u64,
}

pub fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        Just(Act::Identity),
        Just(Act::Relu),
        Just(Act::Tanh),
        Just(Act::Sigmoid)
    ]
}

type RawDense = (usize, bool, Act, bool, Norm);

impl Arch {
    /// Batch 1–4, an input vector of width 1–4 or an image of 1–2 channels
    /// and side 3–6 with 0–2 convolutions ([`ConvSpec::strategy`]) and optional 2×2 pooling, 0–2 hidden
    /// linear layers of width 1–5, an output of 1–4 values (2–4 classes).
    pub fn strategy() -> impl Strategy<Value = Arch> {
        let conv = ConvSpec::strategy();
        let norm = prop_oneof![Just(Norm::None), Just(Norm::Layer), Just(Norm::Rms)];
        let dense = (1..=MAX_WIDTH, any::<bool>(), act(), any::<bool>(), norm);
        let image = prop_oneof![
            (1..=4usize).prop_map(InputShape::Vector),
            (1..=2usize, 3..=6usize).prop_map(|(c, s)| InputShape::Image(c, s)),
        ];
        let pool = prop_oneof![Just(Pool::None), Just(Pool::Avg), Just(Pool::Max)];
        let loss = prop_oneof![Just(Loss::CrossEntropy), Just(Loss::Mse), Just(Loss::Bce)];
        (
            1..=4usize,
            image,
            prop::collection::vec(conv, 0..=2),
            pool,
            prop::collection::vec(dense, 0..=2),
            (1..=4usize, loss),
            0..1000u64,
        )
            .prop_map(
                |(batch, input, convs, pool, dense, (outputs, loss), seed)| {
                    Self::consistent(batch, input, &convs, pool, &dense, outputs, loss, seed)
                },
            )
    }

    /// Fixes what the raw draw left inconsistent: a residual block keeps its
    /// input's shape, a convolution that does not fit is left out, pooling
    /// needs an even side, cross-entropy at least 2 classes; a residual linear
    /// layer is only drawn on inputs of at most `MAX_WIDTH`.
    #[allow(clippy::too_many_arguments)]
    fn consistent(
        batch: usize,
        input: InputShape,
        raw_convs: &[RawConv],
        pool: Pool,
        raw_dense: &[RawDense],
        outputs: usize,
        loss: Loss,
        seed: u64,
    ) -> Self {
        let mut convs = Vec::new();
        let mut pool_used = Pool::None;
        let width = match input {
            InputShape::Vector(width) => width,
            InputShape::Image(mut channels, mut side) => {
                for &raw in raw_convs {
                    let spec = ConvSpec::new(raw, channels);
                    if let Some(out_side) = spec.out_side(side) {
                        (channels, side) = (spec.out, out_side);
                        convs.push(spec);
                    }
                }
                if pool != Pool::None && side % 2 == 0 {
                    pool_used = pool;
                    side /= 2;
                }
                channels * side * side
            }
        };
        let mut dense = Vec::new();
        let mut inputs = width;
        let outputs = match loss {
            Loss::CrossEntropy | Loss::CrossEntropyIgnoring(_) => outputs.max(2),
            Loss::Mse | Loss::Bce => outputs,
        };
        let last = DenseSpec {
            inputs: 0,
            out: outputs,
            bias: true,
            act: Act::Identity,
            residual: false,
            norm: Norm::None,
        };
        let hidden = raw_dense
            .iter()
            .map(|&(out, bias, act, residual, norm)| DenseSpec {
                inputs: 0,
                out,
                bias,
                act,
                residual,
                norm,
            });
        for mut spec in hidden.chain([last]) {
            spec.inputs = inputs;
            // a square layer on a wide flattened image would be most of D
            spec.residual &= inputs <= MAX_WIDTH;
            if spec.residual {
                spec.out = inputs;
            }
            if spec.out < 2 {
                spec.norm = Norm::None;
            }
            inputs = spec.out;
            dense.push(spec);
        }
        Self {
            batch,
            input,
            convs,
            pool: pool_used,
            dense,
            loss,
            seed,
        }
    }

    /// Parameter names are zero-padded so that sorting keeps the layer order.
    pub fn problem(&self) -> Result<Problem> {
        let varmap = VarMap::new();
        let vb = super::brute_force::vb(&varmap);
        let mut convs = Vec::new();
        for (i, s) in self.convs.iter().enumerate() {
            convs.push((s.build(vb.pp(format!("l{i:02}")))?, *s));
        }
        let mut dense = Vec::new();
        for (i, s) in self.dense.iter().enumerate() {
            let name = format!("l{:02}", self.convs.len() + i);
            let norm: Option<Box<dyn Module>> = match s.norm {
                Norm::None => None,
                Norm::Layer => Some(Box::new(vnn::layer_norm(
                    s.out,
                    1e-5,
                    vb.pp(format!("{name}n")),
                )?)),
                Norm::Rms => Some(Box::new(vnn::rms_norm(
                    s.out,
                    1e-5,
                    vb.pp(format!("{name}n")),
                )?)),
            };
            dense.push((
                vnn::linear_b(s.inputs, s.out, s.bias, vb.pp(name))?,
                norm,
                *s,
            ));
        }
        self.set_weights(&varmap)?;
        let x = match self.input {
            InputShape::Vector(w) => input(&[self.batch, w], self.seed)?,
            InputShape::Image(c, s) => input(&[self.batch, c, s, s], self.seed)?,
        };
        let pool = self.pool;
        let forward = move || -> candle_core::Result<Tensor> {
            let mut h = x.clone();
            for (conv, s) in &convs {
                h = residual(&h, s.act.apply(&conv.forward(&h)?)?, s.residual)?;
            }
            h = match pool {
                Pool::None => h,
                Pool::Avg => h.avg_pool2d(2)?,
                Pool::Max => vivit::nn::max_pool2d(&h, 2, 2)?,
            };
            h = h.flatten_from(1)?;
            for (linear, norm, s) in &dense {
                let mut z = linear.forward(&h)?;
                if let Some(norm) = norm {
                    z = norm.forward(&z)?;
                }
                h = residual(&h, s.act.apply(&z)?, s.residual)?;
            }
            Ok(h)
        };
        Problem::new(varmap, forward, self.loss, self.seed)
    }

    /// Weights `~ U(−1.5/√fan_in, 1.5/√fan_in)`-like deterministic values, biases ±0.5.
    fn set_weights(&self, varmap: &VarMap) -> Result<()> {
        for (k, (name, var)) in vnn::vars_by_name(varmap).into_iter().enumerate() {
            let dims = var.dims();
            let scale = if name.ends_with("weight") {
                1.5 / (dims[1..].iter().product::<usize>() as f64).sqrt()
            } else {
                0.5
            };
            let seed = self.seed * 31 + k as u64 + 1;
            var.set(&(input(dims, seed)? * scale)?)?;
        }
        Ok(())
    }
}

fn residual(h: &Tensor, out: Tensor, residual: bool) -> candle_core::Result<Tensor> {
    if residual {
        h + out
    } else {
        Ok(out)
    }
}

impl fmt::Debug for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N={} ", self.batch)?;
        match self.input {
            InputShape::Vector(w) => write!(f, "[{w}]")?,
            InputShape::Image(c, s) => write!(f, "[{c}×{s}×{s}]")?,
        }
        for s in &self.convs {
            write!(f, " | {s:?}")?;
        }
        match self.pool {
            Pool::None => {}
            Pool::Avg => write!(f, " | avgpool2")?,
            Pool::Max => write!(f, " | maxpool2")?,
        }
        for s in &self.dense {
            write!(
                f,
                " | Linear({}→{}{}){}{}{}",
                s.inputs,
                s.out,
                if s.bias { "" } else { ", no bias" },
                match s.norm {
                    Norm::None => "",
                    Norm::Layer => " layernorm",
                    Norm::Rms => " rmsnorm",
                },
                s.act.name(),
                if s.residual { " +res" } else { "" }
            )?;
        }
        write!(f, " | {}, seed {}", self.loss.name(), self.seed)
    }
}
