//! Misuse never panics: random misuses (`fault.rs`) driven through every
//! public entry point each get the typed error they deserve, and leave every
//! parameter bit-identical.

#[path = "../common/mod.rs"]
mod common;
mod fault;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::Optimizer;
use common::brute_force::input;
use common::mlp::Mlp;
use common::proptest_config::config;
use fault::{misuse, Entry, Fault, Samples, BATCH};
use proptest::prelude::*;
use vivit::optim::{Bootstrap, LevenbergMarquardt};
use vivit::{
    Criterion, DampedNewton, DampedNewtonConfig, Damping, DirectionalDampedNewtonComputation,
    DirectionalDerivativesComputation, EighComputation, EigvalshComputation, Error, ParamGroup,
};

/// Misuses tried; each is cheap (a 4-5-3 MLP on 6 samples).
const CASES: u32 = 2000;
/// Directions kept where the misuse is elsewhere.
const K: usize = 3;

/// A 4-5-3 tanh MLP, its inputs `[BATCH, 4]`, classes and regression targets.
struct Fixture {
    mlp: Mlp,
    dtype: DType,
}

impl Fixture {
    fn new(dtype: DType) -> Result<Self> {
        let fixture = Self {
            mlp: Mlp::new(4, 5, 3, dtype)?,
            dtype,
        };
        for (k, var) in fixture.vars().iter().enumerate() {
            var.set(&input(var.dims(), k as u64)?.to_dtype(dtype)?)?;
        }
        Ok(fixture)
    }

    /// The variables, sorted by name.
    fn vars(&self) -> Vec<Var> {
        self.mlp.vars()
    }

    /// The bits of every parameter.
    fn bits(&self) -> Result<Vec<Vec<u32>>> {
        self.vars()
            .iter()
            .map(|v| {
                let values = v.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                Ok(values.into_iter().map(f32::to_bits).collect())
            })
            .collect()
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.mlp.tanh(x)
    }

    fn tensor(&self, values: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(self.dtype)?)
    }
}

/// `t` with its flat element `index` (mod its size) set to `value`.
fn with_element(t: &Tensor, index: usize, value: f64) -> Result<Tensor> {
    let mut values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let len = values.len();
    values[index % len] = value;
    Ok(Tensor::from_vec(values, t.shape(), &Device::Cpu)?.to_dtype(t.dtype())?)
}

/// Records the fixture's loss as the misuse has it.
fn record(fault: &Fault, f: &Fixture) -> Result<vivit::Result<vivit::Recorded>> {
    let dev = Device::Cpu;
    let mut x = f.tensor(
        input(&[BATCH, 4], 9)?.flatten_all()?.to_vec1()?,
        &[BATCH, 4],
    )?;
    let mut classes: Vec<u32> = (0..BATCH as u32).map(|n| n % 3).collect();
    let mut targets = Tensor::new(classes.as_slice(), &dev)?;
    match fault {
        Fault::Input(i, v) => x = with_element(&x, *i, *v)?,
        Fault::InputWidth(w) => x = f.tensor(vec![0.5; BATCH * w], &[BATCH, *w])?,
        Fault::EmptyBatch => {
            x = f.tensor(vec![], &[0, 4])?;
            targets = Tensor::zeros(0, DType::U32, &dev)?;
        }
        Fault::ClassOutOfRange(c) => {
            classes[BATCH - 1] = *c;
            targets = Tensor::new(classes.as_slice(), &dev)?;
        }
        Fault::TargetLength(n) => targets = Tensor::zeros(*n, DType::U32, &dev)?,
        Fault::FloatClasses => targets = targets.to_dtype(DType::F32)?,
        _ => {}
    }
    Ok(match fault {
        Fault::PositionTargetShape => {
            let logits = |x: &Tensor| f.logits(x)?.reshape((BATCH / 2, 2, 3));
            let targets = Tensor::zeros((BATCH / 2, 3), DType::U32, &dev)?;
            vivit::record(|| vivit::loss::cross_entropy(&logits(&x)?, &targets))
        }
        Fault::BinaryTarget(i, v) => {
            let y = with_element(&f.tensor(vec![0.5; BATCH * 3], &[BATCH, 3])?, *i, *v)?;
            vivit::record(|| vivit::loss::binary_cross_entropy_with_logit(&f.logits(&x)?, &y))
        }
        Fault::AllIgnored | Fault::IgnoredSamples => {
            // sample 0 ignored (all samples with AllIgnored)
            let mut classes: Vec<i64> = classes.iter().map(|&c| i64::from(c)).collect();
            let ignored = if matches!(fault, Fault::AllIgnored) {
                BATCH
            } else {
                1
            };
            classes[..ignored].fill(-100);
            let targets = Tensor::new(classes.as_slice(), &dev)?;
            vivit::record(|| vivit::loss::cross_entropy_with_ignore(&f.logits(&x)?, &targets, -100))
        }
        Fault::Target(i, v) => {
            let y = with_element(&f.tensor(vec![0.1; BATCH * 3], &[BATCH, 3])?, *i, *v)?;
            vivit::record(|| vivit::loss::mse(&f.logits(&x)?, &y))
        }
        Fault::UntrackedLoss => {
            vivit::record(|| candle_nn::loss::cross_entropy(&f.logits(&x)?, &targets))
        }
        Fault::ReturnsLogits => vivit::record(|| f.logits(&x)),
        Fault::ReturnsDerived => vivit::record(|| {
            Ok::<_, Error>((vivit::loss::cross_entropy(&f.logits(&x)?, &targets)? * 2.0)?)
        }),
        Fault::Nested => vivit::record(|| {
            let inner = vivit::record(|| vivit::loss::cross_entropy(&f.logits(&x)?, &targets))?;
            Ok::<_, Error>(inner.loss().clone())
        }),
        _ => vivit::record(|| vivit::loss::cross_entropy(&f.logits(&x)?, &targets)),
    })
}

