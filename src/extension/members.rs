//! Which tracked layer, and which of its parameters, each group parameter is.

use std::collections::HashMap;

use candle_core::Tensor;

use super::factor::TrackedLayer;
use super::layer::Role;
use crate::error::{Error, Result};
use crate::group::ParamGroup;

/// A parameter of a group: which layer, weight or bias.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub layer: usize,
    pub role: Role,
}

/// Maps every group parameter to the tracked layer (and role) that uses it.
pub(super) fn resolve(
    layers: &[TrackedLayer<'_>],
    groups: &[ParamGroup],
) -> Result<Vec<Vec<Member>>> {
    let mut owner = HashMap::new();
    groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            if group.params().is_empty() {
                return Err(Error::EmptyGroup(g));
            }
            group
                .params()
                .iter()
                .enumerate()
                .map(|(p, param)| {
                    if let Some(first) = owner.insert(param.id(), g) {
                        return Err(Error::ParamInTwoGroups {
                            param: p,
                            shape: param.dims().to_vec(),
                            first,
                            second: g,
                        });
                    }
                    layers
                        .iter()
                        .enumerate()
                        .find_map(|(layer, l)| {
                            if l.weight().id() == param.id() {
                                Some(Member {
                                    layer,
                                    role: Role::Weight,
                                })
                            } else if l.bias().map(Tensor::id) == Some(param.id()) {
                                Some(Member {
                                    layer,
                                    role: Role::Bias,
                                })
                            } else {
                                None
                            }
                        })
                        .ok_or_else(|| Error::ParamNotRecorded {
                            group: g,
                            param: p,
                            shape: param.dims().to_vec(),
                        })
                })
                .collect()
        })
        .collect()
}
