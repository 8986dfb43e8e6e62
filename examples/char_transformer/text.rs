//! The corpus: characters as ids, and random windows of it as mini-batches.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Chapters 1–9 of Moby-Dick (see `data/README.md`).
const TEXT: &str = include_str!("../../data/moby_dick.txt");

/// The text as ids into its sorted alphabet.
pub struct Corpus {
    pub alphabet: Vec<char>,
    pub ids: Vec<u32>,
}

impl Corpus {
    pub fn load() -> Self {
        let mut alphabet: Vec<char> = TEXT.chars().collect();
        alphabet.sort_unstable();
        alphabet.dedup();
        let ids = TEXT
            .chars()
            .map(|c| alphabet.binary_search(&c).unwrap_or(0) as u32)
            .collect();
        Self { alphabet, ids }
    }

    pub fn vocab(&self) -> usize {
        self.alphabet.len()
    }

    /// `(inputs, targets)` `[N, T]` of `n` windows starting at `starts`:
    /// the targets are the inputs shifted by one character.
    pub fn windows(&self, starts: &[usize], t: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        let take = |offset: usize| -> Vec<u32> {
            starts
                .iter()
                .flat_map(|&s| self.ids[s + offset..s + offset + t].iter().copied())
                .collect()
        };
        let n = starts.len();
        Ok((
            Tensor::from_vec(take(0), (n, t), dev)?,
            Tensor::from_vec(take(1), (n, t), dev)?,
        ))
    }

    /// Ids of `text` (characters outside the alphabet are refused).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                let i = self.alphabet.binary_search(&c).ok();
                i.map(|i| i as u32)
                    .with_context(|| format!("{c:?} is not in the text"))
            })
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.alphabet[i as usize]).collect()
    }
}

/// Random windows of a corpus, `batch` of `t` characters each, from `seed`.
pub struct Batches<'c> {
    corpus: &'c Corpus,
    batch: usize,
    t: usize,
    rng: StdRng,
}

impl<'c> Batches<'c> {
    pub fn new(corpus: &'c Corpus, batch: usize, t: usize, seed: u64) -> Self {
        Self {
            corpus,
            batch,
            t,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_batch(&mut self, dev: &Device) -> Result<(Tensor, Tensor)> {
        let last = self.corpus.ids.len() - self.t - 1;
        let starts: Vec<usize> = (0..self.batch)
            .map(|_| self.rng.random_range(0..last))
            .collect();
        self.corpus.windows(&starts, self.t, dev)
    }
}
