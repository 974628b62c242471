//! The FID Inception-v3: TensorFlow's 2015-12-05 Inception as pytorch-fid ports it
//! (torchvision's `Inception3` layout and names, with the FID patches to the pooling branches).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

use crate::input::InputMode;
use crate::{Error, Result};

/// Side of the square images the network sees.
pub const INPUT_SIDE: usize = 299;
/// Width of the pooled features FID uses.
pub const FEATURE_DIMS: usize = 2048;
/// Number of logits (class 0 is an unused background class; 1..=1000 are ImageNet's).
pub const LOGITS: usize = 1008;
/// Channels of the spatial features sFID uses (the first of the 192 they are taken from).
pub const SPATIAL_CHANNELS: usize = 7;
/// Side of the grid the spatial features come from.
pub const SPATIAL_SIDE: usize = 17;
/// Width of the spatial features sFID uses: 17·17 positions × 7 channels.
pub const SPATIAL_DIMS: usize = SPATIAL_SIDE * SPATIAL_SIDE * SPATIAL_CHANNELS;
/// Which of the four InceptionC blocks (Mixed_6b–6e) gives the spatial features: Mixed_6d.
const SPATIAL_BLOCK: usize = 2;
/// BatchNorm epsilon of every convolution block.
const BATCH_NORM_EPS: f64 = 1e-3;

/// What one pass of the network gives.
#[derive(Debug, Clone)]
pub struct InceptionOutput {
    /// `(N, 2048)` global average pool after Mixed_7c: the FID features.
    pub pool: Tensor,
    /// `(N, 1008)` logits of the classifier (for the Inception Score).
    pub logits: Tensor,
    /// `(N, 2023)` spatial features (for sFID, as ADM's evaluator takes them): the first 7
    /// channels of Mixed_6d's 1×1 branch (after batch norm and ReLU), each of the 17×17
    /// positions' 7 values in turn, row by row (channel-last, as TensorFlow lays them out).
    ///
    /// ADM reads the TensorFlow graph's `mixed_6/conv`. The graph's blocks `mixed`, `mixed_1`, …,
    /// `mixed_10` are torchvision's Mixed_5b, 5c, 5d, 6a, 6b, 6c, 6d, 6e, 7a, 7b, 7c, so
    /// `mixed_6` is Mixed_6d; its `conv` is the block's first convolution, the 768 → 192 1×1
    /// branch (`branch1x1`), and every convolution of the graph ends in batch norm and ReLU. The
    /// TorchScript port that keeps the graph's names (StyleGAN's `inception-2015-12-05`) takes
    /// sFID features from `layers.mixed_6.conv` after running `mixed` … `mixed_5`, which agrees.
    pub spatial: Tensor,
    /// Spatial means `(N, C)` after the first max pool, the second max pool and Mixed_6e, to
    /// locate a mismatch.
    pub block_means: [Tensor; 3],
}

/// Reads a tensor of `tensors` by name, checking its shape.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::Weights(format!("tensor `{name}` is missing: not the FID Inception weights?")))?;
        if tensor.dims() != shape {
            return Err(Error::Weights(format!("tensor `{name}` has shape {:?}, expected {shape:?}", tensor.dims())));
        }
        Ok(tensor.to_dtype(DType::F32)?.to_device(self.device)?)
    }
}

/// Convolution without bias, BatchNorm with its running statistics, ReLU (`BasicConv2d`).
#[derive(Debug, Clone)]
struct ConvBlock {
    conv: Conv2d,
    /// Explicit zero padding (height, width) before the convolution: candle pads both axes alike.
    padding: (usize, usize),
    /// Per-channel `weight / √(var + eps)` and `bias − mean · scale`, shaped `(1, C, 1, 1)`.
    scale: Tensor,
    shift: Tensor,
}

