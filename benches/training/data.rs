//! Training sets and seeded mini-batches of them.

use anyhow::{ensure, Result};
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Inputs `[n, …]` and targets: class indices `[n]` (u32) or values `[n, c]` (f32).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub inputs: Tensor,
    pub targets: Tensor,
}

impl Dataset {
    /// A data set; inputs and targets must have the same number of samples.
    pub fn new(inputs: Tensor, targets: Tensor) -> Result<Self> {
        let (n, m) = (inputs.dim(0)?, targets.dim(0)?);
        ensure!(n == m, "{n} inputs but {m} targets");
        ensure!(n > 0, "a data set needs samples");
        Ok(Self { inputs, targets })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.inputs.dims().first().copied().unwrap_or(0)
    }

    /// The samples at `indices`.
    pub fn select(&self, indices: &[u32]) -> Result<Self> {
        let index = Tensor::new(indices, self.inputs.device())?;
        Ok(Self {
            inputs: self.inputs.index_select(&index, 0)?,
            targets: self.targets.index_select(&index, 0)?,
        })
    }
}

/// Mini-batches of a fixed size drawn without replacement; each epoch is a
/// fresh shuffle, and an epoch's incomplete last batch is skipped so that all
/// batches have the same size. A batch of the whole set is the set itself.
pub struct Batches<'a> {
    data: &'a Dataset,
    size: usize,
    rng: StdRng,
    order: Vec<u32>,
    next: usize,
}

impl<'a> Batches<'a> {
    /// Batches of `size` samples of `data`, in an order fixed by `seed`.
    pub fn new(data: &'a Dataset, size: usize, seed: u64) -> Result<Self> {
        ensure!(
            (1..=data.len()).contains(&size),
            "batch size {size} not in 1..={}",
            data.len()
        );
        Ok(Self {
            data,
            size,
            rng: StdRng::seed_from_u64(seed),
            order: (0..data.len() as u32).collect(),
            next: data.len(), // shuffle before the first batch
        })
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<Dataset> {
        if self.size == self.data.len() {
            return Ok(self.data.clone());
        }
        if self.next + self.size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        let batch = self
            .data
            .select(&self.order[self.next..self.next + self.size])?;
        self.next += self.size;
        Ok(batch)
    }
}
