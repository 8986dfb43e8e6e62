//! The training loop shared by the examples.

use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::Device;

use super::batches::Batches;
use super::data::Digits;
use super::mlp::Mlp;
use super::optimizers::Candidate;
use super::progress;

/// What every run shares, so that runs differ only in the optimizer.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Optimizer steps (one mini-batch each).
    pub steps: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed of the model's initialization and of the mini-batch order.
    pub seed: u64,
}

/// The settings of the examples: 300 steps on mini-batches of 64 images
/// (about 13 epochs of the 1,500 training images).
pub const DIGITS: Settings = Settings {
    steps: 300,
    batch_size: 64,
    seed: 42,
};

/// How a run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    /// Loss on the whole training split before training and after each step.
    pub train_loss: Vec<f64>,
    /// Accuracy on the test split after training.
    pub test_accuracy: f64,
    /// Mean wall time of one step: forward pass, recording and update.
    pub step_time: Duration,
    /// The step at which the optimizer refused to go on, and why.
    pub stopped: Option<(usize, String)>,
}

impl Outcome {
    /// Loss on the whole training split after training.
    pub fn final_train_loss(&self) -> f64 {
        self.train_loss.last().copied().unwrap_or(f64::NAN)
    }
}

/// Trains a fresh MLP with `candidate`.
pub fn train(candidate: Candidate, digits: &Digits, settings: &Settings) -> Result<Outcome> {
    train_observed(candidate, digits, settings, |_, _| Ok(()))
}

/// As [`train`], calling `observe(step, mlp)` before each step and after the
/// last (step `settings.steps`); its time is not counted as step time.
///
/// A step that the optimizer refuses (an error of the optimizer, such as a
/// step that is not finite) ends the run early: the outcome says where and why.
pub fn train_observed(
    candidate: Candidate,
    digits: &Digits,
    settings: &Settings,
    mut observe: impl FnMut(usize, &Mlp) -> Result<()>,
) -> Result<Outcome> {
    let name = candidate.name.clone();
    let mlp = Mlp::new(settings.seed, &Device::Cpu)?;
    let mut optimizer = candidate.build(&mlp)?;
    let mut batches = Batches::new(&digits.train, settings.batch_size, settings.seed)?;
    let bar = progress::bar(&name, settings.steps)?;
    let mut train_loss = vec![mlp.loss(&digits.train)?];
    let mut busy = Duration::ZERO;
    let mut stopped = None;
    for step in 0..settings.steps {
        observe(step, &mlp)?;
        let batch = batches.next_batch()?;
        let start = Instant::now();
        let loss = mlp.record_loss(&batch)?;
        if let Err(e) = optimizer.step(&mlp, &loss) {
            // e.g. a damping that lets the step blow up: report it, keep the other runs
            bar.abandon_with_message(format!("stopped at step {step}"));
            stopped = Some((step, format!("{e:#}")));
            break;
        }
        busy += start.elapsed();
        let full = mlp.loss(&digits.train)?;
        train_loss.push(full);
        bar.set_message(format!("train loss {full:.4}"));
        bar.inc(1);
    }
    let done = train_loss.len() - 1;
    if stopped.is_none() {
        observe(done, &mlp)?;
        bar.finish();
    }
    Ok(Outcome {
        name,
        train_loss,
        test_accuracy: mlp.accuracy(&digits.test)?,
        step_time: busy / done.max(1) as u32,
        stopped,
    })
}

/// Trains with each candidate in turn.
pub fn train_all(
    candidates: Vec<Candidate>,
    digits: &Digits,
    settings: &Settings,
) -> Result<Vec<Outcome>> {
    candidates
        .into_iter()
        .map(|c| train(c, digits, settings))
        .collect()
}
