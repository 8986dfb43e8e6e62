//! What a task's runs say: the tuned learning rates, the target loss, and
//! per optimizer how fast it gets there.

use crate::curve::{Curve, Stop};
use crate::optimizers::Method;
use crate::tasks::Task;

/// One finished (or stopped) run.
#[derive(Debug, Clone)]
pub struct Run {
    pub method: Method,
    pub seed: u64,
    pub curve: Curve,
}

/// The mean final training loss of one grid point.
#[derive(Debug, Clone)]
pub struct GridPoint {
    pub family: String,
    pub lr: f64,
    pub mean_final: f64,
}

/// How one optimizer (at its tuned learning rate) did on a task.
#[derive(Debug, Clone)]
pub struct Row {
    pub method: Method,
    /// Median over seeds of the steps to reach the target; `None` if the
    /// median run never does.
    pub steps_to_target: Option<f64>,
    /// Median over seeds of the step seconds until the target.
    pub seconds_to_target: Option<f64>,
    /// Mean over seeds of the final training loss.
    pub final_loss: f64,
    /// Mean over seeds of the loss after the last step within AdamW's budget.
    pub loss_at_budget: f64,
    /// Mean over seeds of the milliseconds per step.
    pub ms_per_step: f64,
    /// The seeds whose runs ended early, and why.
    pub stops: Vec<(u64, Stop)>,
}

/// The results of one task.
pub struct Summary {
    pub name: &'static str,
    pub description: String,
    /// Median milliseconds of a plain forward and backward pass of one batch.
    pub forward_backward_ms: f64,
    pub seeds: usize,
    pub grid: Vec<GridPoint>,
    /// The tuned AdamW's mean final training loss.
    pub target: f64,
    /// The tuned AdamW's mean seconds of all its steps.
    pub budget: f64,
    /// SGD, Adam, AdamW (tuned), L-BFGS where it ran, then the DampedNewton variants.
    pub rows: Vec<Row>,
    pub runs: Vec<Run>,
}

impl Summary {
    /// The summary of `runs` of `task`: every grid point of SGD, Adam and
    /// AdamW, and the runs of the methods without a learning rate; the model
    /// has `parameters` scalars.
    pub fn new(
        task: &Task,
        parameters: usize,
        forward_backward_ms: f64,
        seeds: usize,
        runs: Vec<Run>,
    ) -> Self {
        let mut grid = Vec::new();
        let mut tuned = Vec::new();
        for (family, lrs) in [
            (Method::Sgd { lr: 0.0 }, task.grid.sgd),
            (Method::Adam { lr: 0.0 }, task.grid.adam),
            (Method::AdamW { lr: 0.0 }, task.grid.adam),
        ] {
            let points: Vec<GridPoint> = lrs
                .iter()
                .map(|&lr| GridPoint {
                    family: family.family().to_string(),
                    lr,
                    mean_final: mean(curves(&runs, &family.with_lr(lr)).map(Curve::final_loss)),
                })
                .collect();
            // the lowest mean final loss; a diverged point is +∞, NaN only if nothing ran
            let best = points
                .iter()
                .min_by(|a, b| a.mean_final.total_cmp(&b.mean_final))
                .map_or(f64::NAN, |p| p.lr);
            tuned.push(family.with_lr(best));
            grid.extend(points);
        }
        let adamw = &tuned[2];
        let target = mean(curves(&runs, adamw).map(Curve::final_loss));
        let budget = mean(curves(&runs, adamw).map(Curve::total_seconds));
        let mut others: Vec<Method> = Vec::new();
        for run in &runs {
            if run.method.lr().is_none() && !others.iter().any(|m| m.label() == run.method.label())
            {
                others.push(run.method.clone());
            }
        }
        let rows = tuned
            .into_iter()
            .chain(others)
            .map(|method| row(&runs, method, target, budget))
            .collect();
        Self {
            name: task.name,
            description: format!(
                "{} ({parameters} parameters); {}, {} training samples, batch {}, {} steps",
                task.summary,
                task.objective.name(),
                task.train.len(),
                task.batch_size,
                task.steps
            ),
            forward_backward_ms,
            seeds,
            grid,
            target,
            budget,
            rows,
            runs,
        }
    }

    /// The row of the optimizer `family` (e.g. `AdamW`).
    pub fn row(&self, family: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.method.family() == family)
    }

    /// The curves of `method`'s runs, by seed.
    pub fn curves<'a>(&'a self, method: &'a Method) -> impl Iterator<Item = &'a Curve> + 'a {
        curves(&self.runs, method)
    }
}

/// The row of `method`.
fn row(runs: &[Run], method: Method, target: f64, budget: f64) -> Row {
    let reached: Vec<Option<(usize, f64)>> =
        curves(runs, &method).map(|c| c.reaches(target)).collect();
    let steps_to_target = median(reached.iter().map(|r| r.map(|(s, _)| s as f64)).collect());
    let seconds_to_target = median(reached.iter().map(|r| r.map(|(_, t)| t)).collect());
    let stops = runs
        .iter()
        .filter(|r| r.method.label() == method.label())
        .filter_map(|r| r.curve.stop.clone().map(|s| (r.seed, s)))
        .collect();
    Row {
        steps_to_target,
        seconds_to_target,
        final_loss: mean(curves(runs, &method).map(Curve::final_loss)),
        loss_at_budget: mean(curves(runs, &method).map(|c| c.loss_within(budget))),
        ms_per_step: 1e3 * mean(curves(runs, &method).map(Curve::seconds_per_step)),
        stops,
        method,
    }
}

/// The curves of the runs of `method`.
fn curves<'a>(runs: &'a [Run], method: &Method) -> impl Iterator<Item = &'a Curve> + 'a {
    let label = method.label();
    runs.iter()
        .filter(move |r| r.method.label() == label)
        .map(|r| &r.curve)
}

/// The mean, `NaN` for no values.
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

/// The median, `None` standing for `+∞` (never); `None` if the median is.
fn median(values: Vec<Option<f64>>) -> Option<f64> {
    let mut values: Vec<f64> = values
        .into_iter()
        .map(|v| v.unwrap_or(f64::INFINITY))
        .collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return None;
    }
    let m = if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    };
    m.is_finite().then_some(m)
}
