//! One training run, and the time of a plain forward and backward pass.

use std::time::Instant;

use anyhow::Result;
use candle_core::Module;

use crate::curve::{Curve, Stop};
use crate::data::Batches;
use crate::network::Network;
use crate::optimizers::Method;
use crate::problem::Problem;
use crate::tasks::Task;

/// Passes run before [`forward_backward_ms`] measures.
const WARM_UP: usize = 3;
/// Passes [`forward_backward_ms`] takes the median of.
const TIMED: usize = 20;

/// Trains a fresh model of `task` (initialized from `seed`, which also
/// orders the mini-batches) with `method` for the task's step budget.
///
/// A step that fails ends the run, as does a training loss that is no
/// longer finite, or a next step that, as long as the last, would take the
/// step time past `time_limit` seconds; the curve says where and why.
pub fn train(task: &Task, method: &Method, seed: u64, time_limit: f64) -> Result<Curve> {
    let net = Network::new(&task.layers, seed)?;
    let problem = Problem {
        net: &net,
        train: &task.train,
        objective: task.objective,
    };
    let mut optimizer = method.build(&problem)?;
    let mut batches = Batches::new(&task.train, task.batch_size, seed)?;
    let mut loss = vec![problem.train_loss()?];
    let mut seconds = vec![0.0];
    let mut busy = 0.0;
    let mut stop = None;
    let mut last = 0.0;
    for step in 0..task.steps {
        if busy + last > time_limit {
            stop = Some(Stop {
                step,
                reason: format!("time limit: {busy:.1} s of steps, {last:.1} s the last"),
                time_limit: true,
            });
            break;
        }
        let batch = batches.next_batch()?;
        let start = Instant::now();
        let outcome = problem
            .record(&batch)
            .and_then(|recorded| optimizer.step(&recorded));
        last = start.elapsed().as_secs_f64();
        busy += last;
        if let Err(e) = outcome {
            // the first line: candle errors may carry a backtrace
            let reason = format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            stop = Some(Stop {
                step,
                reason,
                time_limit: false,
            });
            break;
        }
        let current = problem.train_loss()?;
        loss.push(current);
        seconds.push(busy);
        if !current.is_finite() {
            stop = Some(Stop {
                step: step + 1,
                reason: format!("the training loss is {current}"),
                time_limit: false,
            });
            break;
        }
    }
    Ok(Curve {
        loss,
        seconds,
        stop,
    })
}

/// Median milliseconds of a plain forward and backward pass (no recording,
/// no update) on one mini-batch of `task`, at the initialization of seed 0.
pub fn forward_backward_ms(task: &Task) -> Result<f64> {
    let net = Network::new(&task.layers, 0)?;
    let mut batches = Batches::new(&task.train, task.batch_size, 0)?;
    let batch = batches.next_batch()?;
    let mut times = Vec::with_capacity(TIMED);
    for pass in 0..WARM_UP + TIMED {
        let start = Instant::now();
        let outputs = net.forward(&batch.inputs)?;
        let grads = task.objective.loss(&outputs, &batch.targets)?.backward()?;
        drop(grads);
        if pass >= WARM_UP {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
