//! Every refused input gets its typed error, naming the offending value.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::mlp::Mlp;
use vivit::{nn as vnn, Criterion, EighComputation, EigvalshComputation, Error, ParamGroup};

/// A 4-5-3 ReLU MLP (f32) with its inputs and classes.
struct Net {
    mlp: Mlp,
    x: Tensor,
    y: Tensor,
}

fn net() -> Result<Net> {
    let dev = Device::Cpu;
    Ok(Net {
        mlp: Mlp::new(4, 5, 3, DType::F32)?,
        x: Tensor::randn(0f32, 1., (6, 4), &dev)?,
        y: Tensor::new(&[0u32, 1, 2, 2, 1, 0], &dev)?,
    })
}

impl Net {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.mlp.relu(x)
    }

    fn record(&self) -> Result<vivit::Recorded> {
        Ok(vivit::record(|| {
            vivit::loss::cross_entropy(&self.logits(&self.x)?, &self.y)
        })?)
    }

    fn var(&self, name: &str) -> candle_core::Var {
        self.mlp.varmap.data().lock().expect("lock")[name].clone()
    }

    fn one_group(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new(vec![
            self.var("fc1.weight"),
            self.var("fc1.bias"),
            self.var("fc2.weight"),
        ])]
    }
}

fn eigvalsh_err(recorded: &vivit::Recorded, groups: &[ParamGroup]) -> Error {
    EigvalshComputation::new()
        .compute(recorded, groups)
        .expect_err("the computation must refuse")
}

#[test]
fn nested_record() -> Result<()> {
    let n = net()?;
    let err = vivit::record(|| {
        let inner = vivit::record(|| vivit::loss::cross_entropy(&n.logits(&n.x)?, &n.y))?;
        Ok::<_, Error>(inner.loss().clone())
    })
    .expect_err("nesting is refused");
    assert!(matches!(err, Error::NestedRecord), "{err}");
    // the scope is closed again: recording works afterwards
    n.record()?;
    Ok(())
}

#[test]
fn loss_not_tracked() -> Result<()> {
    let n = net()?;
    let untracked = vivit::record(|| candle_nn::loss::cross_entropy(&n.logits(&n.x)?, &n.y))?;
    untracked.backward()?; // still an ordinary loss
    let err = eigvalsh_err(&untracked, &n.one_group());
    assert!(matches!(err, Error::LossNotTracked { .. }), "{err}");
    assert!(err.to_string().contains("no tracked loss"), "{err}");

    let modified = vivit::record(|| {
        vivit::loss::cross_entropy(&n.logits(&n.x)?, &n.y)?
            .affine(2.0, 0.0)
            .map_err(Error::from)
    })?;
    let err = eigvalsh_err(&modified, &n.one_group());
    assert!(err.to_string().contains("not the loss itself"), "{err}");
    Ok(())
}

#[test]
fn invalid_targets() -> Result<()> {
    let n = net()?;
    let logits = n.logits(&n.x)?;
    let dev = Device::Cpu;
    let cases = [
        (Tensor::new(&[0u32, 1, 2], &dev)?, "shape [6]"),
        (Tensor::zeros(6, DType::F32, &dev)?, "integer class indices"),
        (
            Tensor::new(&[0u32, 1, 2, 3, 1, 0], &dev)?,
            "target 3 is not a class index in 0..3",
        ),
    ];
    for (targets, message) in cases {
        let err = vivit::loss::cross_entropy(&logits, &targets).expect_err("refused");
        assert!(matches!(err, Error::InvalidTargets { .. }), "{err}");
        assert!(err.to_string().contains(message), "{err} lacks {message}");
    }
    // with an ignore index: the first counted target outside 0..3 is named,
    // after ignored ones; an ignored index alone is no fault
    let with_ignore = |targets: &[i64]| {
        vivit::loss::cross_entropy_with_ignore(&logits, &Tensor::new(targets, &dev)?, -100)
    };
    let err = with_ignore(&[-100, 0, -5, 3, 1, 2]).expect_err("refused");
    let message = "target -5 is not a class index in 0..3 nor the ignore index -100";
    assert!(err.to_string().contains(message), "{err} lacks {message}");
    let err = with_ignore(&[0, 1, 2, -100, 3, -100]).expect_err("refused");
    assert!(err.to_string().contains("target 3 is not"), "{err}");
    assert!(with_ignore(&[-100, 0, 1, 2, -100, 2]).is_ok());
    let err = vivit::loss::cross_entropy(&logits.unsqueeze(0)?, &n.y).expect_err("3-d logits");
    assert!(err.to_string().contains("[1, 6, 3]"), "{err}");
    let err =
        vivit::loss::mse(&logits, &Tensor::zeros((6, 2), DType::F32, &dev)?).expect_err("shape");
    assert!(err.to_string().contains("[6, 2]"), "{err}");
    let err =
        vivit::loss::mse(&logits, &Tensor::zeros((6, 3), DType::F64, &dev)?).expect_err("dtype");
    assert!(err.to_string().contains("F64"), "{err}");
    Ok(())
}

