//! `Optimizer::step(&grads)` takes the Woodbury step's mean gradient from the
//! gradients it is handed; the directional step recomputes the per-sample
//! gradients it needs for `γ`.

mod common;

use anyhow::Result;
use candle_nn::optim::Optimizer;
use common::assert_close;
use common::tiny::Task;
use vivit::{Criterion, DampedNewton, DampedNewtonConfig};

/// The parameters after one step of a fresh optimizer from `config`, taken by
/// `step` on a fresh task.
fn after_one_step(
    config: &DampedNewtonConfig,
    step: impl Fn(&Task, &mut DampedNewton) -> Result<()>,
) -> Result<Vec<f64>> {
    let task = Task::new(true, 7)?;
    let mut opt = DampedNewton::from_varmap(&task.varmap, config.clone());
    step(&task, &mut opt)?;
    Ok(task.values()?.concat())
}

/// The parameters after `step_recorded`.
fn after_step_recorded(config: &DampedNewtonConfig) -> Result<Vec<f64>> {
    after_one_step(config, |task, opt| {
        opt.step_recorded(&task.record()?)?;
        Ok(())
    })
}

/// The parameters after `step` with the gradients of `scale · L`.
fn after_step_handed(config: &DampedNewtonConfig, scale: f64) -> Result<Vec<f64>> {
    after_one_step(config, |task, opt| {
        let loss = task.record()?;
        opt.step(&(&*loss * scale)?.backward()?)?;
        Ok(())
    })
}

/// With the gradients of the recorded loss, `step(&grads)` equals
/// `step_recorded` (whose `ḡ` is the mean of the per-sample gradient factor)
/// to round-off; with the gradients of `2L` the Woodbury step, linear in
/// `ḡ`, doubles (no trust region), so the handed gradients are the ones used.
#[test]
fn the_woodbury_step_uses_the_handed_gradients() -> Result<()> {
    let mut config = DampedNewtonConfig::default();
    config.trust_region = None;
    let before = Task::new(true, 7)?.values()?.concat();
    let recorded = after_step_recorded(&config)?;
    let handed = after_step_handed(&config, 1.0)?;
    assert_close("step(&grads) vs step_recorded", &handed, &recorded, 1e-10);
    let doubled = after_step_handed(&config, 2.0)?;
    let step =
        |after: &[f64]| -> Vec<f64> { after.iter().zip(&before).map(|(a, b)| a - b).collect() };
    let twice: Vec<f64> = step(&recorded).iter().map(|s| 2.0 * s).collect();
    assert_close("the step of 2ḡ", &step(&doubled), &twice, 1e-10);
    Ok(())
}

/// The directional step needs the per-sample gradients: it backpropagates
/// them itself, so the gradients of `2L` give the step of `L`.
#[test]
fn the_directional_step_recomputes_its_gradients() -> Result<()> {
    let config = DampedNewtonConfig::directional().criterion(Criterion::top_k(5));
    assert_eq!(
        after_step_handed(&config, 2.0)?,
        after_step_recorded(&config)?
    );
    Ok(())
}
