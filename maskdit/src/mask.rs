//! Token masks: which patches the encoder sees, and how to put the others back.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::{Error, Result};

/// A per-sample split of the `L` tokens into `K` kept and `L − K` removed ones (MAE convention).
#[derive(Debug, Clone)]
pub struct Mask {
    ids_keep: Tensor,
    ids_restore: Tensor,
    mask: Tensor,
}

/// Number of tokens kept out of `length` at `ratio` removed (the reference truncates).
pub fn kept_tokens(length: usize, ratio: f64) -> usize {
    (length as f64 * (1.0 - ratio)) as usize
}

impl Mask {
    /// Draws a mask for each of `batch` samples: `ratio` of the `length` tokens removed, chosen
    /// uniformly at random.
    pub fn random<R: Rng + ?Sized>(
        batch: usize,
        length: usize,
        ratio: f64,
        rng: &mut R,
        device: &Device,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&ratio) {
            return Err(Error::Input(format!("mask ratio {ratio} must lie in [0, 1)")));
        }
        let mut restore = Vec::with_capacity(batch * length);
        for _ in 0..batch {
            restore.extend(Self::random_order(length, rng));
        }
        let ids_restore = Tensor::from_vec(restore, (batch, length), device)?;
        Self::from_restore(&ids_restore, kept_tokens(length, ratio))
    }

    /// One row of `ids_restore` for [`Mask::from_restore`]: the tokens ranked by uniform noise
    /// drawn from `rng` (the official `argsort(rand)`), token `j`'s rank at `j`.
    pub fn random_order<R: Rng + ?Sized>(length: usize, rng: &mut R) -> Vec<u32> {
        let noise: Vec<f32> = (0..length).map(|_| rng.random::<f32>()).collect();
        let mut shuffle: Vec<u32> = (0..length as u32).collect();
        shuffle.sort_by(|&a, &b| noise[a as usize].total_cmp(&noise[b as usize]));
        let mut row = vec![0u32; length];
        for (rank, &token) in shuffle.iter().enumerate() {
            row[token as usize] = rank as u32;
        }
        row
    }

    /// Builds the mask from `ids_restore` `(N, L)`: token `j` sits at rank `ids_restore[j]` of the
    /// shuffle, and the `keep` lowest ranks are kept.
    pub fn from_restore(ids_restore: &Tensor, keep: usize) -> Result<Self> {
        let (batch, length) = ids_restore.dims2()?;
        let device = ids_restore.device().clone();
        let restore = ids_restore.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        let mut keep_ids = vec![0u32; batch * keep];
        let mut binary = vec![0f32; batch * length];
        for (n, row) in restore.iter().enumerate() {
            let mut seen = vec![false; length];
            for (token, &rank) in row.iter().enumerate() {
                let rank = usize::try_from(rank)
                    .ok()
                    .filter(|&r| r < length && !seen[r])
                    .ok_or_else(|| Error::Input(format!("ids_restore row {n} is not a permutation of 0..{length}")))?;
                seen[rank] = true;
                if rank < keep {
                    keep_ids[n * keep + rank] = token as u32;
                } else {
                    binary[n * length + token] = 1.0;
                }
            }
        }
        Ok(Self {
            ids_keep: Tensor::from_vec(keep_ids, (batch, keep), &device)?,
            ids_restore: ids_restore.to_dtype(DType::U32)?,
            mask: Tensor::from_vec(binary, (batch, length), &device)?,
        })
    }

    /// Builds the mask from explicit `ids_keep` `(N, K)` and `ids_restore` `(N, L)`, checking that
    /// they agree.
    pub fn from_ids(ids_keep: &Tensor, ids_restore: &Tensor) -> Result<Self> {
        let (batch, keep) = ids_keep.dims2()?;
        if ids_restore.dim(0)? != batch {
            return Err(Error::Input(format!("ids_keep has {batch} rows but ids_restore has {}", ids_restore.dim(0)?)));
        }
        let mask = Self::from_restore(ids_restore, keep)?;
        let given = ids_keep.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        let derived = mask.ids_keep.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        if given != derived {
            return Err(Error::Input("ids_keep does not match the kept ranks of ids_restore".into()));
        }
        Ok(mask)
    }

    /// Indices of the kept tokens, `(N, K)` u32, in shuffle order.
    pub fn ids_keep(&self) -> &Tensor {
        &self.ids_keep
    }

    /// Rank of each token in the shuffle, `(N, L)` u32.
    pub fn ids_restore(&self) -> &Tensor {
        &self.ids_restore
    }

    /// Binary mask `(N, L)` f32: 1 where the token is removed, 0 where kept.
    pub fn binary(&self) -> &Tensor {
        &self.mask
    }

    /// Number of kept tokens per sample.
    pub fn kept(&self) -> usize {
        self.ids_keep.dim(1).unwrap_or(0)
    }

    /// Gathers the kept tokens: `(N, L, D)` → `(N, K, D)`.
    pub fn keep_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let (n, _, d) = x.dims3()?;
        let index = self.ids_keep.unsqueeze(2)?.broadcast_as((n, self.kept(), d))?.contiguous()?;
        Ok(x.contiguous()?.gather(&index, 1)?)
    }

    /// Puts `fill` `(1, 1, D)` back at the removed positions: `(N, K, D)` → `(N, L, D)`.
    pub fn restore_tokens(&self, x: &Tensor, fill: &Tensor) -> Result<Tensor> {
        let (n, k, d) = x.dims3()?;
        let length = self.ids_restore.dim(1)?;
        let fill = fill.to_dtype(x.dtype())?.broadcast_as((n, length - k, d))?;
        let full = Tensor::cat(&[x, &fill.contiguous()?], 1)?.contiguous()?;
        let index = self.ids_restore.unsqueeze(2)?.broadcast_as((n, length, d))?.contiguous()?;
        Ok(full.gather(&index, 1)?)
    }
}
