//! The comparisons with the fixtures of vivit-for-pytorch 1.0.0
//! (tests/reference/generate.py), one fixture at a time: f64 to relative
//! 1e-9, f32 to 1e-4, relative to the largest value compared. Each check
//! panics on a mismatch and returns how much it compared; `tests/reference.rs`
//! runs them on every fixture, `examples/device_check` on a device.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use serde_json::Value;
use vivit::{Criterion, EighComputation, EigvalshComputation, ParamGroup};

use super::{
    assert_close, assert_close_up_to_sign, dtype_of, max_abs, record_fixture, to_f64, Model,
};

/// The fixtures `(name, contents)` of `tests/fixtures`, by name (the folder
/// `VIVIT_FIXTURES` names instead, where set: a binary run elsewhere).
pub fn fixtures() -> Result<Vec<(String, Value)>> {
    let dir = match std::env::var_os("VIVIT_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p)?;
            let name = p
                .file_stem()
                .context("stem")?
                .to_string_lossy()
                .into_owned();
            Ok((name, serde_json::from_str(&text)?))
        })
        .collect()
}

/// The relative eigenvalue gap above which eigenvectors are compared (see
/// `eigh_equals_vivit`).
fn min_gap(tol: f64) -> f64 {
    if tol > 1e-6 {
        1e-2
    } else {
        1e-6
    }
}

pub fn rtol(fixture: &Value) -> f64 {
    match dtype_of(fixture) {
        DType::F32 => 1e-4,
        _ => 1e-9,
    }
}

fn indices(v: &Value) -> Option<Vec<usize>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|i| i.as_u64().expect("index") as usize)
            .collect()
    })
}

fn groups(model: &Model, run: &Value) -> Vec<ParamGroup> {
    run["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let params = indices(g)
                .expect("group")
                .iter()
                .map(|&i| model.params[i].clone())
                .collect();
            ParamGroup::new(params).criterion(criterion(&run["criterion"]))
        })
        .collect()
}

/// The criteria of the generator, as Rust criteria.
fn criterion(spec: &Value) -> Criterion {
    let k = spec["k"].as_u64().unwrap_or(0) as usize;
    let x = spec["x"].as_f64().unwrap_or(0.0);
    match spec["type"].as_str() {
        Some("top_k") => Criterion::top_k(k),
        Some("above") => Criterion::above(x),
        Some("top_k_above") => Criterion::custom(move |evals| {
            let above: Vec<usize> = (0..evals.len()).filter(|&i| evals[i] > x).collect();
            above[above.len().saturating_sub(k)..].to_vec()
        }),
        _ => Criterion::all(),
    }
}

fn runs<'a>(fixture: &'a Value, computation: &'a str) -> impl Iterator<Item = &'a Value> {
    fixture["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(move |r| r["computation"] == computation)
}

fn floats(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).expect("numbers")
}

/// Which kept directions are unique: separated from every other eigenvalue of
/// the block by `min_gap · max|λ|` (see [`eigh`]).
fn unique_directions(evals: &[f64], spectrum: &[f64], min_gap: f64) -> Vec<bool> {
    let scale = max_abs(spectrum);
    evals
        .iter()
        .map(|&l| {
            spectrum
                .iter()
                .filter(|&&mu| (mu - l).abs() < min_gap * scale)
                .count()
                == 1
        })
        .collect()
}

/// Column `k` of a row-major `[rows, cols]` matrix.
fn column(data: &[f64], cols: usize, k: usize) -> Vec<f64> {
    data.iter().skip(k).step_by(cols).copied().collect()
}

/// Eigvalsh of every run of `fixture`: the number of eigenvalues compared.
pub fn eigvalsh(name: &str, fixture: &Value) -> Result<usize> {
    let mut compared = 0;
    let model = Model::from_fixture(fixture)?;
    let loss = record_fixture(fixture, &model)?;
    for (r, run) in runs(fixture, "eigvalsh").enumerate() {
        let groups = groups(&model, run);
        let mut computation = EigvalshComputation::new();
        if let Some(s) = indices(&run["subsampling"]) {
            computation = computation.subsampling(s);
        }
        computation.compute(&loss, &groups)?;
        for (g, (group, expected)) in groups
            .iter()
            .zip(run["results"].as_array().context("results")?)
            .enumerate()
        {
            let ours = to_f64(&computation.result(group)?)?;
            assert_close(
                &format!("{name} eigvalsh run {r} group {g}"),
                &ours,
                &floats(&expected["evals"]),
                rtol(fixture),
            );
            compared += ours.len();
        }
    }
    Ok(compared)
}

