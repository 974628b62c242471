//! The two on-disk layouts of AutoencoderKL weights, and the renaming between them.

use std::collections::HashMap;

use candle_core::Tensor;

/// How the parameters of a weights file are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// diffusers: `encoder.down_blocks.N.resnets.M.*`, `mid_block.attentions.0.to_q`.
    Diffusers,
    /// The original latent-diffusion code: `encoder.down.N.block.M.*`, `mid.attn_1.q` (1×1 convs).
    LatentDiffusion,
}

impl Layout {
    /// Recognises the layout from the parameter names, if either fits.
    pub fn detect(tensors: &HashMap<String, Tensor>) -> Option<Self> {
        if tensors.keys().any(|k| k.starts_with("encoder.down_blocks.") || k.starts_with("decoder.up_blocks.")) {
            Some(Self::Diffusers)
        } else if tensors.keys().any(|k| k.starts_with("encoder.down.") || k.starts_with("decoder.up.")) {
            Some(Self::LatentDiffusion)
        } else {
            None
        }
    }
}

/// Renames latent-diffusion weights to diffusers names. Keys of the training loss (`loss.*`)
/// are dropped; 1×1-conv attention weights keep their shape (the attention block accepts both).
pub fn ldm_to_diffusers(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let levels = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("decoder.up.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    tensors.into_iter().filter(|(k, _)| !k.starts_with("loss.")).map(|(k, v)| (rename(&k, levels), v)).collect()
}

fn rename(key: &str, levels: usize) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len() + 2);
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        let next = parts.get(i + 1).copied();
        match (part, next) {
            ("down", Some(n)) => {
                out.push(format!("down_blocks.{n}"));
                i += 2;
                continue;
            }
            ("up", Some(n)) => {
                let index: usize = n.parse().unwrap_or(0);
                out.push(format!("up_blocks.{}", levels.saturating_sub(index + 1)));
                i += 2;
                continue;
            }
            ("block", Some(n)) => {
                out.push(format!("resnets.{n}"));
                i += 2;
                continue;
            }
            ("downsample", _) => out.push("downsamplers.0".into()),
            ("upsample", _) => out.push("upsamplers.0".into()),
            ("nin_shortcut", _) => out.push("conv_shortcut".into()),
            ("mid", _) => out.push("mid_block".into()),
            ("block_1", _) if out.last().is_some_and(|p| p == "mid_block") => out.push("resnets.0".into()),
            ("block_2", _) if out.last().is_some_and(|p| p == "mid_block") => out.push("resnets.1".into()),
            ("attn_1", _) => out.push("attentions.0".into()),
            ("norm", _) if out.last().is_some_and(|p| p == "attentions.0") => out.push("group_norm".into()),
            ("q", _) => out.push("to_q".into()),
            ("k", _) => out.push("to_k".into()),
            ("v", _) => out.push("to_v".into()),
            ("proj_out", _) => out.push("to_out.0".into()),
            ("norm_out", _) => out.push("conv_norm_out".into()),
            (other, _) => out.push(other.into()),
        }
        i += 1;
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::rename;

    #[test]
    fn renames_every_kind_of_key() {
        let cases = [
            ("encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
            ("encoder.down.0.downsample.conv.bias", "encoder.down_blocks.0.downsamplers.0.conv.bias"),
            ("decoder.up.0.block.2.norm1.weight", "decoder.up_blocks.3.resnets.2.norm1.weight"),
            ("decoder.up.3.upsample.conv.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight"),
            ("encoder.mid.block_2.conv1.weight", "encoder.mid_block.resnets.1.conv1.weight"),
            ("decoder.mid.attn_1.norm.bias", "decoder.mid_block.attentions.0.group_norm.bias"),
            ("decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight"),
            ("encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight"),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(rename(ldm, 4), diffusers, "{ldm}");
        }
    }
}