fn criterion(fault: &Fault) -> Criterion {
    match *fault {
        Fault::CriterionIndex(i) => Criterion::custom(move |evals| vec![evals.len() + i]),
        Fault::CriterionRepeats(i) => {
            Criterion::custom(move |evals| vec![i % evals.len(), i % evals.len()])
        }
        Fault::CriterionKeepsZero => Criterion::custom(|_| vec![0]),
        _ => Criterion::top_k_above(K, 1e-6),
    }
}

fn damping(fault: &Fault) -> Damping {
    match *fault {
        Fault::DampingLength(n) => {
            Damping::custom(move |input| vec![1.0; if n == 0 { 0 } else { input.evals.len() + n }])
                .with_complement(1.0)
        }
        Fault::DampingValue(d) => Damping::custom(move |input| {
            let mut deltas = vec![1.0; input.evals.len()];
            if let Some(last) = deltas.last_mut() {
                *last = d;
            }
            deltas
        })
        .with_complement(1.0),
        Fault::ComplementDamping(d) => Damping::constant(1.0).with_complement(d),
        Fault::NoComplementDamping => Damping::custom(|input| vec![1.0; input.evals.len()]),
        Fault::LevenbergMarquardtBounds(min, max) => {
            Damping::levenberg_marquardt(LevenbergMarquardt {
                min,
                max,
                ..LevenbergMarquardt::default()
            })
        }
        Fault::LevenbergMarquardtWithoutModel => {
            Damping::levenberg_marquardt(LevenbergMarquardt::default())
        }
        Fault::BootstrapEmptyGrid => Damping::bootstrap(Bootstrap {
            grid: vec![],
            seed: Some(0),
            ..Bootstrap::default()
        })
        .with_complement(1.0),
        _ => Damping::constant(1.0),
    }
}

fn groups(fault: &Fault, f: &Fixture) -> Result<Vec<ParamGroup>> {
    let group = |vars: Vec<Var>| {
        ParamGroup::new(vars)
            .criterion(criterion(fault))
            .damping(damping(fault))
    };
    let vars = f.vars();
    Ok(match fault {
        Fault::EmptyGroup => vec![group(vars), group(vec![])],
        Fault::ParamInTwoGroups => vec![group(vars.clone()), group(vec![vars[2].clone()])],
        Fault::StrangerParam(shape) => {
            let stranger = Var::zeros(shape.as_slice(), f.dtype, &Device::Cpu)?;
            vec![group(vars.into_iter().chain([stranger]).collect())]
        }
        _ => vec![group(vars)],
    })
}

/// The subsampling options of the misuse, applied with `set(samples, indices)`.
fn subsampling(fault: &Fault, samples: Samples) -> Option<Vec<usize>> {
    match fault {
        Fault::Subsampling(s, indices) if *s == samples => Some(indices.clone()),
        Fault::IgnoredSamples if samples == Samples::Curvature => Some(vec![0]),
        _ => None,
    }
}

/// The model of `step_with_model`: the loss on the same batch, or the misuse's garbage.
struct Model<'a>(&'a dyn Fn() -> candle_core::Result<Tensor>);

impl candle_optimisers::Model for Model<'_> {
    fn loss(&self) -> candle_core::Result<Tensor> {
        (self.0)()
    }
}

