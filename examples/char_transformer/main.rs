//! A character-level transformer language model on chapters 1–9 of
//! Moby-Dick, trained with AdamW and with vivit's `DampedNewton` on
//! Monte-Carlo curvature, for the same wall-clock budget from the same
//! initialization.
//!
//! ```sh
//! cargo run --release --example char_transformer
//! ```
//!
//! The model: token and position embeddings, two pre-norm blocks (tracked
//! q, k, v, o projections, LayerNorms and MLP, causal 4-head attention as
//! candle code between them), a final LayerNorm and a linear head, with
//! token-level cross-entropy; every parameter is tracked. Prints the loss of
//! both runs at equal wall-clock and a sample of generated text; writes the
//! loss-against-seconds curves and the top GGN eigenvalue of each block
//! during training to `target/plots/char_transformer_*.png`.

#[path = "../common/mod.rs"]
mod common;
mod model;
mod text;

use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use common::plot::{self, Chart, Series};
use model::{CharTransformer, Shape};
use rand::SeedableRng;
use text::{Batches, Corpus};
use vivit::{Criterion, DampedNewton, DampedNewtonConfig, Damping, EighComputation, ParamGroup};

/// Mini-batch: `N` windows of `T` characters.
const BATCH: usize = 16;
const CONTEXT: usize = 32;
/// Step time each optimizer gets (evaluation not counted).
const BUDGET: Duration = Duration::from_secs(40);
/// Evaluate every this much step time.
const EVAL_EVERY: Duration = Duration::from_secs(2);
const SEED: u64 = 7;

/// One run's measurements at each evaluation: step time so far, steps,
/// training loss, held-out loss and the top GGN eigenvalue of each block.
struct Point {
    seconds: f64,
    steps: usize,
    train: f64,
    held_out: f64,
    top_eigenvalues: Vec<f64>,
}

enum Method {
    AdamW(AdamW),
    DampedNewton(Box<DampedNewton>),
}

/// Builds a run's optimizer for its model.
type Build = Box<dyn Fn(&CharTransformer) -> Result<Method>>;

/// The text a run trains on and the fixed batches it is measured on.
struct Data {
    train_text: Corpus,
    train_eval: (Tensor, Tensor),
    held_out: (Tensor, Tensor),
    /// The batch the eigenvalues are computed on.
    probe: (Tensor, Tensor),
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let corpus = Corpus::load();
    let shape = Shape {
        vocab: corpus.vocab(),
        context: CONTEXT,
        width: 64,
        heads: 4,
        blocks: 2,
    };
    // train on the first 90 % of the text, hold out the rest
    let split = corpus.ids.len() * 9 / 10;
    let eval_starts = |from: usize, to: usize| -> Vec<usize> {
        (0..64)
            .map(|i| from + i * (to - from - CONTEXT - 1) / 64)
            .collect()
    };
    let data = Data {
        train_text: Corpus {
            alphabet: corpus.alphabet.clone(),
            ids: corpus.ids[..split].to_vec(),
        },
        train_eval: corpus.windows(&eval_starts(0, split), CONTEXT, &dev)?,
        held_out: corpus.windows(&eval_starts(split, corpus.ids.len()), CONTEXT, &dev)?,
        probe: corpus.windows(&eval_starts(0, split)[..BATCH], CONTEXT, &dev)?,
    };
    println!(
        "{} characters, {} symbols; {} windows of {} per step, {} s of steps per optimizer",
        corpus.ids.len(),
        corpus.vocab(),
        BATCH,
        CONTEXT,
        BUDGET.as_secs()
    );

