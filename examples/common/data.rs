//! The 8×8 handwritten digits shipped in `data/digits.bin`, split once with a fixed seed.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// 1,797 records of 65 bytes: 64 pixels (0..=16, row-major) and the label.
const RAW: &[u8] = include_bytes!("../../data/digits.bin");
const RECORD: usize = 65;
const PIXELS: usize = 64;
/// Images in the training split; the other 297 form the test split.
pub const TRAIN: usize = 1500;
/// The seed of the one shuffle that decides the split.
const SPLIT_SEED: u64 = 0;

/// Images `[n, 64]` (f32, scaled to `[0, 1]`; other inputs `[n, features]` where
/// an example makes its own) and labels `[n]` (u32).
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.dims1().unwrap_or(0)
    }

    /// The images and labels at `indices`.
    pub fn select(&self, indices: &[u32]) -> Result<Split> {
        let index = Tensor::new(indices, self.images.device())?;
        Ok(Split {
            images: self.images.index_select(&index, 0)?,
            labels: self.labels.index_select(&index, 0)?,
        })
    }
}

/// The fixed train/test split of the digits.
#[derive(Debug, Clone)]
pub struct Digits {
    pub train: Split,
    pub test: Split,
}

impl Digits {
    /// Decodes the bundled data and splits it: a seeded shuffle, then the
    /// first [`TRAIN`] images for training and the rest for testing.
    pub fn load(dev: &Device) -> Result<Self> {
        ensure!(
            RAW.len().is_multiple_of(RECORD),
            "data/digits.bin holds {} bytes, not a multiple of {RECORD}",
            RAW.len()
        );
        let records: Vec<&[u8]> = RAW.chunks_exact(RECORD).collect();
        ensure!(
            records.len() > TRAIN,
            "data/digits.bin holds {} images, fewer than the {TRAIN} for training",
            records.len()
        );
        if let Some(bad) = records
            .iter()
            .position(|r| r[..PIXELS].iter().any(|&p| p > 16) || r[PIXELS] > 9)
        {
            anyhow::bail!("data/digits.bin: record {bad} has a pixel above 16 or a label above 9");
        }
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(SPLIT_SEED));
        let (train, test) = order.split_at(TRAIN);
        let split = |indices: &[usize]| -> Result<Split> {
            let pixels: Vec<f32> = indices
                .iter()
                .flat_map(|&i| records[i][..PIXELS].iter().map(|&p| f32::from(p) / 16.0))
                .collect();
            let labels: Vec<u32> = indices
                .iter()
                .map(|&i| u32::from(records[i][PIXELS]))
                .collect();
            Ok(Split {
                images: Tensor::from_vec(pixels, (indices.len(), PIXELS), dev)?,
                labels: Tensor::from_vec(labels, indices.len(), dev)?,
            })
        };
        Ok(Self {
            train: split(train)?,
            test: split(test)?,
        })
    }
}
