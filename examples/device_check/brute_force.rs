//! The comparisons of `tests/properties.rs` on the device: random small f64
//! architectures (convolutions plain, grouped and transposed, pooling,
//! linear layers with norms, residuals; cross-entropy, MSE or BCE) drawn
//! from a fixed seed, each checked against its explicit GGN: eigvalsh and
//! eigh top-3, then γ, λ and the damped Newton steps (relative 1e-9).

use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use crate::common::arch::Arch;
use crate::common::brute_force::one_group;
use crate::common::ggn_checks::{check_eigen, check_newton};
use crate::outcome;

/// Architectures drawn.
const CASES: usize = 100;
/// Directions compared.
const TOP_K: usize = 3;

/// Runs the comparisons, prints the failures and a count; returns the
/// number that failed.
pub fn run() -> usize {
    let start = Instant::now();
    let mut runner = TestRunner::deterministic();
    let strategy = Arch::strategy();
    let (mut passed, mut failed) = (0, 0);
    for case in 0..CASES {
        let arch = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(reason) => {
                println!("FAILED brute force case {case}: no draw: {reason}");
                failed += 1;
                continue;
            }
        };
        let result = outcome(|| {
            let problem = arch.problem()?;
            let groups = one_group(&problem);
            check_eigen(&problem, &groups, None, TOP_K)?;
            check_newton(&problem, &groups, None, None, TOP_K)
        });
        match result {
            Ok(()) => passed += 1,
            Err(message) => {
                println!("FAILED brute force case {case} ({arch:?}): {message}");
                failed += 1;
            }
        }
    }
    println!(
        "brute-force comparisons: {passed} of {CASES} passed (random architectures against \
         the explicit GGN) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    failed
}
