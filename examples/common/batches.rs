//! Seeded mini-batches: the training split reshuffled every epoch.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::data::Split;

/// Draws mini-batches of a fixed size without replacement; each epoch is a
/// fresh shuffle, and the incomplete last batch of an epoch is skipped so that
/// every batch has the same size.
pub struct Batches<'a> {
    split: &'a Split,
    size: usize,
    rng: StdRng,
    order: Vec<u32>,
    next: usize,
}

impl<'a> Batches<'a> {
    /// Mini-batches of `size` images of `split`, in an order fixed by `seed`.
    pub fn new(split: &'a Split, size: usize, seed: u64) -> Result<Self> {
        anyhow::ensure!(
            (1..=split.len()).contains(&size),
            "batch size {size} not in 1..={}",
            split.len()
        );
        Ok(Self {
            split,
            size,
            rng: StdRng::seed_from_u64(seed),
            order: (0..split.len() as u32).collect(),
            next: split.len(), // shuffle before the first batch
        })
    }

    /// The next mini-batch.
    pub fn next_batch(&mut self) -> Result<Split> {
        if self.next + self.size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        let batch = self
            .split
            .select(&self.order[self.next..self.next + self.size])?;
        self.next += self.size;
        Ok(batch)
    }
}