    let initial = CharTransformer::new(shape, &dev)?;
    let runs: Vec<(&str, Build)> = vec![
        (
            "AdamW (lr 3e-3)",
            // the learning rate from 1e-3, 3e-3, 1e-2, 3e-2 (15 s runs): 3e-3
            // and 1e-2 within noise, 1e-3 and 3e-2 behind
            Box::new(|m: &CharTransformer| {
                let params = ParamsAdamW {
                    lr: 3e-3,
                    weight_decay: 0.01,
                    ..Default::default()
                };
                Ok(Method::AdamW(AdamW::new(m.varmap.all_vars(), params)?))
            }),
        ),
        (
            "DampedNewton (MC, δ 1)",
            Box::new(|m: &CharTransformer| {
                // from a sweep of 15 s runs: damping 0.03 (the default), 0.3, 1,
                // 3 with trust regions 0.1 (the default), 0.5, 1, 3, 10, and 8
                // Monte-Carlo samples (4× the step time, no better)
                let config = DampedNewtonConfig::default()
                    .mc_samples_ggn(1)
                    .damping(Damping::constant(1.0))
                    .trust_region(3.0);
                let optimizer = DampedNewton::from_varmap(&m.varmap, config);
                Ok(Method::DampedNewton(Box::new(optimizer)))
            }),
        ),
    ];
    let mut results = Vec::new();
    for (name, build) in &runs {
        let model = CharTransformer::new(shape, &dev)?;
        copy_weights(&initial, &model)?;
        let method = build(&model)?;
        let points = train(name, &model, method, &data)?;
        results.push((name.to_string(), model, points));
    }
    report(&results)?;
    plots(&results)?;

    let (name, best, _) = results
        .iter()
        .min_by(|a, b| final_loss(&a.2).total_cmp(&final_loss(&b.2)))
        .expect("two runs");
    let prompt = "Call me Ishmael. ";
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let sample = best.generate(&corpus.encode(prompt)?, 300, 0.8, &mut rng)?;
    println!("\nsample of {name}:\n{prompt}{}", corpus.decode(&sample));
    Ok(())
}

fn final_loss(points: &[Point]) -> f64 {
    points.last().map_or(f64::NAN, |p| p.train)
}

/// The same initial weights in `model` as in `from`.
fn copy_weights(from: &CharTransformer, model: &CharTransformer) -> Result<()> {
    let source = vivit::nn::vars_by_name(&from.varmap);
    for ((_, var), (_, src)) in vivit::nn::vars_by_name(&model.varmap).iter().zip(&source) {
        var.set(src.as_tensor())?;
    }
    Ok(())
}

/// Mean token-level cross-entropy of `model` on `(ids, targets)`.
fn loss(model: &CharTransformer, (ids, targets): &(Tensor, Tensor)) -> Result<f64> {
    let l = vivit::loss::cross_entropy(&model.forward(ids)?, targets)?;
    Ok(l.to_scalar::<f32>()? as f64)
}

/// The top GGN eigenvalue (Monte-Carlo, one sample) of each block's
/// parameters on the probe batch.
fn top_eigenvalues(model: &CharTransformer, probe: &(Tensor, Tensor)) -> Result<Vec<f64>> {
    let named = vivit::nn::vars_by_name(&model.varmap);
    let groups: Vec<ParamGroup> = (0..model.shape.blocks)
        .map(|b| {
            let prefix = CharTransformer::block_prefix(b);
            let vars = named.iter().filter(|(n, _)| n.starts_with(&prefix));
            ParamGroup::new(vars.map(|(_, v)| v.clone()).collect()).criterion(Criterion::top_k(1))
        })
        .collect();
    let recorded =
        vivit::record(|| vivit::loss::cross_entropy(&model.forward(&probe.0)?, &probe.1))?;
    let mut eigh = EighComputation::new().mc_samples(1).seed(SEED);
    eigh.compute(&recorded, &groups)?;
    groups
        .iter()
        .map(|g| Ok(eigh.result(g)?.evals.to_vec1::<f32>()?[0] as f64))
        .collect()
}

