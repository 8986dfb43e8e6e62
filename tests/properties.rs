//! Property: on random small f64 nets, batch sizes, losses, subsampling sets
//! and group layouts, every computation equals the explicit GGN's answer
//! (tolerances: `common::brute_force`). A failure shrinks to a small net and
//! prints it compactly (`common::arch`).

mod common;

use std::fmt;

use anyhow::Result;
use common::arch::Arch;
use common::brute_force::Problem;
use common::ggn_checks::{check_eigen, check_newton};
use common::proptest_config::config;
use proptest::prelude::*;

/// Cases per property: a case takes about 5–150 ms (the explicit GGN is
/// `O(N·C²·D²)`); both properties together run in about 10 s on two cores.
const CASES: u32 = 1000;

/// How the parameters (sorted by name) split into groups.
#[derive(Debug, Clone)]
enum Layout {
    One,
    PerParameter,
    PerLayer,
    /// Parameter `i` goes to group `labels[i mod len]`.
    Labels(Vec<u8>),
}

impl Layout {
    fn strategy() -> impl Strategy<Value = Layout> {
        prop_oneof![
            Just(Layout::One),
            Just(Layout::PerParameter),
            Just(Layout::PerLayer),
            prop::collection::vec(0..3u8, 1..=4).prop_map(Layout::Labels),
        ]
    }

    /// Groups as indices into [`Problem::params`], none empty.
    fn groups(&self, problem: &Problem) -> Vec<Vec<usize>> {
        let names: Vec<String> = problem.params().into_iter().map(|(n, _)| n).collect();
        let key = |i: usize| -> String {
            match self {
                Layout::One => String::new(),
                Layout::PerParameter => names[i].clone(),
                Layout::PerLayer => names[i].split('.').next().unwrap_or("").to_string(),
                Layout::Labels(labels) => labels[i % labels.len()].to_string(),
            }
        };
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for i in 0..names.len() {
            let k = key(i);
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, members)) => members.push(i),
                None => groups.push((k, vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }
}

/// Raw subsampling indices, reduced modulo the batch size, repeats dropped.
fn subset(raw: &Option<Vec<usize>>, batch: usize) -> Option<Vec<usize>> {
    raw.as_ref().map(|raw| {
        let mut picked: Vec<usize> = Vec::new();
        for i in raw.iter().map(|i| i % batch) {
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked
    })
}

/// A net, a group layout, subsampling sets and the number of directions.
#[derive(Clone)]
struct Case {
    arch: Arch,
    layout: Layout,
    subsampling_ggn: Option<Vec<usize>>,
    subsampling_grad: Option<Vec<usize>>,
    k: usize,
}

impl Case {
    fn strategy() -> impl Strategy<Value = Case> {
        let indices = || prop::option::of(prop::collection::vec(0..8usize, 1..=4));
        (
            Arch::strategy(),
            Layout::strategy(),
            indices(),
            indices(),
            1..=6usize,
        )
            .prop_map(|(arch, layout, ggn, grad, k)| Case {
                subsampling_ggn: subset(&ggn, arch.batch),
                subsampling_grad: subset(&grad, arch.batch),
                arch,
                layout,
                k,
            })
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}; groups {:?}; subsampling ggn {:?} grad {:?}; k = {}",
            self.arch, self.layout, self.subsampling_ggn, self.subsampling_grad, self.k
        )
    }
}

fn fail(e: anyhow::Error) -> TestCaseError {
    TestCaseError::fail(format!("{e:#}"))
}

fn eigen(case: &Case) -> Result<()> {
    let problem = case.arch.problem()?;
    let groups = case.layout.groups(&problem);
    check_eigen(&problem, &groups, case.subsampling_ggn.clone(), case.k)
}

fn newton(case: &Case) -> Result<()> {
    let problem = case.arch.problem()?;
    let groups = case.layout.groups(&problem);
    check_newton(
        &problem,
        &groups,
        case.subsampling_grad.clone(),
        case.subsampling_ggn.clone(),
        case.k,
    )
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Eigvalsh and Eigh.
    #[test]
    fn eigenpairs_match_the_explicit_ggn(case in Case::strategy()) {
        eigen(&case).map_err(fail)?;
    }

    /// Directional derivatives and the damped Newton steps.
    #[test]
    fn directional_quantities_and_steps_match_the_explicit_ggn(case in Case::strategy()) {
        newton(&case).map_err(fail)?;
    }
}