/// Eigenvalues, and eigenvectors up to sign where they are unique: not flagged
/// degenerate by the generator and separated from every other eigenvalue of the
/// block by a gap that keeps round-off below the tolerance
/// (`‖δe‖ ≲ ε‖G‖/gap`, with `ε` the relative round-off of the Gram matrix,
/// about 1e-6 in f32 — a sum over thousands of products — and 1e-15 in f64;
/// so `gap ≥ 1e-2‖G‖` in f32 and `1e-6‖G‖` in f64). Both sides are f32
/// computations in the f32 fixtures, so closer eigenvalues give eigenvectors
/// that differ by round-off amplified beyond the tolerance.
///
/// Returns the numbers of eigenvalues and eigenvectors compared.
pub fn eigh(name: &str, fixture: &Value) -> Result<(usize, usize)> {
    let (mut values, mut vectors) = (0, 0);
    let model = Model::from_fixture(fixture)?;
    let loss = record_fixture(fixture, &model)?;
    let tol = rtol(fixture);
    let min_gap = min_gap(tol);
    for (r, run) in runs(fixture, "eigh").enumerate() {
        let groups = groups(&model, run);
        let mut eigh = EighComputation::new().warn_small_eigvals(0.0);
        let mut eigvalsh = EigvalshComputation::new();
        if let Some(s) = indices(&run["subsampling"]) {
            eigh = eigh.subsampling(s.clone());
            eigvalsh = eigvalsh.subsampling(s);
        }
        vivit::backward(&loss, &groups, &mut [&mut eigh, &mut eigvalsh])?;
        for (g, (group, expected)) in groups
            .iter()
            .zip(run["results"].as_array().context("results")?)
            .enumerate()
        {
            let what = format!("{name} eigh run {r} group {g}");
            // the seed's tuple form of the result
            let (evals, evecs): (Tensor, Vec<Tensor>) = eigh.result(group)?.into();
            let evals = to_f64(&evals)?;
            let spectrum = to_f64(&eigvalsh.result(group)?)?;
            let scale = max_abs(&spectrum);
            let want = floats(&expected["evals"]);
            assert_eq!(evals.len(), want.len(), "{what}: number of kept directions");
            for (k, (a, b)) in evals.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= tol * scale,
                    "{what}: eigenvalue {k}: {a} vs {b} (scale {scale})"
                );
            }
            values += evals.len();
            if expected["degenerate"].as_bool() == Some(true) {
                continue;
            }
            let want_vecs: Vec<Vec<f64>> = expected["evecs"]
                .as_array()
                .context("evecs")?
                .iter()
                .map(|v| floats(&v["data"]))
                .collect();
            for (k, &lambda) in evals.iter().enumerate() {
                let neighbours = spectrum
                    .iter()
                    .filter(|&&mu| (mu - lambda).abs() < min_gap * scale)
                    .count();
                if neighbours != 1 {
                    continue;
                }
                let mut ours = Vec::new();
                let mut theirs = Vec::new();
                for (t, w) in evecs.iter().zip(&want_vecs) {
                    ours.extend(to_f64(&t.get(k)?)?);
                    let per = w.len() / evals.len();
                    theirs.extend_from_slice(&w[k * per..(k + 1) * per]);
                }
                assert_close_up_to_sign(&format!("{what} eigenvector {k}"), &ours, &theirs, tol);
                vectors += 1;
            }
        }
    }
    Ok((values, vectors))
}