#[test]
fn unsupported_dtype() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let fc = vnn::linear(
        4,
        3,
        VarBuilder::from_varmap(&varmap, DType::F16, &dev).pp("fc"),
    )?;
    let x = Tensor::randn(0f32, 1., (5, 4), &dev)?.to_dtype(DType::F16)?;
    let y = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
    let loss = vivit::record(|| vivit::loss::cross_entropy(&fc.forward(&x)?, &y))?;
    let err = eigvalsh_err(&loss, &[ParamGroup::new(varmap.all_vars())]);
    assert!(matches!(err, Error::UnsupportedDType(DType::F16)), "{err}");
    Ok(())
}

#[test]
fn grouped_transposed_convolution_is_not_tracked() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let cfg = candle_nn::ConvTranspose1dConfig {
        groups: 2,
        ..Default::default()
    };
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let conv = vnn::conv_transpose1d(4, 2, 3, cfg, vb.pp("conv"))?;
    let x = Tensor::randn(0f32, 1., (3, 4, 3), &dev)?;
    let y = Tensor::new(&[0u32, 1, 0], &dev)?;
    let loss =
        vivit::record(|| vivit::loss::cross_entropy(&conv.forward(&x)?.flatten_from(1)?, &y))?;
    let err = eigvalsh_err(&loss, &[ParamGroup::new(varmap.all_vars())]);
    assert!(matches!(err, Error::ParamNotRecorded { .. }), "{err}");
    Ok(())
}

#[test]
fn empty_batch() -> Result<()> {
    let n = net()?;
    let dev = Device::Cpu;
    let x = Tensor::zeros((0, 4), DType::F32, &dev)?;
    let y = Tensor::zeros(0, DType::U32, &dev)?;
    let err = vivit::record(|| vivit::loss::cross_entropy(&n.logits(&x)?, &y)).expect_err("empty");
    assert!(matches!(err, Error::EmptyBatch), "{err}");
    let out = Tensor::zeros((0, 3), DType::F32, &dev)?;
    let err = vivit::loss::mse(&out, &out).expect_err("empty");
    assert!(matches!(err, Error::EmptyBatch), "{err}");
    Ok(())
}

#[test]
fn non_finite_loss() -> Result<()> {
    let n = net()?;
    let y = Tensor::full(f32::INFINITY, (6, 3), &Device::Cpu)?;
    let loss = vivit::record(|| vivit::loss::mse(&n.logits(&n.x)?, &y))?;
    let err = eigvalsh_err(&loss, &n.one_group());
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "the loss",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("inf"), "{err}");
    Ok(())
}

/// NaN inputs die in the ReLU (`max(NaN, 0) = 0` in candle), so the loss is
/// finite, but the first layer's inputs poison its Gram block.
#[test]
fn non_finite_gram_matrix() -> Result<()> {
    let n = net()?;
    let x = (n.x.clone() * f64::NAN)?;
    let loss = vivit::record(|| vivit::loss::cross_entropy(&n.logits(&x)?, &n.y))?;
    assert!(loss.to_scalar::<f32>()?.is_finite());
    let refusals = [
        eigvalsh_err(&loss, &n.one_group()),
        EighComputation::new()
            .compute(&loss, &n.one_group())
            .expect_err("refused"),
    ];
    for err in refusals {
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "the Gram matrix",
                    ..
                }
            ),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn group_errors() -> Result<()> {
    let n = net()?;
    let loss = n.record()?;
    let w = n.var("fc1.weight");

    let two = [
        ParamGroup::new(vec![w.clone()]),
        ParamGroup::new(vec![n.var("fc2.bias"), w.clone()]),
    ];
    let err = eigvalsh_err(&loss, &two);
    assert!(
        matches!(err, Error::ParamInTwoGroups { param: 1, first: 0, second: 1, ref shape } if shape == &[5, 4]),
        "{err}"
    );

    let stranger = candle_core::Var::zeros((2, 2), DType::F32, &Device::Cpu)?;
    let err = eigvalsh_err(&loss, &[ParamGroup::new(vec![w.clone(), stranger])]);
    assert!(
        matches!(err, Error::ParamNotRecorded { group: 0, param: 1, ref shape } if shape == &[2, 2]),
        "{err}"
    );

    let err = eigvalsh_err(&loss, &[ParamGroup::new(vec![w]), ParamGroup::new(vec![])]);
    assert!(matches!(err, Error::EmptyGroup(1)), "{err}");
    Ok(())
}

