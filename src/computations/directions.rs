//! Kept eigen-directions of a group and the per-sample statistics along them,
//! shared by Eigh, DirectionalDerivatives and DirectionalDampedNewton.

use candle_core::Tensor;

use super::options::Options;
use crate::error::{Error, Result};
use crate::extension::{mark, Block, Extension, Factor, FactorId, Stage};
use crate::group::ParamGroup;
use crate::kernels::matmul;
use crate::linalg::{self, Partial, SymEig};

/// The kept eigenpairs `G̃ ẽ_k = λ_k ẽ_k` of a group's Gram matrix.
pub(crate) struct GramEigenpairs {
    /// `λ_k`, in the criterion's order.
    pub evals: Vec<f64>,
    /// `ẽ_k` as rows `[K, C·N_g]`.
    pub gram_evecs: Tensor,
    /// `G̃ ẽ_k` as rows `[K, C·N_g]` (`λ_k ẽ_k` up to the solver's residual).
    pub gram_images: Tensor,
}

impl GramEigenpairs {
    /// Eigendecomposes the group's Gram matrix with the solver of
    /// `o.eigensolver` and applies its criterion.
    ///
    /// The criterion sees all `C·N_g` eigenvalues, with the zeros the factor
    /// omits. After the partial solver it sees the `k` largest of them, which
    /// is all that the criteria it serves ([`crate::Criterion::top_k`],
    /// [`crate::Criterion::top_k_above`]) decide from.
    ///
    /// # Errors
    /// As [`linalg::eigh`], [`crate::Eigensolver`]'s refusal, and the
    /// criterion's errors.
    pub fn kept(block: Block<'_>, group: &ParamGroup, o: &Options) -> Result<Self> {
        let eig = match Self::partial(block, group, o)? {
            Some(eig) => eig,
            None => {
                let eig = linalg::eigh(&block.gram(o.verbose)?)?;
                mark(Stage::Eigensolver, o.verbose, || {
                    format!(
                        "group {}: full eigensolver (faer), all {} eigenpairs",
                        block.group(),
                        eig.evals.len()
                    )
                });
                eig
            }
        };
        Self::select(block, group, eig, o.verbose)
    }

    /// The partial solver's eigenpairs where `o.eigensolver` takes it for
    /// this Gram size and criterion and it converges; `None` for the full
    /// solver.
    fn partial(block: Block<'_>, group: &ParamGroup, o: &Options) -> Result<Option<SymEig>> {
        let (g, size) = (block.group(), block.factor().columns());
        let criterion = group.criterion_ref();
        let Some(k) = criterion.partial_k(o.eigensolver, size)? else {
            return Ok(None);
        };
        let operator = block.operator()?;
        let (dtype, device) = block.factor().dtype_device();
        mark(Stage::Eigensolver, o.verbose, || {
            format!(
                "group {g}: partial eigensolver (block Lanczos) on Gram products \
                 ({size}×{size}), top {k}"
            )
        });
        Ok(
            match linalg::eigh_top(size, k, dtype, &device, |z| operator.apply(z))? {
                Partial::Converged(eig, work) => {
                    mark(Stage::Eigensolver, o.verbose, || {
                        format!("group {g}: partial eigensolver converged: {work}")
                    });
                    Some(eig)
                }
                Partial::Unconverged(work) => {
                    log::warn!(
                        "the partial eigensolver did not converge on the {size}×{size} Gram \
                     matrix after {work}; the full one runs instead"
                    );
                    None
                }
            },
        )
    }