/// Trains `model` with `method` for [`BUDGET`] of step time, evaluating every
/// [`EVAL_EVERY`] of it (evaluation not counted).
fn train(
    name: &str,
    model: &CharTransformer,
    mut method: Method,
    data: &Data,
) -> Result<Vec<Point>> {
    let dev = Device::Cpu;
    let mut batches = Batches::new(&data.train_text, BATCH, CONTEXT, SEED);
    let bar = common::progress::bar(name, BUDGET.as_secs() as usize)?;
    let evaluate = |busy: Duration, steps: usize| -> Result<Point> {
        Ok(Point {
            seconds: busy.as_secs_f64(),
            steps,
            train: loss(model, &data.train_eval)?,
            held_out: loss(model, &data.held_out)?,
            top_eigenvalues: top_eigenvalues(model, &data.probe)?,
        })
    };
    let mut points = vec![evaluate(Duration::ZERO, 0)?];
    let (mut busy, mut steps, mut next_eval) = (Duration::ZERO, 0, EVAL_EVERY);
    while busy < BUDGET {
        let (x, y) = batches.next_batch(&dev)?;
        let start = Instant::now();
        let recorded = vivit::record(|| vivit::loss::cross_entropy(&model.forward(&x)?, &y))?;
        match &mut method {
            Method::AdamW(opt) => opt.backward_step(&recorded)?,
            Method::DampedNewton(opt) => {
                opt.step_recorded(&recorded)?;
            }
        }
        busy += start.elapsed();
        steps += 1;
        if busy >= next_eval {
            next_eval += EVAL_EVERY;
            let point = evaluate(busy, steps)?;
            bar.set_message(format!("train loss {:.3}", point.train));
            points.push(point);
        }
        bar.set_position(busy.as_secs().min(BUDGET.as_secs()));
    }
    bar.finish();
    Ok(points)
}

/// Both runs' losses at each whole multiple of the evaluation interval both reached.
fn report(results: &[(String, CharTransformer, Vec<Point>)]) -> Result<()> {
    println!(
        "\n{:<30} {:>7} {:>9} {:>11} {:>12}",
        "", "steps", "ms/step", "train loss", "held-out"
    );
    for (name, _, points) in results {
        let last = points.last().expect("evaluated");
        println!(
            "{name:<30} {:>7} {:>9.1} {:>11.4} {:>12.4}",
            last.steps,
            1e3 * last.seconds / last.steps.max(1) as f64,
            last.train,
            last.held_out
        );
    }
    println!("\ntraining loss at equal step time:");
    let rows = results.iter().map(|r| r.2.len()).min().unwrap_or(0);
    for i in (0..rows).step_by(4.max(rows / 5)) {
        let row: Vec<String> = results
            .iter()
            .map(|(name, _, p)| format!("{name}: {:.4} at {:.1} s", p[i].train, p[i].seconds))
            .collect();
        println!("  {}", row.join("   "));
    }
    Ok(())
}

fn plots(results: &[(String, CharTransformer, Vec<Point>)]) -> Result<()> {
    let curves: Vec<Series> = results
        .iter()
        .flat_map(|(name, _, points)| {
            [
                Series {
                    name: format!("{name}, training"),
                    points: points.iter().map(|p| (p.seconds, p.train)).collect(),
                    reference: false,
                },
                Series {
                    name: format!("{name}, held out"),
                    points: points.iter().map(|p| (p.seconds, p.held_out)).collect(),
                    reference: false,
                },
            ]
        })
        .collect();
    let chart = Chart {
        title: "Character transformer on Moby-Dick: loss against step time",
        x_label: "seconds of optimizer steps",
        y_label: "token-level cross-entropy",
        log_x: false,
        log_y: false,
        y_max: None,
    };
    let path = plot::output_path("char_transformer_loss")?;
    plot::line_chart(&path, &chart, &curves)?;
    println!("\nplot: {}", path.display());

    let blocks = results.first().map_or(0, |r| r.1.shape.blocks);
    let eigen: Vec<Series> = results
        .iter()
        .flat_map(|(name, _, points)| {
            (0..blocks).map(move |b| Series {
                name: format!("{name}, block {b}"),
                points: points
                    .iter()
                    .map(|p| (p.seconds, p.top_eigenvalues[b]))
                    .collect(),
                reference: false,
            })
        })
        .collect();
    let chart = Chart {
        title: "Top GGN eigenvalue of each block (Monte-Carlo, one sample)",
        x_label: "seconds of optimizer steps",
        y_label: "eigenvalue (log scale)",
        log_x: false,
        log_y: true,
        y_max: None,
    };
    let path = plot::output_path("char_transformer_eigenvalues")?;
    plot::line_chart(&path, &chart, &eigen)?;
    println!("plot: {}", path.display());
    Ok(())
}
