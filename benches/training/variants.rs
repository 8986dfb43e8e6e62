//! The DampedNewton settings the suite compares; the first is "the default"
//! that the goals are judged on.

use vivit::{DampedNewtonConfig, Damping};

/// The DampedNewton variants, each with its name in the tables and plots.
pub fn damped_newton_variants() -> Vec<(String, DampedNewtonConfig)> {
    let mut variants = vec![(
        "DampedNewton (default)".to_string(),
        DampedNewtonConfig::default(),
    )];
    if std::env::var("VIVIT_SUITE_VARIANTS").is_ok() {
        for delta in [0.01, 0.03, 0.3] {
            variants.push((
                format!("DampedNewton δ={delta}"),
                DampedNewtonConfig::default().damping(Damping::constant(delta)),
            ));
        }
        variants.push((
            "DampedNewton budget 2048".to_string(),
            DampedNewtonConfig::default().curvature_budget(2048),
        ));
        variants.push((
            "DampedNewton κ=1".to_string(),
            DampedNewtonConfig::default().trust_region(1.0),
        ));
    }
    variants
}