fn optimizer_entry(
    fault: &Fault,
    entry: Entry,
    f: &Fixture,
    recorded: &vivit::Recorded,
    groups: Vec<ParamGroup>,
) -> Result<vivit::Result<()>> {
    // the directional step: the criterion and damping faults reach it
    let mut config = DampedNewtonConfig::directional();
    if let Some(s) = subsampling(fault, Samples::Curvature) {
        config = config.subsampling_ggn(s);
    }
    if let Some(s) = subsampling(fault, Samples::Gradient) {
        config = config.subsampling_grad(s);
    }
    if let Fault::LearningRate(lr) = *fault {
        config = config.lr(lr);
    }
    let mut opt = DampedNewton::with_groups(groups, config);
    let untyped = |r: candle_core::Result<()>| r.map_err(Error::from);
    Ok(match entry {
        Entry::StepRecorded => opt.step_recorded(recorded).map(drop),
        Entry::Step => {
            let grads = match fault {
                Fault::ForeignGradients => {
                    let x = f.tensor(vec![0.5; BATCH * 4], &[BATCH, 4])?;
                    let y = Tensor::zeros(BATCH, DType::U32, &Device::Cpu)?;
                    candle_nn::loss::cross_entropy(&f.logits(&x)?, &y)?.backward()?
                }
                _ => recorded.backward()?,
            };
            untyped(opt.step(&grads))
        }
        Entry::BackwardStep => untyped(opt.backward_step(recorded)),
        Entry::StepWithModel => {
            let x = input(&[BATCH, 4], 9)?.to_dtype(f.dtype)?;
            let loss = || -> candle_core::Result<Tensor> {
                match fault {
                    Fault::ModelFails => Err(candle_core::Error::Msg("the model failed".into())),
                    Fault::ModelNotScalar => f.logits(&x),
                    _ => Ok(recorded.loss().clone()),
                }
            };
            opt.step_with_model(recorded, &Model(&loss)).map(drop)
        }
        _ => unreachable!("{entry:?} is not an optimizer entry"),
    })
}

/// Runs the misuse at `entry`: its result and whether every parameter kept its bits.
fn attempt(fault: &Fault, entry: Entry) -> Result<(vivit::Result<()>, bool)> {
    let dtype = match fault {
        Fault::HalfPrecision => DType::F16,
        _ => DType::F32,
    };
    let f = Fixture::new(dtype)?;
    if let Fault::Param(p, i, v) = *fault {
        let var = &f.vars()[p % 4];
        var.set(&with_element(var.as_tensor(), i, v)?)?;
    }
    let before = f.bits()?;
    let result = match record(fault, &f)? {
        Err(e) => Err(e),
        Ok(_) if entry == Entry::Record => Ok(()),
        Ok(recorded) => run(fault, entry, &f, &recorded)?,
    };
    Ok((result, f.bits()? == before))
}

fn run(
    fault: &Fault,
    entry: Entry,
    f: &Fixture,
    recorded: &vivit::Recorded,
) -> Result<vivit::Result<()>> {
    let groups = groups(fault, f)?;
    if entry.optimizer() {
        return optimizer_entry(fault, entry, f, recorded, groups);
    }
    let curvature = subsampling(fault, Samples::Curvature);
    let gradient = subsampling(fault, Samples::Gradient);
    let mut eigvalsh = EigvalshComputation::new();
    let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
    let mut dd = DirectionalDerivativesComputation::new().warn_small_eigvals(0.0);
    let mut newton = DirectionalDampedNewtonComputation::new()
        .warn_small_eigvals(0.0)
        .complement(true);
    if let Some(s) = curvature {
        eigvalsh = eigvalsh.subsampling(s.clone());
        eigh = eigh.subsampling(s.clone());
        dd = dd.subsampling_ggn(s.clone());
        newton = newton.subsampling_ggn(s);
    }
    if let Some(s) = gradient {
        dd = dd.subsampling_grad(s.clone());
        newton = newton.subsampling_grad(s);
    }
    Ok(match entry {
        Entry::Eigvalsh => eigvalsh.compute(recorded, &groups),
        Entry::Eigh => eigh.compute(recorded, &groups),
        Entry::DirectionalDerivatives => dd.compute(recorded, &groups),
        Entry::DampedNewtonStep => newton.compute(recorded, &groups),
        Entry::Backward => vivit::backward(
            recorded,
            &groups,
            &mut [&mut eigvalsh, &mut eigh, &mut dd, &mut newton],
        ),
        _ => unreachable!("{entry:?} is handled elsewhere"),
    }
    .map(drop))
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn misuse_gets_its_typed_error_and_changes_nothing((fault, entry) in misuse()) {
        let (result, unchanged) = attempt(&fault, entry).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        let err = match result {
            Ok(()) => return Err(TestCaseError::fail("the misuse was accepted")),
            Err(err) => err,
        };
        let (typed, part) = fault.expected(entry, &err);
        prop_assert!(typed || entry.untyped(), "wrong error: {err:?}");
        prop_assert!(err.to_string().contains(part), "message lacks {part:?}: {err}");
        prop_assert!(unchanged, "a parameter changed ({err})");
    }
}