    /// The eigenpairs of `eig` that the group's criterion keeps, among all
    /// `C·N_g` eigenvalues with the zeros the factor omits (an omitted
    /// zero's Gram vector is null: `V ẽ = 0`, a zero column here).
    fn select(block: Block<'_>, group: &ParamGroup, eig: SymEig, verbose: bool) -> Result<Self> {
        let factor = block.factor();
        let (g, size, zeros) = (block.group(), factor.columns(), factor.omitted_zeros());
        let (all, source) = with_omitted_zeros(&eig.evals, zeros);
        let criterion = group.criterion_ref();
        let keep = criterion.select(&all)?;
        mark(Stage::Eigensolver, verbose, || {
            format!(
                "group {g}: criterion {criterion:?} keeps {} of {} directions",
                keep.len(),
                size + zeros
            )
        });
        let n = eig.evals.len();
        let index: Vec<u32> = keep
            .iter()
            .map(|&i| source[i].unwrap_or(n) as u32)
            .collect();
        let index = crate::linalg::host::indices_to_device(index, eig.evecs.device())?;
        let kept = |columns: &Tensor| -> Result<Tensor> {
            let null = Tensor::zeros((size, 1), columns.dtype(), columns.device())?;
            let padded = Tensor::cat(&[columns, &null], 1)?;
            Ok(padded.index_select(&index, 1)?.t()?.contiguous()?)
        };
        let gram_evecs = kept(&eig.evecs)?;
        let gram_images = match &eig.images {
            Some(images) => kept(images)?,
            // G̃ is symmetric: ẽ_kᵀ G̃ = (G̃ ẽ_k)ᵀ
            None => matmul(&gram_evecs, &block.gram(false)?)?,
        };
        Ok(Self {
            evals: keep.iter().map(|&i| all[i]).collect(),
            gram_evecs,
            gram_images,
        })
    }

    /// `λ_k` `[K]` in the model's dtype.
    pub fn evals_tensor(&self) -> Result<Tensor> {
        self.row(&self.evals)
    }

    /// A `[K]` tensor of `values` in the dtype and device of the eigenvectors.
    pub fn row(&self, values: &[f64]) -> Result<Tensor> {
        let (dtype, dev) = (self.gram_evecs.dtype(), self.gram_evecs.device());
        crate::linalg::host::to_device(values.to_vec(), values.len(), dtype, dev)
    }

    /// The eigenvectors in parameter space, `e_k = V ẽ_k / ‖V ẽ_k‖`, one
    /// `[K, *p.shape]` tensor per parameter, jointly unit-norm over the group.
    ///
    /// The norms come from the Gram matrix, `‖V ẽ_k‖² = ẽ_kᵀ G̃ ẽ_k`, and scale
    /// `ẽ_k` before `V` is applied (`V` is linear), so no pass over the
    /// parameter-sized vectors is needed. Directions with `ẽ_kᵀ G̃ ẽ_k ≤ 0`
    /// (omitted zeros, numerically null directions) are zero vectors.
    pub fn parameter_evecs(&self, block: Block<'_>) -> Result<Vec<Tensor>> {
        let e = &self.gram_evecs;
        let sq_norm = (&self.gram_images * e)?.sum(1)?; // [K]
        let inv_norm = sq_norm
            .gt(0.0)?
            .where_cond(&sq_norm.sqrt()?.recip()?, &sq_norm.zeros_like()?)?;
        block.apply(&e.broadcast_mul(&inv_norm.unsqueeze(1)?)?)
    }
}

/// First- and second-order directional derivatives along the kept directions.
pub(crate) struct Directional {
    pub pairs: GramEigenpairs,
    /// `γ[n,k] = e_kᵀ g_n` `[N_grad, K]`.
    pub gammas: Tensor,
    /// `λ[n,k] = e_kᵀ G_n e_k` `[N_ggn, K]`.
    pub lambdas: Tensor,
}

impl Directional {
    /// The GGN factor (`subsampling_ggn`, `mc_samples_ggn`) and the gradient
    /// factor (`subsampling_grad`) the directional quantities need.
    pub fn factors(ext: &mut Extension<'_>, o: &Options) -> Result<(FactorId, FactorId)> {
        let requests = [
            o.ggn_request(ext, "subsampling_ggn"),
            Extension::gradient_request(o.subsampling_grad.as_deref(), "subsampling_grad"),
        ];
        let factors = ext.factors(&requests, o.verbose)?;
        Ok((factors[0], factors[1]))
    }

