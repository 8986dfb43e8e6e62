//! The two-layer MLP many tests train or compute on: `fc1` (`inputs → hidden`),
//! an activation, `fc2` (`hidden → outputs`), its variables in a `VarMap`.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use vivit::nn as vnn;

/// `fc2(act(fc1(x)))` on the CPU, variables named `fc1.*` and `fc2.*`.
pub struct Mlp {
    pub varmap: VarMap,
    pub fc1: vnn::Linear,
    pub fc2: vnn::Linear,
}

impl Mlp {
    /// candle's initialisation, `fc1` created (and drawn) before `fc2`.
    pub fn new(inputs: usize, hidden: usize, outputs: usize, dtype: DType) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let fc1 = vnn::linear(inputs, hidden, vb.pp("fc1"))?;
        let fc2 = vnn::linear(hidden, outputs, vb.pp("fc2"))?;
        Ok(Self { varmap, fc1, fc2 })
    }

    /// `fc2(tanh(fc1(x)))`.
    pub fn tanh(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.tanh()?)
    }

    /// `fc2(relu(fc1(x)))`.
    pub fn relu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }

    /// The variables, sorted by name (`fc1.bias`, `fc1.weight`, `fc2.bias`, `fc2.weight`).
    pub fn vars(&self) -> Vec<Var> {
        vnn::vars_by_name(&self.varmap)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }
}