impl ConvBlock {
    fn new(
        weights: &Weights,
        name: &str,
        channels: (usize, usize),
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) -> Result<Self> {
        let (cin, cout) = channels;
        let weight = weights.get(&format!("{name}.conv.weight"), &[cout, cin, kernel.0, kernel.1])?;
        let bn = |field: &str| weights.get(&format!("{name}.bn.{field}"), &[cout]);
        let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
        let scale = gamma.broadcast_div(&(var + BATCH_NORM_EPS)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        let config = Conv2dConfig { stride, ..Default::default() };
        Ok(Self {
            conv: Conv2d::new(weight, None, config),
            padding,
            scale: scale.reshape((1, cout, 1, 1))?,
            shift: shift.reshape((1, cout, 1, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ph, pw) = self.padding;
        let x = if ph > 0 { x.pad_with_zeros(2, ph, ph)? } else { x.clone() };
        let x = if pw > 0 { x.pad_with_zeros(3, pw, pw)? } else { x };
        let y = self.conv.forward(&x)?;
        Ok(y.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?.relu()?)
    }
}

/// 3×3 max pool, stride 2, no padding.
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

/// 3×3 average pool, stride 1, padding 1, averaging only the positions inside the image
/// (`count_include_pad=False`).
fn avg_pool_3x3_valid(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sums = (x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.avg_pool2d_with_stride(3, 1)? * 9.0)?;
    // How many of the 9 window positions lie inside the image: 4 in corners, 6 on edges, else 9.
    let inside = |i: usize, n: usize| {
        if n == 1 {
            1.0
        } else if i == 0 || i == n - 1 {
            2.0
        } else {
            3.0
        }
    };
    let counts: Vec<f32> = (0..h).flat_map(|i| (0..w).map(move |j| inside(i, h) * inside(j, w))).collect();
    let counts = Tensor::from_vec(counts, (1, 1, h, w), x.device())?;
    Ok(sums.broadcast_div(&counts)?)
}

/// 3×3 max pool, stride 1, padding 1. Its inputs are ReLU outputs (≥ 0), so zero padding
/// cannot win a window that holds an image position: the same as PyTorch's −∞ padding.
fn max_pool_3x3_s1_nonnegative(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 1)?)
}

fn conv(w: &Weights, name: &str, cin: usize, cout: usize, k: usize) -> Result<ConvBlock> {
    ConvBlock::new(w, name, (cin, cout), (k, k), 1, (k / 2, k / 2))
}

fn conv_strided(w: &Weights, name: &str, cin: usize, cout: usize) -> Result<ConvBlock> {
    ConvBlock::new(w, name, (cin, cout), (3, 3), 2, (0, 0))
}

/// A 1×n convolution padded along the width.
fn conv_row(w: &Weights, name: &str, cin: usize, cout: usize, n: usize) -> Result<ConvBlock> {
    ConvBlock::new(w, name, (cin, cout), (1, n), 1, (0, n / 2))
}

/// An n×1 convolution padded along the height.
fn conv_column(w: &Weights, name: &str, cin: usize, cout: usize, n: usize) -> Result<ConvBlock> {
    ConvBlock::new(w, name, (cin, cout), (n, 1), 1, (n / 2, 0))
}

fn chain(blocks: &[ConvBlock], x: &Tensor) -> Result<Tensor> {
    blocks.iter().try_fold(x.clone(), |x, b| b.forward(&x))
}

/// InceptionA (Mixed_5b–5d).
#[derive(Debug, Clone)]
struct BlockA {
    branch1x1: ConvBlock,
    branch5x5: [ConvBlock; 2],
    branch3x3dbl: [ConvBlock; 3],
    branch_pool: ConvBlock,
}

impl BlockA {
    fn new(w: &Weights, name: &str, cin: usize, pool_features: usize) -> Result<Self> {
        let p = |b: &str| format!("{name}.{b}");
        Ok(Self {
            branch1x1: conv(w, &p("branch1x1"), cin, 64, 1)?,
            branch5x5: [conv(w, &p("branch5x5_1"), cin, 48, 1)?, conv(w, &p("branch5x5_2"), 48, 64, 5)?],
            branch3x3dbl: [
                conv(w, &p("branch3x3dbl_1"), cin, 64, 1)?,
                conv(w, &p("branch3x3dbl_2"), 64, 96, 3)?,
                conv(w, &p("branch3x3dbl_3"), 96, 96, 3)?,
            ],
            branch_pool: conv(w, &p("branch_pool"), cin, pool_features, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = [
            self.branch1x1.forward(x)?,
            chain(&self.branch5x5, x)?,
            chain(&self.branch3x3dbl, x)?,
            self.branch_pool.forward(&avg_pool_3x3_valid(x)?)?,
        ];
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// InceptionB (Mixed_6a): the grid reduction 35 → 17.
#[derive(Debug, Clone)]
struct BlockB {
    branch3x3: ConvBlock,
    branch3x3dbl: [ConvBlock; 3],
}

impl BlockB {
    fn new(w: &Weights, name: &str, cin: usize) -> Result<Self> {
        let p = |b: &str| format!("{name}.{b}");
        Ok(Self {
            branch3x3: conv_strided(w, &p("branch3x3"), cin, 384)?,
            branch3x3dbl: [
                conv(w, &p("branch3x3dbl_1"), cin, 64, 1)?,
                conv(w, &p("branch3x3dbl_2"), 64, 96, 3)?,
                conv_strided(w, &p("branch3x3dbl_3"), 96, 96)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = [self.branch3x3.forward(x)?, chain(&self.branch3x3dbl, x)?, max_pool_3x3_s2(x)?];
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// InceptionC (Mixed_6b–6e): factorised 7×7 convolutions.
#[derive(Debug, Clone)]
struct BlockC {
    branch1x1: ConvBlock,
    branch7x7: [ConvBlock; 3],
    branch7x7dbl: [ConvBlock; 5],
    branch_pool: ConvBlock,
}

impl BlockC {
    fn new(w: &Weights, name: &str, c7: usize) -> Result<Self> {
        let p = |b: &str| format!("{name}.{b}");
        const CIN: usize = 768;
        Ok(Self {
            branch1x1: conv(w, &p("branch1x1"), CIN, 192, 1)?,
            branch7x7: [
                conv(w, &p("branch7x7_1"), CIN, c7, 1)?,
                conv_row(w, &p("branch7x7_2"), c7, c7, 7)?,
                conv_column(w, &p("branch7x7_3"), c7, 192, 7)?,
            ],
            branch7x7dbl: [
                conv(w, &p("branch7x7dbl_1"), CIN, c7, 1)?,
                conv_column(w, &p("branch7x7dbl_2"), c7, c7, 7)?,
                conv_row(w, &p("branch7x7dbl_3"), c7, c7, 7)?,
                conv_column(w, &p("branch7x7dbl_4"), c7, c7, 7)?,
                conv_row(w, &p("branch7x7dbl_5"), c7, 192, 7)?,
            ],
            branch_pool: conv(w, &p("branch_pool"), CIN, 192, 1)?,
        })
    }

    /// The block's output and its 1×1 branch's.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let branch1x1 = self.branch1x1.forward(x)?;
        let parts = [
            branch1x1.clone(),
            chain(&self.branch7x7, x)?,
            chain(&self.branch7x7dbl, x)?,
            self.branch_pool.forward(&avg_pool_3x3_valid(x)?)?,
        ];
        Ok((Tensor::cat(&parts, 1)?, branch1x1))
    }
}

/// InceptionD (Mixed_7a): the grid reduction 17 → 8.
#[derive(Debug, Clone)]
struct BlockD {
    branch3x3: [ConvBlock; 2],
    branch7x7x3: [ConvBlock; 4],
}

impl BlockD {
    fn new(w: &Weights, name: &str, cin: usize) -> Result<Self> {
        let p = |b: &str| format!("{name}.{b}");
        Ok(Self {
            branch3x3: [conv(w, &p("branch3x3_1"), cin, 192, 1)?, conv_strided(w, &p("branch3x3_2"), 192, 320)?],
            branch7x7x3: [
                conv(w, &p("branch7x7x3_1"), cin, 192, 1)?,
                conv_row(w, &p("branch7x7x3_2"), 192, 192, 7)?,
                conv_column(w, &p("branch7x7x3_3"), 192, 192, 7)?,
                conv_strided(w, &p("branch7x7x3_4"), 192, 192)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = [chain(&self.branch3x3, x)?, chain(&self.branch7x7x3, x)?, max_pool_3x3_s2(x)?];
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// The pooling of an InceptionE block's last branch: FID's patch averages over the image
/// positions only in Mixed_7b, and takes the maximum in Mixed_7c.
#[derive(Debug, Clone, Copy)]
enum PoolE {
    Average,
    Max,
}

/// InceptionE (Mixed_7b, 7c): expanded filter banks.
#[derive(Debug, Clone)]
struct BlockE {
    branch1x1: ConvBlock,
    branch3x3_1: ConvBlock,
    branch3x3_2: [ConvBlock; 2],
    branch3x3dbl: [ConvBlock; 2],
    branch3x3dbl_3: [ConvBlock; 2],
    branch_pool: ConvBlock,
    pool: PoolE,
}

impl BlockE {
    fn new(w: &Weights, name: &str, cin: usize, pool: PoolE) -> Result<Self> {
        let p = |b: &str| format!("{name}.{b}");
        Ok(Self {
            branch1x1: conv(w, &p("branch1x1"), cin, 320, 1)?,
            branch3x3_1: conv(w, &p("branch3x3_1"), cin, 384, 1)?,
            branch3x3_2: [
                conv_row(w, &p("branch3x3_2a"), 384, 384, 3)?,
                conv_column(w, &p("branch3x3_2b"), 384, 384, 3)?,
            ],
            branch3x3dbl: [conv(w, &p("branch3x3dbl_1"), cin, 448, 1)?, conv(w, &p("branch3x3dbl_2"), 448, 384, 3)?],
            branch3x3dbl_3: [
                conv_row(w, &p("branch3x3dbl_3a"), 384, 384, 3)?,
                conv_column(w, &p("branch3x3dbl_3b"), 384, 384, 3)?,
            ],
            branch_pool: conv(w, &p("branch_pool"), cin, 192, 1)?,
            pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3_1.forward(x)?;
        let b3 = Tensor::cat(&[self.branch3x3_2[0].forward(&b3)?, self.branch3x3_2[1].forward(&b3)?], 1)?;
        let bd = chain(&self.branch3x3dbl, x)?;
        let bd = Tensor::cat(&[self.branch3x3dbl_3[0].forward(&bd)?, self.branch3x3dbl_3[1].forward(&bd)?], 1)?;
        let pooled = match self.pool {
            PoolE::Average => avg_pool_3x3_valid(x)?,
            PoolE::Max => max_pool_3x3_s1_nonnegative(x)?,
        };
        let parts = [self.branch1x1.forward(x)?, b3, bd, self.branch_pool.forward(&pooled)?];
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// The FID Inception-v3 network (inference only, f32).
#[derive(Debug, Clone)]
pub struct FidInception {
    stem1: [ConvBlock; 3],
    stem2: [ConvBlock; 2],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7: [BlockE; 2],
    fc: Linear,
    input: InputMode,
    device: Device,
}

impl FidInception {
    /// Builds the network from tensors named as in pytorch-fid's state dict
    /// (`pt_inception-2015-12-05-6726825d.pth`); every tensor's shape is checked.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let w = Weights { tensors, device };
        Ok(Self {
            stem1: [
                ConvBlock::new(&w, "Conv2d_1a_3x3", (3, 32), (3, 3), 2, (0, 0))?,
                ConvBlock::new(&w, "Conv2d_2a_3x3", (32, 32), (3, 3), 1, (0, 0))?,
                conv(&w, "Conv2d_2b_3x3", 32, 64, 3)?,
            ],
            stem2: [
                conv(&w, "Conv2d_3b_1x1", 64, 80, 1)?,
                ConvBlock::new(&w, "Conv2d_4a_3x3", (80, 192), (3, 3), 1, (0, 0))?,
            ],
            mixed_5: [
                BlockA::new(&w, "Mixed_5b", 192, 32)?,
                BlockA::new(&w, "Mixed_5c", 256, 64)?,
                BlockA::new(&w, "Mixed_5d", 288, 64)?,
            ],
            mixed_6a: BlockB::new(&w, "Mixed_6a", 288)?,
            mixed_6: [
                BlockC::new(&w, "Mixed_6b", 128)?,
                BlockC::new(&w, "Mixed_6c", 160)?,
                BlockC::new(&w, "Mixed_6d", 160)?,
                BlockC::new(&w, "Mixed_6e", 192)?,
            ],
            mixed_7a: BlockD::new(&w, "Mixed_7a", 768)?,
            mixed_7: [
                BlockE::new(&w, "Mixed_7b", 1280, PoolE::Average)?,
                BlockE::new(&w, "Mixed_7c", 2048, PoolE::Max)?,
            ],
            fc: Linear::new(w.get("fc.weight", &[LOGITS, FEATURE_DIMS])?, Some(w.get("fc.bias", &[LOGITS])?)),
            input: InputMode::default(),
            device: device.clone(),
        })
    }

    /// Loads the weights from a safetensors file or a PyTorch file (pytorch-fid's legacy
    /// `.pth` included).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = maskdit_io::read_tensors(path, "state_dict", |name| Some(name.to_string()))?;
        Self::from_tensors(&tensors, device)
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network taking its images as `input` says (default: pytorch-fid's way).
    pub fn with_input_mode(mut self, input: InputMode) -> Self {
        self.input = input;
        self
    }

    /// How images become the network's input.
    pub fn input_mode(&self) -> InputMode {
        self.input
    }

    /// The classifier's weight, `(1008, 2048)`.
    pub(crate) fn classifier_weight(&self) -> &Tensor {
        self.fc.weight()
    }

    /// Runs the network on `images`, `(N, 3, 299, 299)` f32 in [0, 1] (see
    /// [`InputMode::prepare`]); the `2x − 1` scaling is applied here.
    pub fn forward(&self, images: &Tensor) -> Result<InceptionOutput> {
        let (_, c, h, w) = images.dims4()?;
        if (c, h, w) != (3, INPUT_SIDE, INPUT_SIDE) {
            return Err(Error::Input(format!(
                "the network takes (N, 3, {INPUT_SIDE}, {INPUT_SIDE}) images, not {:?}",
                images.dims()
            )));
        }
        let spatial_mean = |x: &Tensor| -> Result<Tensor> { Ok(x.mean(D::Minus1)?.mean(D::Minus1)?) };
        let x = ((images.to_device(&self.device)?.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
        let x = max_pool_3x3_s2(&chain(&self.stem1, &x)?)?;
        let block0 = spatial_mean(&x)?;
        let x = max_pool_3x3_s2(&chain(&self.stem2, &x)?)?;
        let block1 = spatial_mean(&x)?;
        let x = self.mixed_5.iter().try_fold(x, |x, b| b.forward(&x))?;
        let mut x = self.mixed_6a.forward(&x)?;
        let mut spatial = None;
        for (i, block) in self.mixed_6.iter().enumerate() {
            let (out, branch1x1) = block.forward(&x)?;
            if i == SPATIAL_BLOCK {
                let first = branch1x1.narrow(1, 0, SPATIAL_CHANNELS)?.permute((0, 2, 3, 1))?;
                spatial = Some(first.flatten_from(1)?.contiguous()?);
            }
            x = out;
        }
        let spatial = spatial.ok_or_else(|| Error::Weights("no Mixed_6d block".into()))?;
        let block2 = spatial_mean(&x)?;
        let x = self.mixed_7a.forward(&x)?;
        let x = self.mixed_7.iter().try_fold(x, |x, b| b.forward(&x))?;
        let pool = spatial_mean(&x)?;
        let logits = self.fc.forward(&pool)?;
        Ok(InceptionOutput { pool, logits, spatial, block_means: [block0, block1, block2] })
    }
}
