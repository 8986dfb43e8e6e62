//! Handles on what a computation reads from a pass: a backpropagated factor
//! `V` (all groups), and its block `V_g` on one group's parameters.

use candle_core::{DType, Device, Tensor};

use super::layer::{LayerFactor, Role};
use super::operator::GramOperator;
use super::{mark, Extension, FactorId, KeptFactor, Member, Stage};
use crate::error::Result;
use crate::kernels::matmul;

/// A factor `V = [V_1; …; V_L]` of an extended backward pass, with
/// `C_eff·N_g` columns: `C_eff` per sample on `N_g` samples.
#[derive(Clone, Copy)]
pub(crate) struct Factor<'e> {
    ext: &'e Extension<'e>,
    id: FactorId,
}

/// The rows `V_g` of a [`Factor`] that belong to the parameters of group `g`,
/// whose Gram matrix `G̃_g = V_gᵀ V_g` the group's computations solve with.
#[derive(Clone, Copy)]
pub(crate) struct Block<'e> {
    factor: Factor<'e>,
    group: usize,
}

impl<'e> Factor<'e> {
    pub(super) fn new(ext: &'e Extension<'e>, id: FactorId) -> Self {
        Self { ext, id }
    }

    /// The factor's block on group `group`.
    pub fn block(self, group: usize) -> Block<'e> {
        Block {
            factor: self,
            group,
        }
    }

    /// The number of samples `N_g` the factor is built on.
    pub fn samples(&self) -> usize {
        let (spec, _) = &self.ext.factors[self.id.0];
        spec.subsampling
            .as_ref()
            .map_or(self.ext.tape.loss.output.dims()[0], Vec::len)
    }

    /// The number of columns `C_eff·N_g`, the size of its Gram matrices.
    pub fn columns(&self) -> usize {
        self.ext.factors[self.id.0].1.columns * self.samples()
    }

    /// How many zero eigenvalues its Gram matrices leave out (`N_g·P` where
    /// the loss-Hessian factor drops the null column of each of `P`
    /// positions, else 0).
    pub fn omitted_zeros(&self) -> usize {
        match &self.ext.factors[self.id.0].1.basis {
            Some(basis) => basis.dims()[..2].iter().product(),
            None => 0,
        }
    }

    /// The model's dtype and device.
    pub fn dtype_device(&self) -> (DType, Device) {
        let output = &self.ext.tape.loss.output;
        (output.dtype(), output.device().clone())
    }

    /// Gram-space vectors `e` `[R, C_eff·N_g]` in the reference's layout
    /// `[R, C·N_g]` (index `c·N_g + n`), for `P` positions of `K` classes
    /// (`C = P·K`, `C_eff = P·(K−1)`, index `c = p·K + k`):
    /// `ẽ[r, p, :, n] = U_{np} ẽ'[r, p, :, n]` with the basis `U_{np}`
    /// `[K, K−1]` of the kept columns.
    pub fn reference_layout(&self, e: &Tensor) -> Result<Tensor> {
        let Some(basis) = &self.ext.factors[self.id.0].1.basis else {
            return Ok(e.clone());
        };
        let (n, p, k, kept) = basis.dims4()?;
        let r = e.dim(0)?;
        let e = e
            .reshape((r, p, kept, n))?
            .permute((3, 1, 2, 0))?
            .contiguous()?; // [N, P, K−1, R]
        Ok(matmul(basis, &e)? // [N, P, K, R]
            .permute((3, 1, 2, 0))?
            .contiguous()?
            .reshape((r, p * k * n))?)
    }

    fn layer(&self, member: Member) -> &'e LayerFactor {
        self.ext.factors[self.id.0].1.layers[member.layer]
            .as_ref()
            .expect("factors are built for every layer that holds a group parameter")
    }
}

