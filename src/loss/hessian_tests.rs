use super::*;
use candle_core::Device;
use rand::SeedableRng;

/// `N·(H_n / N)` per sample, `[N][F][F]` over the `F = P·K` entries of a
/// sample: block `p` is `N (w_np/Z) ∇²φ_np`, written from the formulas.
fn hessians(kind: LossKind, f: &Tensor, mask: Option<&[f64]>) -> Result<Vec<Vec<Vec<f64>>>> {
    let Positions { n, p, k } = kind.positions(f)?;
    let flat = f.flatten_all()?.to_vec1::<f64>()?;
    let w: Vec<f64> = mask.map_or(vec![1.0; n * p], <[f64]>::to_vec);
    let z = match kind {
        LossKind::CrossEntropy => w.iter().sum::<f64>(),
        _ => (n * p) as f64,
    };
    Ok((0..n)
        .map(|s| {
            let mut h = vec![vec![0.0; p * k]; p * k];
            for q in 0..p {
                let x = &flat[(s * p + q) * k..(s * p + q + 1) * k];
                let weight = n as f64 * w[s * p + q] / z;
                let block: Vec<Vec<f64>> = match kind {
                    LossKind::CrossEntropy => {
                        let max = x.iter().fold(f64::MIN, |a, &b| a.max(b));
                        let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
                        let pr: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
                        (0..k)
                            .map(|i| {
                                (0..k)
                                    .map(|j| f64::from(u8::from(i == j)) * pr[i] - pr[i] * pr[j])
                                    .collect()
                            })
                            .collect()
                    }
                    LossKind::Mse => vec![vec![2.0]],
                    LossKind::BinaryCrossEntropyWithLogits => {
                        let sg = 1.0 / (1.0 + (-x[0]).exp());
                        vec![vec![sg * (1.0 - sg)]]
                    }
                };
                for i in 0..k {
                    for j in 0..k {
                        h[q * k + i][q * k + j] = weight * block[i][j];
                    }
                }
            }
            h
        })
        .collect())
}

/// `N · Σ_j S[j,n] S[j,n]ᵀ` per sample, `[N][F][F]`.
fn outer_sums(s: &Tensor) -> Result<Vec<Vec<Vec<f64>>>> {
    let (m, n) = (s.dim(0)?, s.dim(1)?);
    let s = s.reshape((m, n, ()))?.to_vec3::<f64>()?;
    let f = s[0][0].len();
    Ok((0..n)
        .map(|k| {
            (0..f)
                .map(|i| {
                    (0..f)
                        .map(|j| (0..m).map(|v| s[v][k][i] * s[v][k][j]).sum::<f64>() * n as f64)
                        .collect()
                })
                .collect()
        })
        .collect())
}

fn assert_equal(what: &str, got: &[Vec<Vec<f64>>], want: &[Vec<Vec<f64>>], tol: f64) {
    let got = got.iter().flatten().flatten();
    for (g, w) in got.zip(want.iter().flatten().flatten()) {
        assert!((g - w).abs() < tol, "{what}: {g} vs {w} (tol {tol})");
    }
}

/// Outputs `[N, C]`, `[N, T, C]` and a mask of the second (cross-entropy).
fn outputs() -> Result<(Tensor, Tensor, Vec<f64>)> {
    let f = Tensor::new(
        &[
            [0.3f64, -1.2, 2.0, 0.1],
            [5.0, -3.0, 0.0, 1.0],
            [0.0, 0.0, 0.0, 0.0],
        ],
        &Device::Cpu,
    )?;
    let tokens = Tensor::new(
        &[
            [[0.3f64, -1.2, 2.0], [1.0, 0.5, -0.5]],
            [[4.0, 0.0, -1.0], [0.2, 0.1, 0.0]],
        ],
        &Device::Cpu,
    )?;
    Ok((f, tokens, vec![1.0, 0.0, 1.0, 1.0]))
}

#[test]
fn exact_factors_square_to_the_hessian() -> Result<()> {
    let (f, tokens, mask) = outputs()?;
    let mask_t = Tensor::from_vec(mask.clone(), (2, 2), &Device::Cpu)?;
    let kinds = [
        LossKind::CrossEntropy,
        LossKind::Mse,
        LossKind::BinaryCrossEntropyWithLogits,
    ];
    for kind in kinds {
        for out in [&f, &tokens] {
            let (s, _) = kind.sqrt_hessian(out, None)?;
            let what = format!("{kind:?} {:?}", out.dims());
            assert_equal(&what, &outer_sums(&s)?, &hessians(kind, out, None)?, 1e-14);
        }
    }
    let (s, basis) = LossKind::CrossEntropy.sqrt_hessian(&tokens, Some(&mask_t))?;
    let want = hessians(LossKind::CrossEntropy, &tokens, Some(&mask))?;
    assert_equal("masked", &outer_sums(&s)?, &want, 1e-14);
    // (K − 1)·T columns, basis [N, T, K, K − 1]
    assert_eq!(s.dims(), &[4, 2, 2, 3]);
    assert_eq!(basis.map(|b| b.dims().to_vec()), Some(vec![2, 2, 3, 2]));
    Ok(())
}

