//! The MaskDiT network: DiT encoder on the kept tokens, optional light decoder on all tokens,
//! wrapped in EDM preconditioning.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::block::DitBlock;
use crate::embed::{LabelEmbedder, PatchEmbed, TimestepEmbedder};
use crate::heads::ModulatedProjection;
use crate::mask::Mask;
use crate::ops::Pass;
use crate::precond::EdmCoefficients;
use crate::{Error, ModelConfig, Result};

/// Names of the parameters that are fixed tables, not trained.
pub const FROZEN_PARAMETERS: [&str; 2] = ["model.pos_embed", "model.decoder_pos_embed"];

/// The decoder that runs on all tokens after the mask tokens are put back.
#[derive(Debug, Clone)]
struct Decoder {
    layer: ModulatedProjection,
    pos_embed: Tensor,
    blocks: Vec<DitBlock>,
    mask_token: Option<Tensor>,
}

/// An EDM-preconditioned MaskDiT. Parameter names follow the official checkpoints
/// (`model.blocks.0.attn.qkv.weight`, ...).
#[derive(Debug, Clone)]
pub struct MaskDit {
    config: ModelConfig,
    dtype: DType,
    device: Device,
    x_embedder: PatchEmbed,
    pos_embed: Tensor,
    t_embedder: TimestepEmbedder,
    y_embedder: Option<LabelEmbedder>,
    blocks: Vec<DitBlock>,
    decoder: Option<Decoder>,
    final_layer: ModulatedProjection,
}

