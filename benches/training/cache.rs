//! Finished runs cached as JSON in `target/training/runs/`, one file per
//! (task, optimizer, learning rate, seed, step budget, batch size).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::curve::Curve;
use crate::optimizers::Method;
use crate::tasks::Task;

/// Bumped when a change to a task (its data, model or loss) or to how runs
/// are measured makes the cached runs stale.
const VERSION: u64 = 2;

/// `target/training` of this crate, the suite's output folder.
pub fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("training")
}

/// The run cache.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in `target/training/runs/`, created if missing.
    pub fn open() -> Result<Self> {
        let dir = output_dir().join("runs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// The cached curve of a run, if there is one of this suite version and
    /// of the method's current settings.
    pub fn get(&self, task: &Task, method: &Method, seed: u64) -> Option<Curve> {
        let text = fs::read_to_string(self.path(task, method, seed)).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        if value["version"].as_u64() != Some(VERSION)
            || value["settings"].as_str().unwrap_or_default() != method.settings()
        {
            return None;
        }
        Curve::from_json(&value["curve"])
    }

    /// Stores the curve of a run.
    pub fn put(&self, task: &Task, method: &Method, seed: u64, curve: &Curve) -> Result<()> {
        let path = self.path(task, method, seed);
        let value = json!({
            "version": VERSION,
            "task": task.name,
            "optimizer": method.family(),
            "lr": method.lr(),
            "seed": seed,
            "steps": task.steps,
            "batch_size": task.batch_size,
            "settings": method.settings(),
            "curve": curve.to_json(),
        });
        fs::write(&path, value.to_string()).with_context(|| format!("writing {}", path.display()))
    }

    /// `<task>__<optimizer>[__lr<lr>]__seed<seed>__<steps>x<batch>.json`,
    /// the optimizer's name reduced to lower-case letters, digits and `_`.
    fn path(&self, task: &Task, method: &Method, seed: u64) -> PathBuf {
        let optimizer: String = method
            .family()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let lr = method
            .lr()
            .map(|lr| format!("__lr{lr:e}"))
            .unwrap_or_default();
        let name = format!(
            "{}__{optimizer}{lr}__seed{seed}__{}x{}.json",
            task.name, task.steps, task.batch_size
        );
        self.dir.join(name)
    }
}
