//! The optimizers compared, behind one interface: a step from a recorded loss.

use anyhow::Result;
use candle_nn::optim::Optimizer;
use candle_nn::{AdamW, ParamsAdamW};
use candle_optimisers::adam::{Adam, ParamsAdam};
use candle_optimisers::esgd::{ParamsSGD, SGD};
use candle_optimisers::lbfgs::{Lbfgs, LineSearch, ParamsLBFGS};
use candle_optimisers::{LossOptimizer, Momentum};
use vivit::{DampedNewton, DampedNewtonConfig, Recorded};

use crate::problem::Problem;

/// SGD's momentum.
const MOMENTUM: f64 = 0.9;
/// L-BFGS's strong Wolfe line search: sufficient decrease `c1`, curvature
/// `c2`, tolerance (the values candle-optimisers suggests).
const WOLFE: LineSearch = LineSearch::StrongWolfe(1e-4, 0.9, 1e-9);

/// An optimizer and its settings.
#[derive(Debug, Clone)]
pub enum Method {
    /// `candle_optimisers::esgd::SGD` with classical momentum 0.9.
    Sgd { lr: f64 },
    /// `candle_optimisers::adam::Adam`, other settings default.
    Adam { lr: f64 },
    /// `candle_nn::AdamW`, other settings default (weight decay 0.01).
    AdamW { lr: f64 },
    /// `candle_optimisers::lbfgs::Lbfgs`, step size 1 with the strong Wolfe
    /// line search, history 100; on the full-batch loss.
    Lbfgs,
    /// `vivit::DampedNewton` stepping with `backward_step`.
    DampedNewton {
        name: String,
        config: Box<DampedNewtonConfig>,
    },
}

/// Takes one optimizer step from the recorded loss of a batch.
pub trait Stepper {
    /// The step; an error ends the run.
    fn step(&mut self, loss: &Recorded) -> Result<()>;
}

/// A candle optimizer: `backward_step` on the recorded loss.
struct Plain<O>(O);

impl<O: Optimizer> Stepper for Plain<O> {
    fn step(&mut self, loss: &Recorded) -> Result<()> {
        Ok(self.0.backward_step(loss)?)
    }
}

/// L-BFGS, whose line search evaluates the full-batch loss of its problem.
struct LineSearched<'a>(Lbfgs<'a, Problem<'a>>);

impl Stepper for LineSearched<'_> {
    fn step(&mut self, loss: &Recorded) -> Result<()> {
        self.0.backward_step(loss)?;
        Ok(())
    }
}

impl Method {
    /// The optimizer's name without its learning rate: `SGD`, `Adam`,
    /// `AdamW`, `LBFGS` or the DampedNewton variant's name.
    pub fn family(&self) -> &str {
        match self {
            Self::Sgd { .. } => "SGD",
            Self::Adam { .. } => "Adam",
            Self::AdamW { .. } => "AdamW",
            Self::Lbfgs => "LBFGS",
            Self::DampedNewton { name, .. } => name,
        }
    }

    /// The tuned learning rate, for the methods that have one.
    pub fn lr(&self) -> Option<f64> {
        match *self {
            Self::Sgd { lr } | Self::Adam { lr } | Self::AdamW { lr } => Some(lr),
            Self::Lbfgs | Self::DampedNewton { .. } => None,
        }
    }

    /// The family and learning rate, e.g. `AdamW lr=0.001`.
    pub fn label(&self) -> String {
        match self.lr() {
            Some(lr) => format!("{} lr={lr}", self.family()),
            None => self.family().to_string(),
        }
    }

    /// The settings beyond the name and learning rate (a DampedNewton
    /// variant's whole configuration), so that a cached run of a variant
    /// whose settings changed under the same name is not reused.
    pub fn settings(&self) -> String {
        match self {
            Self::DampedNewton { config, .. } => format!("{config:?}"),
            _ => String::new(),
        }
    }

    /// Whether this is a DampedNewton variant (not a baseline).
    pub fn is_damped_newton(&self) -> bool {
        matches!(self, Self::DampedNewton { .. })
    }

    /// The method with learning rate `lr`, for the methods that have one.
    pub fn with_lr(&self, lr: f64) -> Self {
        match self {
            Self::Sgd { .. } => Self::Sgd { lr },
            Self::Adam { .. } => Self::Adam { lr },
            Self::AdamW { .. } => Self::AdamW { lr },
            other => other.clone(),
        }
    }

    /// A fresh optimizer over the parameters of `problem`.
    pub fn build<'a>(&self, problem: &'a Problem<'a>) -> Result<Box<dyn Stepper + 'a>> {
        let vars = problem.net.vars();
        Ok(match self {
            &Self::Sgd { lr } => {
                let params = ParamsSGD {
                    lr,
                    momentum: Some(Momentum::Classical(MOMENTUM)),
                    ..ParamsSGD::default()
                };
                Box::new(Plain(SGD::new(vars, params)?))
            }
            &Self::Adam { lr } => {
                let params = ParamsAdam {
                    lr,
                    ..ParamsAdam::default()
                };
                Box::new(Plain(Adam::new(vars, params)?))
            }
            &Self::AdamW { lr } => {
                let params = ParamsAdamW {
                    lr,
                    ..ParamsAdamW::default()
                };
                Box::new(Plain(AdamW::new(vars, params)?))
            }
            Self::Lbfgs => {
                let params = ParamsLBFGS {
                    line_search: Some(WOLFE),
                    ..ParamsLBFGS::default()
                };
                Box::new(LineSearched(Lbfgs::new(vars, params, problem)?))
            }
            Self::DampedNewton { config, .. } => Box::new(Plain(DampedNewton::from_varmap(
                problem.net.varmap(),
                (**config).clone(),
            ))),
        })
    }
}