impl MaskDit {
    /// Builds the network from a var builder rooted at the state dict's top level (the
    /// `model.` prefix is added here). For training, see `maskdit_train::TrainableModel`.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let vb = vb.pp("model");
        let c = config;
        let width = c.hidden_size;
        let x_embedder = PatchEmbed::new(&vb.pp("x_embedder"), c.in_channels, width, c.patch_size)?;
        let pos_embed = vb.get_with_hints((1, c.num_patches(), width), "pos_embed", Init::Const(0.0))?;
        let t_embedder = TimestepEmbedder::new(&vb.pp("t_embedder"), width)?;
        let y_embedder = if c.num_classes > 0 {
            Some(LabelEmbedder::new(&vb.pp("y_embedder"), c.num_classes, width)?)
        } else {
            None
        };
        let blocks = (0..c.depth)
            .map(|i| DitBlock::new(&vb.pp(format!("blocks.{i}")), width, width, c.num_heads, c.mlp_ratio))
            .collect::<Result<Vec<_>>>()?;
        let decoder = if c.use_decoder {
            let dw = c.decoder_hidden_size;
            let layer = ModulatedProjection::new(&vb.pp("decoder_layer"), width, dw, width)?;
            let pos_embed = vb.get_with_hints((1, c.num_patches(), dw), "decoder_pos_embed", Init::Const(0.0))?;
            let blocks = (0..c.decoder_depth)
                .map(|i| {
                    DitBlock::new(&vb.pp(format!("decoder_blocks.{i}")), dw, width, c.decoder_num_heads, c.mlp_ratio)
                })
                .collect::<Result<Vec<_>>>()?;
            let mask_token = if c.has_mask_token() {
                Some(vb.get_with_hints((1, 1, dw), "mask_token", Init::Randn { mean: 0.0, stdev: 0.02 })?)
            } else {
                None
            };
            Some(Decoder { layer, pos_embed, blocks, mask_token })
        } else {
            None
        };
        let out_width = c.patch_size * c.patch_size * c.in_channels;
        let final_layer = ModulatedProjection::new(&vb.pp("final_layer"), c.final_hidden_size(), out_width, width)?;
        Ok(Self {
            config: config.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
            x_embedder,
            pos_embed,
            t_embedder,
            y_embedder,
            blocks,
            decoder,
            final_layer,
        })
    }

    /// Names and shapes of every parameter of `config`'s network, in state-dict order of
    /// construction, without allocating weights.
    pub fn parameter_shapes(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(Self::parameter_specs(config)?.into_iter().map(|(name, shape, _)| (name, shape)).collect())
    }

    /// Names, shapes and reference initialisations of every parameter, without allocating weights.
    pub fn parameter_specs(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>, Init)>> {
        let recorder = ShapeRecorder::default();
        {
            let backend: Box<dyn candle_nn::var_builder::SimpleBackend + '_> = Box::new(&recorder);
            let vb = VarBuilder::from_backend(backend, DType::F32, Device::Cpu);
            Self::new(config, vb)?;
        }
        Ok(recorder.specs.into_inner().unwrap_or_default())
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks the label rows, or makes null rows when `labels` is `None`.
    fn label_rows(&self, labels: Option<&Tensor>, batch: usize) -> Result<Option<Tensor>> {
        let classes = self.config.num_classes;
        match (labels, classes) {
            (None, 0) => Ok(None),
            // The official representation of "no labels": one-hot rows of width zero.
            (Some(y), 0) if y.dims() == [batch, 0] => Ok(None),
            (Some(y), 0) => Err(Error::Input(format!(
                "this model has no classes; give no labels, or rows of shape [{batch}, 0], not {:?}",
                y.dims()
            ))),
            (None, k) => Ok(Some(Tensor::zeros((batch, k), self.dtype, &self.device)?)),
            (Some(y), k) => {
                if y.dims() != [batch, k] {
                    return Err(Error::Input(format!(
                        "labels must be one-hot rows of shape [{batch}, {k}], got {:?}",
                        y.dims()
                    )));
                }
                Ok(Some(y.to_dtype(self.dtype)?))
            }
        }
    }

    /// Checks that `x` is `(N, C, H, W)` with the model's channels and size.
    fn check_input(&self, x: &Tensor) -> Result<usize> {
        let c = &self.config;
        match x.dims() {
            [n, ch, h, w] if *ch == c.in_channels && *h == c.input_size && *w == c.input_size => Ok(*n),
            dims => Err(Error::Input(format!(
                "expected input of shape [N, {}, {}, {}], got {dims:?}",
                c.in_channels, c.input_size, c.input_size
            ))),
        }
    }

    /// The raw network F(x_in, c_noise, y), optionally on the kept tokens of `mask`.
    fn network(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        labels: Option<&Tensor>,
        mask: Option<&Mask>,
        pass: Pass,
    ) -> Result<Tensor> {
        let mut h = self.x_embedder.forward(x, pass)?.broadcast_add(&self.pos_embed)?;
        if let Some(mask) = mask {
            h = mask.keep_tokens(&h)?;
        }
        let mut c = self.t_embedder.forward(c_noise, self.dtype, pass)?;
        if let (Some(embedder), Some(y)) = (&self.y_embedder, labels) {
            c = (c + embedder.forward(y, pass)?)?;
        }
        for block in &self.blocks {
            h = block.forward(&h, &c, pass)?;
        }
        if let Some(decoder) = &self.decoder {
            h = decoder.layer.forward(&h, &c, pass)?;
            if let Some(mask) = mask {
                let fill = match &decoder.mask_token {
                    Some(token) => token.clone(),
                    None => Tensor::zeros((1, 1, h.dim(2)?), h.dtype(), h.device())?,
                };
                h = mask.restore_tokens(&h, &fill)?;
            }
            h = h.broadcast_add(&decoder.pos_embed)?;
            for block in &decoder.blocks {
                h = block.forward(&h, &c, pass)?;
            }
        }
        h = self.final_layer.forward(&h, &c, pass)?;
        if let (None, Some(mask)) = (&self.decoder, mask) {
            let zeros = Tensor::zeros((1, 1, h.dim(2)?), h.dtype(), h.device())?;
            h = mask.restore_tokens(&h, &zeros)?;
        }
        self.unpatchify(&h)
    }

    /// `(N, L, p²·C)` → `(N, C, H, W)`.
    fn unpatchify(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (n, _, _) = x.dims3()?;
        let (g, p, ch) = (c.grid_size(), c.patch_size, c.in_channels);
        Ok(x.reshape((n, g, g, p, p, ch))?.permute((0, 5, 1, 3, 2, 4))?.reshape((n, ch, g * p, g * p))?)
    }

    /// The preconditioned denoiser around [`Self::network`].
    fn precondition(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        labels: Option<&Tensor>,
        mask: Option<&Mask>,
        pass: Pass,
    ) -> Result<Tensor> {
        let batch = self.check_input(x)?;
        let sigma = maskdit_sampler::per_sample_sigma(sigma, batch)?;
        let labels = self.label_rows(labels, batch)?;
        let k = EdmCoefficients::new(&sigma)?;
        let x32 = x.to_dtype(DType::F32)?;
        let x_in = x32.broadcast_mul(&k.c_in)?.to_dtype(self.dtype)?;
        let f = self.network(&x_in, &k.c_noise, labels.as_ref(), mask, pass)?.to_dtype(DType::F32)?;
        let d = (x32.broadcast_mul(&k.c_skip)? + f.broadcast_mul(&k.c_out)?)?;
        Ok(d.to_dtype(x.dtype())?)
    }

    /// Denoises `x` `(N, C, H, W)` at noise levels `sigma` (scalar or `(N,)`) for one-hot
    /// `labels` `(N, classes)` (`None`: null labels). An inference pass (nothing backpropagates) over all tokens.
    pub fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.precondition(x, sigma, labels, None, Pass::Inference)
    }

    /// Training forward (every operation backpropagates): the denoised images D(x; σ) `(N, C, H, W)`.
    /// With a mask the encoder sees only the kept tokens; at removed patches the output is the
    /// decoder's reconstruction (or the network's zero output without a decoder).
    pub fn denoise_train(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        labels: Option<&Tensor>,
        mask: Option<&Mask>,
    ) -> Result<Tensor> {
        self.precondition(x, sigma, labels, mask, Pass::Training)
    }
}

impl maskdit_sampler::Denoiser for MaskDit {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> maskdit_sampler::Result<Tensor> {
        MaskDit::denoise(self, x, sigma, labels).map_err(|e| maskdit_sampler::Error::Denoiser(Box::new(e)))
    }
}

/// A var-builder backend that records names and shapes and hands out unallocated zeros.
#[derive(Default)]
struct ShapeRecorder {
    specs: Mutex<Vec<(String, Vec<usize>, Init)>>,
}

impl candle_nn::var_builder::SimpleBackend for &ShapeRecorder {
    fn get(&self, s: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Ok(mut specs) = self.specs.lock() {
            specs.push((name.to_string(), s.dims().to_vec(), init));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder cannot provide `{name}` without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}
