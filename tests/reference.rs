//! Eigvalsh, Eigh, directional derivatives and damped Newton steps against
//! the fixtures made with vivit-for-pytorch 1.0.0 (`tests/common/reference_checks.rs`).

mod common;

use anyhow::Result;
use common::reference_checks::{self as checks, fixtures};

#[test]
fn eigvalsh_equals_vivit() -> Result<()> {
    let mut compared = 0;
    for (name, fixture) in fixtures()? {
        compared += checks::eigvalsh(&name, &fixture)?;
    }
    assert!(compared > 1000, "only {compared} eigenvalues compared");
    Ok(())
}

#[test]
fn eigh_equals_vivit() -> Result<()> {
    let (mut values, mut vectors) = (0, 0);
    for (name, fixture) in fixtures()? {
        let (v, e) = checks::eigh(&name, &fixture)?;
        (values, vectors) = (values + v, vectors + e);
    }
    assert!(
        values > 200 && vectors > 100,
        "compared only {values} eigenvalues and {vectors} eigenvectors"
    );
    eprintln!("compared {values} eigenvalues and {vectors} eigenvectors");
    Ok(())
}

#[test]
fn directional_derivatives_equal_vivit() -> Result<()> {
    let mut columns = 0;
    for (name, fixture) in fixtures()? {
        columns += checks::directional_derivatives(&name, &fixture)?;
    }
    assert!(columns > 100, "compared only {columns} columns");
    eprintln!("compared {columns} γ and λ columns");
    Ok(())
}

#[test]
fn damped_newton_step_equals_vivit() -> Result<()> {
    let mut steps = 0;
    for (name, fixture) in fixtures()? {
        steps += checks::newton(&name, &fixture)?;
    }
    assert!(steps > 100, "compared only {steps} steps");
    eprintln!("compared {steps} Newton steps");
    Ok(())
}
