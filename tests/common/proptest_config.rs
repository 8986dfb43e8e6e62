//! The proptest settings every property shares.

use proptest::test_runner::{Config, RngSeed};

/// `cases` cases from a fixed seed, so that CI draws the same cases every run
/// and its figures are reproducible; `PROPTEST_RNG_SEED=<u64>` draws others.
/// Failures are not persisted: the seed and the shrunk case in the message
/// reproduce them.
pub fn config(cases: u32) -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_905);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}