#[test]
fn subsampling_errors() -> Result<()> {
    let n = net()?;
    let loss = n.record()?;
    let groups = n.one_group();
    let refuse = |indices: Vec<usize>| {
        EigvalshComputation::new()
            .subsampling(indices)
            .compute(&loss, &groups)
            .expect_err("refused")
    };
    let err = refuse(vec![0, 6]);
    assert!(
        matches!(
            err,
            Error::SubsamplingOutOfRange {
                name: "subsampling",
                index: 6,
                batch_size: 6
            }
        ),
        "{err}"
    );
    let err = refuse(vec![2, 1, 2]);
    assert!(
        matches!(err, Error::SubsamplingRepeated { index: 2, .. }),
        "{err}"
    );
    let err = refuse(vec![]);
    assert!(matches!(err, Error::SubsamplingEmpty { .. }), "{err}");
    Ok(())
}

#[test]
fn criterion_errors() -> Result<()> {
    let n = net()?;
    let loss = n.record()?;
    let params = n.one_group()[0].params().to_vec();
    let refuse = |criterion: Criterion| {
        EighComputation::new()
            .compute(
                &loss,
                &[ParamGroup::new(params.clone()).criterion(criterion)],
            )
            .expect_err("refused")
    };
    let err = refuse(Criterion::custom(|evals| vec![evals.len()]));
    assert!(
        matches!(err, Error::CriterionOutOfRange { index: 18, len: 18 }),
        "{err}"
    );
    let err = refuse(Criterion::custom(|_| vec![3, 3]));
    assert!(matches!(err, Error::CriterionRepeated(3)), "{err}");
    Ok(())
}

#[test]
fn no_result_for_an_unknown_group() -> Result<()> {
    let n = net()?;
    let loss = n.record()?;
    let groups = n.one_group();
    let mut eigvalsh = EigvalshComputation::new();
    let mut eigh = EighComputation::new();
    let other = ParamGroup::new(groups[0].params().to_vec());
    assert!(matches!(
        eigvalsh.result(&groups[0]),
        Err(Error::NoResult(_))
    ));
    vivit::backward(&loss, &groups, &mut [&mut eigvalsh, &mut eigh])?;
    assert!(eigvalsh.result(&groups[0]).is_ok());
    assert!(
        eigvalsh.result(&groups[0].clone()).is_ok(),
        "clones share the id"
    );
    assert!(matches!(eigvalsh.result(&other), Err(Error::NoResult(id)) if id == other.id()));
    assert!(matches!(eigh.result(&other), Err(Error::NoResult(_))));
    Ok(())
}

/// A train-mode batch norm inside `record` is refused (samples would not be
/// independent) and leaves the running statistics as they were; an
/// embedding id outside the table is named.
#[test]
fn train_mode_batch_norm_and_bad_ids() -> Result<()> {
    use candle_core::ModuleT;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let bn = vnn::batch_norm(2, 1e-5, vb.pp("bn"))?;
    let fc = vnn::linear(8, 3, vb.pp("fc"))?;
    let x = Tensor::randn(0f32, 1., (3, 2, 2, 2), &dev)?;
    let y = Tensor::new(&[0u32, 1, 2], &dev)?;
    let mean_before = bn.running_mean().to_vec1::<f32>()?;
    let err = vivit::record(|| {
        let h = bn.forward_t(&x, true)?.flatten_from(1)?;
        vivit::loss::cross_entropy(&fc.forward(&h)?, &y)
    })
    .expect_err("train mode refused");
    assert!(matches!(err, Error::UnsupportedLayer(_)), "{err}");
    assert!(err.to_string().contains("train mode"), "{err}");
    assert_eq!(bn.running_mean().to_vec1::<f32>()?, mean_before);
    // evaluation mode records, and outside record train mode is candle_nn's
    vivit::record(|| {
        let h = bn.forward_t(&x, false)?.flatten_from(1)?;
        vivit::loss::cross_entropy(&fc.forward(&h)?, &y)
    })?;
    bn.forward_t(&x, true)?;

    let emb = vnn::embedding(4, 3, vb.pp("emb"))?;
    let ids = Tensor::new(&[[0u32, 7]], &dev)?;
    let err = vivit::record(|| {
        let h = emb.forward(&ids)?.flatten_from(1)?;
        vivit::loss::mse(&h, &Tensor::zeros((1, 6), DType::F32, &dev)?)
    })
    .expect_err("id out of range");
    assert!(
        matches!(err, Error::InvalidIds { id: 7, vocab: 4 }),
        "{err}"
    );
    // a negative id (i64 ids) is named too, before any larger one
    let ids = Tensor::new(&[[5i64, -2]], &dev)?;
    let err = vivit::record(|| {
        let h = emb.forward(&ids)?.flatten_from(1)?;
        vivit::loss::mse(&h, &Tensor::zeros((1, 6), DType::F32, &dev)?)
    })
    .expect_err("negative id");
    assert!(
        matches!(err, Error::InvalidIds { id: -2, vocab: 4 }),
        "{err}"
    );
    Ok(())
}
