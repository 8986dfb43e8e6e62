//! Every recorded tape is freed when its `Recorded` drops, whether or not a
//! computation ran on it.
//!
//! Observed from the user's side: the forward pass sends a hidden layer
//! through [`Sentinel`], an identity op holding a clone of an `Arc`. Candle
//! keeps the op in every graph node that used it, so the `Arc`'s strong count
//! tells whether the graph (shared by the recorded loss and its tape) is alive.

mod common;

use std::sync::Arc;

use anyhow::Result;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::optim::Optimizer;
use common::mlp::Mlp;
use vivit::{
    Criterion, DampedNewton, DampedNewtonConfig, DirectionalDampedNewtonComputation,
    EighComputation, EigvalshComputation, ParamGroup,
};

/// The identity, holding a token for as long as a graph holds the op.
struct Sentinel {
    _token: Arc<()>,
}

impl CustomOp1 for Sentinel {
    fn name(&self) -> &'static str {
        "sentinel"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("sentinel: contiguous input only".into()))?;
        let copy = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
            _ => candle_core::bail!("sentinel: f32 only"),
        };
        Ok((copy, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// A 4-6-3 tanh MLP (f32) whose hidden layer goes through the sentinel.
struct Net {
    mlp: Mlp,
    x: Tensor,
    y: Tensor,
    token: Arc<()>,
}

impl Net {
    fn new() -> Result<Self> {
        let dev = Device::Cpu;
        Ok(Self {
            mlp: Mlp::new(4, 6, 3, DType::F32)?,
            x: Tensor::randn(0f32, 1., (8, 4), &dev)?,
            y: Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &dev)?,
            token: Arc::new(()),
        })
    }

    fn record(&self) -> Result<vivit::Recorded> {
        Ok(vivit::record(|| {
            let h = self.mlp.fc1.forward(&self.x)?.apply_op1(Sentinel {
                _token: self.token.clone(),
            })?;
            vivit::loss::cross_entropy(&self.mlp.fc2.forward(&h.tanh()?)?, &self.y)
        })?)
    }

    /// Graphs alive that went through the sentinel.
    fn graphs(&self) -> usize {
        Arc::strong_count(&self.token) - 1
    }

    fn groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new(self.mlp.varmap.all_vars()).criterion(Criterion::top_k_above(3, 1e-6))]
    }
}

#[test]
fn a_recorded_loss_never_computed_on_frees_its_tape() -> Result<()> {
    let net = Net::new()?;
    let loss = net.record()?;
    assert_eq!(
        net.graphs(),
        1,
        "the recorded loss and its tape share one graph"
    );
    drop(loss);
    assert_eq!(net.graphs(), 0);
    Ok(())
}

#[test]
fn results_outlive_the_tape() -> Result<()> {
    let net = Net::new()?;
    let groups = net.groups();
    let mut eigvalsh = EigvalshComputation::new();
    let mut eigh = EighComputation::new();
    let mut newton = DirectionalDampedNewtonComputation::new();
    let loss = net.record()?;
    vivit::backward(&loss, &groups, &mut [&mut eigvalsh, &mut eigh, &mut newton])?;
    drop(loss);
    assert_eq!(net.graphs(), 0);
    assert!(eigh.result(&groups[0]).is_ok(), "the results stay");
    Ok(())
}

#[test]
fn optimizer_steps_keep_no_tape() -> Result<()> {
    let net = Net::new()?;
    let mut opt = DampedNewton::new(net.mlp.varmap.all_vars(), DampedNewtonConfig::default())?;
    for _ in 0..3 {
        let loss = net.record()?;
        opt.backward_step(&loss)?;
        opt.step_recorded(&loss)?;
    }
    assert_eq!(net.graphs(), 0);
    Ok(())
}

#[test]
fn a_refused_computation_keeps_no_tape() -> Result<()> {
    let net = Net::new()?;
    let loss = net.record()?;
    EigvalshComputation::new()
        .subsampling([0, 99])
        .compute(&loss, &net.groups())
        .expect_err("out of range");
    drop(loss);
    assert_eq!(net.graphs(), 0);
    Ok(())
}