    /// With `e_k = V ẽ_k / √λ_k` and the per-sample GGN `G_n = N_g V_n V_nᵀ`:
    ///
    /// ```text
    /// γ[n,k] = (1/√λ_k) ẽ_kᵀ (Vᵀ g_n),
    /// λ[n,k] = (N_g/λ_k) Σ_c ((G̃ ẽ_k)[c,n])².
    /// ```
    ///
    /// # Errors
    /// [`Error::NonPositiveEigenvalue`] if the criterion kept `λ_k ≤ 0`.
    pub fn compute(
        ggn: Block<'_>,
        grad: Factor<'_>,
        group: &ParamGroup,
        o: &Options,
    ) -> Result<Self> {
        let criterion = group.criterion_ref();
        let n_g = ggn.factor().samples();
        if criterion
            .partial_k(o.eigensolver, ggn.factor().columns())?
            .is_none()
        {
            // the full solver needs the formed Gram matrix: form it together
            // with Vᵀ g_n, one pass over each large weight factor
            ggn.crosses(&[ggn.factor(), grad])?;
        }
        let pairs = GramEigenpairs::kept(ggn, group, o)?;
        if let Some((index, &value)) = pairs.evals.iter().enumerate().find(|(_, &l)| l <= 0.0) {
            return Err(Error::NonPositiveEigenvalue { index, value });
        }
        mark(Stage::DirectionalDerivatives, o.verbose, || {
            format!("group {}: compute gammas and lambdas", ggn.group())
        });
        let inv_sqrt: Vec<f64> = pairs.evals.iter().map(|l| 1.0 / l.sqrt()).collect();
        let inv_sqrt = pairs.row(&inv_sqrt)?;
        let vt_g = ggn.cross(grad)?; // [C·N_g, N_grad]
        let gammas = matmul(&pairs.gram_evecs, &vt_g)?
            .t()?
            .broadcast_mul(&inv_sqrt)?;
        let k = pairs.evals.len();
        let w = pairs.gram_images.t()?; // [C·N_g, K]
        let lambdas = w
            .reshape((w.dim(0)? / n_g, n_g, k))?
            .sqr()?
            .sum(0)?
            .broadcast_mul(&(inv_sqrt.sqr()? * n_g as f64)?)?;
        Ok(Self {
            pairs,
            gammas,
            lambdas,
        })
    }
}

/// `evals` (ascending) with `zeros` more zeros merged in, and where each entry
/// came from (`Some(i)`: `evals[i]`, `None`: an omitted zero).
fn with_omitted_zeros(evals: &[f64], zeros: usize) -> (Vec<f64>, Vec<Option<usize>>) {
    let split = evals.partition_point(|&l| l < 0.0);
    let source: Vec<Option<usize>> = (0..split)
        .map(Some)
        .chain(std::iter::repeat_n(None, zeros))
        .chain((split..evals.len()).map(Some))
        .collect();
    let all = source.iter().map(|s| s.map_or(0.0, |i| evals[i])).collect();
    (all, source)
}

/// The mean gradient `ḡ = (1/N_grad) Σ_n g_n` of the gradient factor's block `grad`
/// over the group's parameters, one `[1, *p.shape]` tensor each.
pub(crate) fn mean_gradient(grad: Block<'_>) -> Result<Vec<Tensor>> {
    let n = grad.factor().samples();
    let (dtype, device) = grad.factor().dtype_device();
    let weights = (Tensor::ones((1, n), dtype, &device)? / n as f64)?;
    grad.apply(&weights)
}

/// Warns through `log` when a kept eigenvalue is below `threshold` in magnitude.
pub(crate) fn warn_small(evals: &[f64], threshold: f64) {
    if let Some(small) = evals.iter().find(|l| l.abs() < threshold) {
        log::warn!(
            "kept eigenvalue {small:e} is below warn_small_eigvals = {threshold:e}: \
             its eigenvector is numerically unstable and may not be orthogonal to the others"
        );
    }
}
