//! A run's training curve and what the report reads off it.

use serde_json::{json, Value};

/// Why a run ended before its step budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// Steps in the curve when the run ended: those before the step that
    /// failed, or up to the one after which the loss was not finite.
    pub step: usize,
    /// The error's message, that the training loss was no longer finite,
    /// or that the time limit was reached.
    pub reason: String,
    /// Whether the time limit ended the run (such runs are not cached).
    pub time_limit: bool,
}

/// Training loss and step time of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Loss on the whole training set before training and after each step.
    pub loss: Vec<f64>,
    /// Cumulative seconds of the steps (recording the batch's loss and the
    /// optimizer step, no evaluation), aligned with `loss` (so it starts at 0).
    pub seconds: Vec<f64>,
    /// Set where the run ended early.
    pub stop: Option<Stop>,
}

impl Curve {
    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.loss.len().saturating_sub(1)
    }

    /// The loss after the last step taken; `+∞` if it is not finite (a
    /// diverged run ranks last).
    pub fn final_loss(&self) -> f64 {
        finite_or_inf(self.loss.last().copied().unwrap_or(f64::INFINITY))
    }

    /// Seconds of all steps taken.
    pub fn total_seconds(&self) -> f64 {
        self.seconds.last().copied().unwrap_or(0.0)
    }

    /// Mean seconds per step taken (`NaN` for none).
    pub fn seconds_per_step(&self) -> f64 {
        self.total_seconds() / self.steps() as f64
    }

    /// The first step after which the loss is at most `target`, and the
    /// seconds spent until then.
    pub fn reaches(&self, target: f64) -> Option<(usize, f64)> {
        let step = self.loss.iter().position(|&l| l <= target)?;
        Some((step, self.seconds[step]))
    }

    /// The loss after the last step whose cumulative time is within
    /// `budget` seconds (after the last step taken, if the run ended earlier;
    /// `+∞` if not finite).
    pub fn loss_within(&self, budget: f64) -> f64 {
        let last = self.seconds.iter().rposition(|&s| s <= budget).unwrap_or(0);
        finite_or_inf(self.loss[last])
    }

    /// The curve as JSON: `{"loss": [..], "seconds": [..], "stop": null | {"step", "reason"}}`
    /// (a non-finite loss is `null`).
    pub fn to_json(&self) -> Value {
        let loss: Vec<Value> = self
            .loss
            .iter()
            .map(|&l| if l.is_finite() { json!(l) } else { Value::Null })
            .collect();
        json!({
            "loss": loss,
            "seconds": self.seconds,
            "stop": self.stop.as_ref().map(|s| json!({"step": s.step, "reason": s.reason})),
        })
    }

    /// The curve of [`Curve::to_json`]; `None` if `value` is not one.
    pub fn from_json(value: &Value) -> Option<Self> {
        let numbers = |key: &str| -> Option<Vec<f64>> {
            value[key]
                .as_array()?
                .iter()
                .map(|v| Some(v.as_f64().unwrap_or(f64::NAN)))
                .collect()
        };
        let (loss, seconds) = (numbers("loss")?, numbers("seconds")?);
        if loss.is_empty() || loss.len() != seconds.len() {
            return None;
        }
        let stop = match &value["stop"] {
            Value::Null => None,
            stop => Some(Stop {
                step: usize::try_from(stop["step"].as_u64()?).ok()?,
                reason: stop["reason"].as_str()?.to_string(),
                time_limit: false,
            }),
        };
        Some(Self {
            loss,
            seconds,
            stop,
        })
    }
}

/// `x`, or `+∞` if it is NaN or infinite.
fn finite_or_inf(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        f64::INFINITY
    }
}
