//! The optimizers the examples compare, behind one interface.

use anyhow::Result;
use candle_nn::optim::Optimizer;
use candle_optimisers::adam::{Adam, ParamsAdam};
use vivit::{DampedNewton, DampedNewtonConfig, Recorded};

use super::mlp::Mlp;

/// Takes one step from the recorded loss of a mini-batch.
pub trait Stepper {
    fn step(&mut self, mlp: &Mlp, loss: &Recorded) -> Result<()>;
}

/// Any candle optimizer (SGD, Adam, `DampedNewton`): `backward_step`.
struct Plain<O>(O);

impl<O: Optimizer> Stepper for Plain<O> {
    fn step(&mut self, _mlp: &Mlp, loss: &Recorded) -> Result<()> {
        self.0.backward_step(loss)?;
        Ok(())
    }
}

/// `DampedNewton` that re-evaluates the loss after each step, so that a
/// Levenberg–Marquardt damping sees how well the step did.
struct WithModel(DampedNewton);

impl Stepper for WithModel {
    fn step(&mut self, mlp: &Mlp, loss: &Recorded) -> Result<()> {
        self.0.step_with_model(loss, mlp)?;
        Ok(())
    }
}

type Build = Box<dyn FnOnce(&Mlp) -> Result<Box<dyn Stepper>>>;

/// An optimizer to train with: its name in tables and plots, and how to build
/// it for a model (once: a Levenberg–Marquardt damping carries state).
pub struct Candidate {
    pub name: String,
    build: Build,
}

impl Candidate {
    /// `candle_nn::SGD` with learning rate `lr`.
    pub fn sgd(lr: f64) -> Self {
        Self {
            name: format!("SGD lr={lr}"),
            build: Box::new(move |mlp| {
                Ok(Box::new(Plain(candle_nn::SGD::new(mlp.vars(), lr)?)) as Box<dyn Stepper>)
            }),
        }
    }

    /// `candle_optimisers::adam::Adam` with learning rate `lr`, other settings default.
    pub fn adam(lr: f64) -> Self {
        Self {
            name: format!("Adam lr={lr}"),
            build: Box::new(move |mlp| {
                let params = ParamsAdam {
                    lr,
                    ..ParamsAdam::default()
                };
                Ok(Box::new(Plain(Adam::new(mlp.vars(), params)?)) as Box<dyn Stepper>)
            }),
        }
    }

    /// `candle_nn::AdamW` with learning rate `lr`, other settings default
    /// (weight decay 0.01).
    pub fn adamw(lr: f64) -> Self {
        Self {
            name: format!("AdamW lr={lr}"),
            build: Box::new(move |mlp| {
                let params = candle_nn::ParamsAdamW {
                    lr,
                    ..candle_nn::ParamsAdamW::default()
                };
                let opt = candle_nn::AdamW::new(mlp.vars(), params)?;
                Ok(Box::new(Plain(opt)) as Box<dyn Stepper>)
            }),
        }
    }

    /// `DampedNewton` stepping with `backward_step`.
    pub fn damped_newton(name: impl Into<String>, config: DampedNewtonConfig) -> Self {
        Self {
            name: name.into(),
            build: Box::new(move |mlp| {
                let opt = DampedNewton::from_varmap(mlp.varmap(), config);
                Ok(Box::new(Plain(opt)) as Box<dyn Stepper>)
            }),
        }
    }

    /// `DampedNewton` stepping with `step_with_model` (for Levenberg–Marquardt damping).
    pub fn damped_newton_with_model(name: impl Into<String>, config: DampedNewtonConfig) -> Self {
        Self {
            name: name.into(),
            build: Box::new(move |mlp| {
                let opt = DampedNewton::from_varmap(mlp.varmap(), config);
                Ok(Box::new(WithModel(opt)) as Box<dyn Stepper>)
            }),
        }
    }

    /// The optimizer for `mlp`.
    pub fn build(self, mlp: &Mlp) -> Result<Box<dyn Stepper>> {
        (self.build)(mlp)
    }
}
