//! The six tasks of the suite (eight with the full-batch variants): model,
//! loss, training set, mini-batch size, step budget and learning-rate grid.

use anyhow::{bail, Result};

use crate::data::Dataset;
use crate::datasets;
use crate::network::Layer;
use crate::problem::Objective;

/// The seed of the noisy labels and of the teacher and its data.
const DATA_SEED: u64 = 1234;
/// `--quick` runs this fraction of each step budget.
const QUICK_DIVISOR: usize = 10;

/// Learning rates to tune on: per task, four a factor of about 3 apart per
/// optimizer (three for `mnist_mlp_784`, whose runs cost seconds), placed by
/// a first run of the suite so that the winners lie inside (the report marks
/// a winner on the edge of its grid).
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    /// For SGD with momentum.
    pub sgd: &'static [f64],
    /// For Adam and AdamW.
    pub adam: &'static [f64],
}

/// One training task.
pub struct Task {
    /// Name in tables, files and `--tasks`.
    pub name: &'static str,
    /// Letter of the task family in `--tasks` (the variants share it).
    pub letter: char,
    /// One line on what it is.
    pub summary: &'static str,
    pub layers: Vec<Layer>,
    pub objective: Objective,
    /// The training set; the training loss is the loss on all of it.
    pub train: Dataset,
    /// Samples per step; the whole training set for full-batch tasks.
    pub batch_size: usize,
    /// Optimizer steps of every run.
    pub steps: usize,
    pub grid: Grid,
}

impl Task {
    /// Whether every step sees the whole training set (L-BFGS runs on these).
    pub fn full_batch(&self) -> bool {
        self.batch_size == self.train.len()
    }

    /// Whether `selector` (a name or a letter) picks this task.
    fn selected_by(&self, selector: &str) -> bool {
        selector == self.name || selector.chars().eq(std::iter::once(self.letter))
    }
}

/// An MLP of linear layers of `widths` (input to output), `activation` between them.
fn mlp(widths: &[usize], activation: Layer) -> Vec<Layer> {
    let mut layers = Vec::new();
    for (i, w) in widths.windows(2).enumerate() {
        if i > 0 {
            layers.push(activation);
        }
        layers.push(Layer::Linear {
            inputs: w[0],
            outputs: w[1],
        });
    }
    layers
}

/// The small CNN on the 8×8 digits: conv 1→8 3×3, ReLU, pool 2, conv 8→16
/// 3×3, ReLU, pool 2, linear 64→10 (padding 1 keeps the sizes 8, 4, 2).
fn digits_cnn() -> Vec<Layer> {
    let conv = |inputs, outputs| Layer::Conv {
        inputs,
        outputs,
        kernel: 3,
        padding: 1,
    };
    vec![
        Layer::Image {
            channels: 1,
            height: 8,
            width: 8,
        },
        conv(1, 8),
        Layer::Relu,
        Layer::MaxPool(2),
        conv(8, 16),
        Layer::Relu,
        Layer::MaxPool(2),
        Layer::Flatten,
        Layer::Linear {
            inputs: 64,
            outputs: 10,
        },
    ]
}

/// The tasks `selectors` name (all for none), in the suite's order; with
/// `quick`, a tenth of each step budget.
pub fn tasks(selectors: &[String], quick: bool) -> Result<Vec<Task>> {
    let all = all_tasks()?;
    if let Some(unknown) = selectors
        .iter()
        .find(|s| !all.iter().any(|t| t.selected_by(s)))
    {
        let names: Vec<&str> = all.iter().map(|t| t.name).collect();
        bail!("no task {unknown:?}; the tasks are {names:?} (letters a–f)");
    }
    Ok(all
        .into_iter()
        .filter(|t| selectors.is_empty() || selectors.iter().any(|s| t.selected_by(s)))
        .map(|mut t| {
            if quick {
                t.steps = (t.steps / QUICK_DIVISOR).max(5);
            }
            t
        })
        .collect())
}