/// Directional derivatives of every run of `fixture`, where the directions are
/// unique (see [`eigh`]): the number of γ and λ columns compared.
pub fn directional_derivatives(name: &str, fixture: &Value) -> Result<usize> {
    let mut columns = 0;
    let model = Model::from_fixture(fixture)?;
    let loss = record_fixture(fixture, &model)?;
    let tol = rtol(fixture);
    let min_gap = min_gap(tol);
    for (r, run) in runs(fixture, "directional_derivatives").enumerate() {
        let groups = groups(&model, run);
        let mut dd = vivit::DirectionalDerivativesComputation::new().warn_small_eigvals(0.0);
        let mut eigvalsh = EigvalshComputation::new();
        if let Some(s) = indices(&run["subsampling_grad"]) {
            dd = dd.subsampling_grad(s);
        }
        if let Some(s) = indices(&run["subsampling_ggn"]) {
            dd = dd.subsampling_ggn(s.clone());
            eigvalsh = eigvalsh.subsampling(s);
        }
        vivit::backward(&loss, &groups, &mut [&mut dd, &mut eigvalsh])?;
        for (g, (group, expected)) in groups
            .iter()
            .zip(run["results"].as_array().context("results")?)
            .enumerate()
        {
            let what = format!("{name} directional derivatives run {r} group {g}");
            let (gammas, lambdas) = dd.result(group)?;
            let want_gammas = floats(&expected["gammas"]["data"]);
            let want_lambdas = floats(&expected["lambdas"]["data"]);
            assert_eq!(gammas.elem_count(), want_gammas.len(), "{what}: γ shape");
            assert_eq!(lambdas.elem_count(), want_lambdas.len(), "{what}: λ shape");
            if expected["degenerate"].as_bool() == Some(true) {
                continue;
            }
            let k = gammas.dim(1)?;
            let (gammas, lambdas) = (to_f64(&gammas)?, to_f64(&lambdas)?);
            let spectrum = to_f64(&eigvalsh.result(group)?)?;
            let unique = unique_directions(&floats(&expected["evals"]), &spectrum, min_gap);
            for (j, _) in unique.iter().enumerate().filter(|(_, u)| **u) {
                assert_close_up_to_sign(
                    &format!("{what} γ column {j}"),
                    &column(&gammas, k, j),
                    &column(&want_gammas, k, j),
                    tol,
                );
                assert_close(
                    &format!("{what} λ column {j}"),
                    &column(&lambdas, k, j),
                    &column(&want_lambdas, k, j),
                    tol,
                );
                columns += 1;
            }
        }
    }
    Ok(columns)
}

/// The damped Newton steps of every run of `fixture`: the number compared.
pub fn newton(name: &str, fixture: &Value) -> Result<usize> {
    let mut steps = 0;
    let model = Model::from_fixture(fixture)?;
    let loss = record_fixture(fixture, &model)?;
    let tol = rtol(fixture);
    for (r, run) in runs(fixture, "newton").enumerate() {
        let delta = run["damping"].as_f64().context("damping")?;
        let groups: Vec<ParamGroup> = groups(&model, run)
            .into_iter()
            .map(|g| g.damping(vivit::Damping::constant(delta)))
            .collect();
        let mut newton = vivit::DirectionalDampedNewtonComputation::new().warn_small_eigvals(0.0);
        if let Some(s) = indices(&run["subsampling_grad"]) {
            newton = newton.subsampling_grad(s);
        }
        if let Some(s) = indices(&run["subsampling_ggn"]) {
            newton = newton.subsampling_ggn(s);
        }
        newton.compute(&loss, &groups)?;
        for (g, (group, expected)) in groups
            .iter()
            .zip(run["results"].as_array().context("results")?)
            .enumerate()
        {
            if expected["degenerate"].as_bool() == Some(true) {
                continue;
            }
            let ours: Vec<f64> = newton
                .result(group)?
                .iter()
                .map(to_f64)
                .collect::<Result<Vec<_>>>()?
                .concat();
            let theirs: Vec<f64> = expected["step"]
                .as_array()
                .context("step")?
                .iter()
                .flat_map(|p| floats(&p["data"]))
                .collect();
            assert_close(
                &format!("{name} newton run {r} group {g}"),
                &ours,
                &theirs,
                tol,
            );
            steps += 1;
        }
    }
    Ok(steps)
}
