//! Property: on random token-level models (a tracked embedding of repeated
//! ids, an optional tracked LayerNorm, a tracked head at every position,
//! token-level cross-entropy), the computations equal the explicit GGN.

mod common;

use std::fmt;

use anyhow::Result;
use candle_core::{Device, Module, Tensor};
use candle_nn::VarMap;
use common::brute_force::{input, one_group, vb, Loss, Problem};
use common::ggn_checks::{check_eigen, check_newton};
use common::proptest_config::config;
use proptest::prelude::*;
use vivit::nn as vnn;

const CASES: u32 = 200;

#[derive(Clone)]
struct Case {
    ids: Vec<Vec<u32>>,
    vocab: usize,
    width: usize,
    classes: usize,
    norm: bool,
    seed: u64,
    subsampling: Option<Vec<usize>>,
    k: usize,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ids {:?} | Embedding({}→{}){} tanh | Linear({}→{}) | token cross-entropy, seed {}; \
             subsampling {:?}; k = {}",
            self.ids,
            self.vocab,
            self.width,
            if self.norm { " layernorm" } else { "" },
            self.width,
            self.classes,
            self.seed,
            self.subsampling,
            self.k
        )
    }
}

fn strategy() -> impl Strategy<Value = Case> {
    (1..=3usize, 1..=3usize, 2..=5usize)
        .prop_flat_map(|(n, t, vocab)| {
            (
                prop::collection::vec(prop::collection::vec(0..vocab as u32, t), n),
                Just(vocab),
                1..=3usize,
                2..=3usize,
                any::<bool>(),
                0..1000u64,
                prop::option::of(prop::collection::vec(0..n, 1..=n)),
                1..=4usize,
            )
        })
        .prop_map(|(ids, vocab, width, classes, norm, seed, sub, k)| {
            let subsampling = sub.map(|mut s| {
                s.sort_unstable();
                s.dedup();
                s
            });
            Case {
                ids,
                vocab,
                width,
                classes,
                norm: norm && width >= 2,
                seed,
                subsampling,
                k,
            }
        })
}

impl Case {
    /// The model with deterministic weights from the seed.
    fn problem(&self) -> Result<Problem> {
        let varmap = VarMap::new();
        let emb = vnn::embedding(self.vocab, self.width, vb(&varmap).pp("a_emb"))?;
        let norm = match self.norm {
            true => Some(vnn::layer_norm(self.width, 1e-5, vb(&varmap).pp("b_norm"))?),
            false => None,
        };
        let head = vnn::linear(self.width, self.classes, vb(&varmap).pp("c_head"))?;
        for (i, (_, var)) in vnn::vars_by_name(&varmap).into_iter().enumerate() {
            var.set(&(input(var.dims(), self.seed * 7 + i as u64)? * 1.3)?)?;
        }
        let ids = Tensor::new(self.ids.clone(), &Device::Cpu)?;
        let forward = move || {
            let mut h = emb.forward(&ids)?;
            if let Some(norm) = &norm {
                h = norm.forward(&h)?;
            }
            head.forward(&h.tanh()?)
        };
        Problem::new(varmap, forward, Loss::CrossEntropy, self.seed)
    }
}

fn fail(e: anyhow::Error) -> TestCaseError {
    TestCaseError::fail(format!("{e:#}"))
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn token_models_match_the_explicit_ggn(case in strategy()) {
        let problem = case.problem().map_err(fail)?;
        let groups = one_group(&problem);
        check_eigen(&problem, &groups, case.subsampling.clone(), case.k).map_err(fail)?;
        check_newton(&problem, &groups, None, case.subsampling.clone(), case.k).map_err(fail)?;
    }
}