impl<'e> Block<'e> {
    /// The factor this block is part of.
    pub fn factor(&self) -> Factor<'e> {
        self.factor
    }

    /// The group's index.
    pub fn group(&self) -> usize {
        self.group
    }

    /// The Gram matrix `G̃_g = Σ_{p∈g} V_pᵀ V_p` `[C·N_g, C·N_g]` (cached).
    pub fn gram(&self, verbose: bool) -> Result<Tensor> {
        let gram = self.cross(self.factor)?;
        mark(Stage::Eigensolver, verbose, || {
            format!(
                "group {g}: Gram matrix {n}×{n} from {} parameters",
                self.members().len(),
                g = self.group,
                n = gram.dim(0).unwrap_or(0)
            )
        });
        Ok(gram)
    }

    /// `Σ_{p∈g} V_pᵀ U_p` `[C_v·N_v, C_u·N_u]` with this block's `V` and the
    /// block of `right` (`U`) on the same group (cached).
    pub fn cross(&self, right: Factor<'_>) -> Result<Tensor> {
        let mut grams = self.crosses(&[right])?;
        Ok(grams.pop().expect("one Gram matrix per right factor"))
    }

    /// [`Self::cross`] with each factor of `rights` (cached), computed layer
    /// by layer together, so that each slice of a weight factor too large to
    /// keep is formed once for all of them.
    pub fn crosses(&self, rights: &[Factor<'_>]) -> Result<Vec<Tensor>> {
        let key = |right: &Factor<'_>| (self.factor.id.0, right.id.0, self.group);
        let mut grams = self.factor.ext.grams.borrow_mut();
        let mut missing: Vec<Factor<'_>> = Vec::new();
        for right in rights {
            if !grams.contains_key(&key(right)) && !missing.iter().any(|m| m.id == right.id) {
                missing.push(*right);
            }
        }
        if !missing.is_empty() {
            let mut sums: Vec<Option<Tensor>> = vec![None; missing.len()];
            for (m, roles) in self.layers() {
                let us: Vec<&LayerFactor> = missing.iter().map(|r| r.layer(m)).collect();
                sums = self
                    .factor
                    .layer(m)
                    .cross_grams(&us, &roles, sums)?
                    .into_iter()
                    .map(Some)
                    .collect();
            }
            for (right, sum) in missing.iter().zip(sums) {
                let gram = sum.expect("groups are checked to be non-empty");
                grams.insert(key(right), gram);
            }
        }
        Ok(rights.iter().map(|r| grams[&key(r)].clone()).collect())
    }

    /// The Gram matrix as an operator (never formed for layers applied once
    /// per sample).
    pub fn operator(&self) -> Result<GramOperator> {
        let layers: Vec<(&LayerFactor, Vec<Role>)> = self
            .layers()
            .into_iter()
            .map(|(m, roles)| (self.factor.layer(m), roles))
            .collect();
        let columns = self.factor.ext.factors[self.factor.id.0].1.columns;
        GramOperator::new(&layers, columns, self.factor.samples())
    }

    /// `V_p · e` for every parameter `p` of the group, `e` `[K, C·N_g]`:
    /// `[K, *p.shape]` each.
    pub fn apply(&self, e: &Tensor) -> Result<Vec<Tensor>> {
        self.members()
            .iter()
            .map(|&m| Ok(self.factor.layer(m).apply(m.role, e)?))
            .collect()
    }

    /// The block, kept beyond the pass (its layers' inputs and signals,
    /// shared, not copied).
    pub fn keep(&self) -> KeptFactor {
        let layers: Vec<Member> = self.layers().into_iter().map(|(m, _)| m).collect();
        let members = self
            .members()
            .iter()
            .map(|m| {
                let layer = layers
                    .iter()
                    .position(|l| l.layer == m.layer)
                    .expect("every member's layer is one of the group's layers");
                (layer, m.role)
            })
            .collect();
        let layers = layers.into_iter().map(|m| self.factor.layer(m).clone());
        KeptFactor::new(layers.collect(), members)
    }

    fn members(&self) -> &'e [Member] {
        &self.factor.ext.members[self.group]
    }

    /// The group's parameters layer by layer (a member of the layer and the
    /// roles of the group's parameters in it), so weight and bias share work.
    fn layers(&self) -> Vec<(Member, Vec<Role>)> {
        let mut layers: Vec<(Member, Vec<Role>)> = Vec::new();
        for &m in self.members() {
            match layers.iter_mut().find(|(first, _)| first.layer == m.layer) {
                Some((_, roles)) => roles.push(m.role),
                None => layers.push((m, vec![m.role])),
            }
        }
        layers
    }
}