/// Every task with its full step budget.
fn all_tasks() -> Result<Vec<Task>> {
    let digits = datasets::digits()?;
    let n = digits.len();
    let autoencoder = mlp(&[64, 32, 16, 8, 16, 32, 64], Layer::Tanh);
    let teacher = mlp(&[16, 32, 1], Layer::Tanh);
    let student = mlp(&[16, 64, 1], Layer::Tanh);
    let teacher_data = datasets::teacher_student(1000, 16, &teacher, 0.1, DATA_SEED)?;
    let images = datasets::autoencoding(&digits)?;
    Ok(vec![
        Task {
            name: "digits_mlp",
            letter: 'a',
            summary: "MLP 64-128-64-10 (ReLU) on the 8×8 digits",
            layers: mlp(&[64, 128, 64, 10], Layer::Relu),
            objective: Objective::CrossEntropy,
            train: digits.clone(),
            batch_size: 64,
            steps: 300,
            grid: Grid {
                sgd: &[0.03, 0.1, 0.3, 1.0],
                adam: &[1e-3, 3e-3, 1e-2, 3e-2],
            },
        },
        Task {
            name: "digits_cnn",
            letter: 'b',
            summary: "CNN conv8-pool-conv16-pool-linear (ReLU) on the 8×8 digits",
            layers: digits_cnn(),
            objective: Objective::CrossEntropy,
            train: digits.clone(),
            batch_size: 64,
            steps: 120,
            grid: Grid {
                sgd: &[0.03, 0.1, 0.3, 1.0],
                adam: &[3e-3, 1e-2, 3e-2, 1e-1],
            },
        },
        Task {
            name: "digits_autoencoder",
            letter: 'c',
            summary: "autoencoder 64-32-16-8-16-32-64 (tanh) on the digits' pixels",
            layers: autoencoder.clone(),
            objective: Objective::Mse,
            train: images.clone(),
            batch_size: 64,
            steps: 200,
            grid: Grid {
                sgd: &[0.3, 1.0, 3.0, 10.0],
                adam: &[3e-3, 1e-2, 3e-2, 1e-1],
            },
        },
        Task {
            name: "digits_autoencoder_full",
            letter: 'c',
            summary: "the autoencoder, full batch (all 1,500 images every step)",
            layers: autoencoder,
            objective: Objective::Mse,
            train: images,
            batch_size: n,
            steps: 100,
            grid: Grid {
                sgd: &[0.3, 1.0, 3.0, 10.0],
                adam: &[3e-3, 1e-2, 3e-2, 1e-1],
            },
        },
        Task {
            name: "teacher_student",
            letter: 'd',
            summary: "student 16-64-1 (tanh) of a random teacher 16-32-1, label noise σ = 0.1",
            layers: student.clone(),
            objective: Objective::Mse,
            train: teacher_data.clone(),
            batch_size: 32,
            steps: 300,
            grid: Grid {
                sgd: &[0.003, 0.01, 0.03, 0.1],
                adam: &[3e-4, 1e-3, 3e-3, 1e-2],
            },
        },
        Task {
            name: "teacher_student_full",
            letter: 'd',
            summary: "the teacher–student task, full batch (all 1,000 samples every step)",
            layers: student,
            objective: Objective::Mse,
            train: teacher_data,
            batch_size: 1000,
            steps: 150,
            grid: Grid {
                sgd: &[0.03, 0.1, 0.3, 1.0],
                adam: &[3e-3, 1e-2, 3e-2, 1e-1],
            },
        },
        Task {
            name: "noisy_labels",
            letter: 'e',
            summary:
                "the digits MLP with 30 % of the training labels changed to another class at random",
            layers: mlp(&[64, 128, 64, 10], Layer::Relu),
            objective: Objective::CrossEntropy,
            train: datasets::noisy_labels(&digits, 0.3, DATA_SEED)?,
            batch_size: 32,
            steps: 300,
            grid: Grid {
                sgd: &[0.01, 0.03, 0.1, 0.3],
                adam: &[1e-3, 3e-3, 1e-2, 3e-2],
            },
        },
        Task {
            name: "mnist_mlp_784",
            letter: 'f',
            summary:
                "DeepOBS mnist_mlp 784-1000-500-100-10 (ReLU) on the digits upsampled to 28×28",
            layers: mlp(&[784, 1000, 500, 100, 10], Layer::Relu),
            objective: Objective::CrossEntropy,
            train: datasets::upsampled(&digits, 28)?,
            batch_size: 128,
            steps: 80,
            grid: Grid {
                sgd: &[0.03, 0.1, 0.3],
                adam: &[1e-3, 3e-3, 1e-2],
            },
        },
    ])
}
