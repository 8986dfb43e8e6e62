//! The DampedNewton settings the suite compares; the first is "the default"
//! that the goals are judged on.

use vivit::{DampedNewtonConfig, Damping};

/// The DampedNewton variants, each with its name in the tables and plots:
/// the default, and with `VIVIT_SUITE_VARIANTS` set the settings it was
/// chosen against (`docs/training/choosing-the-default.md`), each differing
/// from it in one setting.
pub fn damped_newton_variants() -> Vec<(String, DampedNewtonConfig)> {
    let mut variants = vec![(
        "DampedNewton (default)".to_string(),
        DampedNewtonConfig::default(),
    )];
    if std::env::var_os("VIVIT_SUITE_VARIANTS").is_some() {
        for delta in [0.01, 0.1, 0.3] {
            variants.push((
                format!("DampedNewton δ={delta}"),
                DampedNewtonConfig::default().damping(Damping::constant(delta)),
            ));
        }
        variants.push((
            "DampedNewton budget 1024".to_string(),
            DampedNewtonConfig::default().curvature_budget(1024),
        ));
        variants.push((
            "DampedNewton κ=1".to_string(),
            DampedNewtonConfig::default().trust_region(1.0),
        ));
        for interval in [2, 4, 8] {
            variants.push((
                format!("DampedNewton T={interval}"),
                DampedNewtonConfig::default().curvature_interval(interval),
            ));
        }
    }
    variants
}
