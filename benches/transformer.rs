//! The GGN computations on the character transformer of
//! `examples/char_transformer` at a bench size, each against an SGD step of
//! the same model.
//!
//! The model: vocab 65, context T = 32, width d = 64, 4 heads, 2 pre-norm
//! blocks (about 80,000 parameters, every one tracked), f32 on the CPU, on a
//! fixed batch of N = 16 random windows with token-level cross-entropy; one
//! parameter group of all parameters. One measured iteration is what a user
//! pays: `vivit::record` (the forward) plus the computation, or the forward,
//! backward and update of the SGD step. Ids: `transformer/sgd_step`,
//! `transformer/eigh_top10_mc1` (`EighComputation`, top 10, Monte-Carlo with
//! one sample, fixed seed), `transformer/newton_mc1`
//! (`DirectionalDampedNewtonComputation`, the same curvature, damping 1) and
//! `transformer/damped_newton_step` (`DampedNewton::backward_step` with the
//! example's configuration).
//!
//! ```text
//! cargo bench --bench transformer
//! ```

#[allow(dead_code)]
#[path = "../examples/char_transformer/model.rs"]
mod model;

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, SGD};
use criterion::Criterion;
use model::{CharTransformer, Shape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vivit::{
    DampedNewton, DampedNewtonConfig, Damping, DirectionalDampedNewtonComputation, EighComputation,
    ParamGroup,
};

const SHAPE: Shape = Shape {
    vocab: 65,
    context: 32,
    width: 64,
    heads: 4,
    blocks: 2,
};
const BATCH: usize = 16;

fn batch(dev: &Device) -> vivit::Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(3);
    let mut ids = || -> Vec<u32> {
        (0..BATCH * SHAPE.context)
            .map(|_| rng.random_range(0..SHAPE.vocab as u32))
            .collect()
    };
    let shape = (BATCH, SHAPE.context);
    Ok((
        Tensor::from_vec(ids(), shape, dev)?,
        Tensor::from_vec(ids(), shape, dev)?,
    ))
}

fn benches(c: &mut Criterion) -> vivit::Result<()> {
    let dev = Device::Cpu;
    let model = CharTransformer::new(SHAPE, &dev)?;
    let (x, y) = batch(&dev)?;
    let record = || vivit::record(|| vivit::loss::cross_entropy(&model.forward(&x)?, &y));
    let groups = [ParamGroup::new(model.varmap.all_vars())
        .criterion(vivit::Criterion::top_k(10))
        .damping(Damping::constant(1.0))];
    let mut group = c.benchmark_group("transformer");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut sgd = SGD::new(model.varmap.all_vars(), 1e-4)?;
    group.bench_function("sgd_step", |b| {
        b.iter(|| {
            sgd.backward_step(&record().expect("forward"))
                .expect("step")
        })
    });
    group.bench_function("eigh_top10_mc1", |b| {
        b.iter(|| {
            let mut eigh = EighComputation::new().mc_samples(1).seed(0);
            eigh.compute(&record().expect("forward"), &groups)
                .expect("eigh");
            black_box(eigh)
        })
    });
    group.bench_function("newton_mc1", |b| {
        b.iter(|| {
            let mut newton = DirectionalDampedNewtonComputation::new()
                .mc_samples_ggn(1)
                .seed(0);
            newton
                .compute(&record().expect("forward"), &groups)
                .expect("newton");
            black_box(newton)
        })
    });
    let config = DampedNewtonConfig::default()
        .mc_samples_ggn(1)
        .damping(Damping::constant(1.0))
        .trust_region(3.0);
    let mut dn = DampedNewton::from_varmap(&model.varmap, config);
    group.bench_function("damped_newton_step", |b| {
        b.iter(|| dn.backward_step(&record().expect("forward")).expect("step"))
    });
    group.finish();
    Ok(())
}

fn main() {
    let mut c = Criterion::default().without_plots().configure_from_args();
    if let Err(e) = benches(&mut c) {
        eprintln!("transformer bench: {e}");
        std::process::exit(1);
    }
    c.final_summary();
}