/// `E[Σ_m s sᵀ] = H`: with `M` samples every entry of the average is within
/// six standard deviations of the exact Hessian. The entries of `N s sᵀ` are
/// at most `N·max(w/Z)·b` in magnitude, with `b = 1` for cross-entropy and
/// BCE (`s ∝ p − e_y`, `σ − ŷ`) and `b = 2 z_i z_j` for MSE (variance at most
/// `2·4 = 8`), so the standard deviation of the mean is at most `σ/√M`.
#[test]
fn monte_carlo_factors_average_to_the_hessian() -> Result<()> {
    let (_, tokens, mask_values) = outputs()?;
    let mask_t = Tensor::from_vec(mask_values.clone(), (2, 2), &Device::Cpu)?;
    let m = 40_000;
    let mut rng = StdRng::seed_from_u64(7);
    // N·max(w/Z): 2/3 (masked cross-entropy, Z = 3), 2/12 (entrywise, Z = 12)
    for (kind, mask, sigma) in [
        (LossKind::CrossEntropy, Some(&mask_t), 2.0 / 3.0),
        (LossKind::Mse, None, 8f64.sqrt() * 2.0 / 12.0),
        (LossKind::BinaryCrossEntropyWithLogits, None, 2.0 / 12.0),
    ] {
        let s = kind.sampled_sqrt_hessian(&tokens, mask, m, &mut rng)?;
        assert_eq!(s.dims(), &[m, 2, 2, 3]);
        let want = hessians(kind, &tokens, mask.map(|_| &mask_values[..]))?;
        let tol = 6.0 * sigma / (m as f64).sqrt();
        assert_equal(&format!("{kind:?}"), &outer_sums(&s)?, &want, tol);
    }
    Ok(())
}

/// Per-sample gradients `(N/Z) Σ_p w_np ∇φ_np` against finite differences of
/// `ℓ_n` written from the loss formulas.
#[test]
fn gradients_are_the_per_sample_loss_gradients() -> Result<()> {
    let (_, tokens, mask) = outputs()?;
    let (n, p, k) = (2, 2, 3);
    let classes = Tensor::new(&[[2u32, 0], [1, 1]], &Device::Cpu)?;
    let values = Tensor::new(
        &[
            [[0.1f64, 0.9, 0.0], [1.0, 0.3, 0.6]],
            [[0.5, 0.5, 1.0], [0.0, 0.2, 0.8]],
        ],
        &Device::Cpu,
    )?;
    let mask_t = Tensor::from_vec(mask.clone(), (2, 2), &Device::Cpu)?;
    let y_c = classes.flatten_all()?.to_vec1::<u32>()?;
    let y_v = values.flatten_all()?.to_vec1::<f64>()?;
    // ℓ_n of the flattened entries x of sample s
    let loss = |kind: LossKind, s: usize, x: &[f64]| -> f64 {
        match kind {
            LossKind::CrossEntropy => {
                let z: f64 = mask.iter().sum();
                (0..p)
                    .map(|q| {
                        let row = &x[q * k..(q + 1) * k];
                        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                        mask[s * p + q] * (lse - row[y_c[s * p + q] as usize])
                    })
                    .sum::<f64>()
                    * n as f64
                    / z
            }
            LossKind::Mse => {
                let y = &y_v[s * p * k..(s + 1) * p * k];
                x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (p * k) as f64
            }
            LossKind::BinaryCrossEntropyWithLogits => {
                let y = &y_v[s * p * k..(s + 1) * p * k];
                let softplus = |v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p();
                let sum: f64 = x.iter().zip(y).map(|(a, b)| softplus(*a) - b * a).sum();
                sum / (p * k) as f64
            }
        }
    };
    let x = tokens.flatten_all()?.to_vec1::<f64>()?;
    for (kind, targets, mask) in [
        (LossKind::CrossEntropy, &classes, Some(&mask_t)),
        (LossKind::Mse, &values, None),
        (LossKind::BinaryCrossEntropyWithLogits, &values, None),
    ] {
        let got = kind.gradient(&tokens, targets, mask)?;
        assert_eq!(got.dims(), tokens.dims());
        let got = got.flatten_all()?.to_vec1::<f64>()?;
        let h = 1e-6;
        for s in 0..n {
            let sample = &x[s * p * k..(s + 1) * p * k];
            for i in 0..p * k {
                let (mut up, mut down) = (sample.to_vec(), sample.to_vec());
                up[i] += h;
                down[i] -= h;
                let want = (loss(kind, s, &up) - loss(kind, s, &down)) / (2.0 * h);
                let g = got[s * p * k + i];
                assert!(
                    (g - want).abs() < 1e-8,
                    "{kind:?} [{s}, {i}]: {g} vs {want}"
                );
            }
        }
    }
    Ok(())
}
