//! Where a Llama-family model's tensors come from, by their GGUF names: a GGUF file, or a Hugging
//! Face folder whose names map onto them (`model.layers.N.self_attn.q_proj.weight` is
//! `blk.N.attn_q.weight`). Matrices come back as host weights in their stored format (or
//! converted to the chosen quantization), vectors as f32.

use std::path::Path;

use half::{bf16, f16};
use kiln_kernels::HostWeights;
use safetensors::Dtype;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::gguf_weights::{host_matrix, vector_values};
use crate::hf_folder::{HfFolder, HfTensor};
use crate::quantize::Quant;

pub trait WeightSource {
    /// The file or folder, for errors.
    fn path(&self) -> &Path;
    /// Whether the tensor of this GGUF name exists.
    fn has(&self, name: &str) -> bool;
    /// The `[n, k]` matrix `name` (GGUF dims `[k, n]`, Hugging Face shape `[n, k]`).
    fn matrix(&self, name: &str, n: usize, k: usize, quant: Quant) -> Result<HostWeights>;
    /// The vector `name` of `n` values as f32.
    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>>;
}

impl WeightSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn has(&self, name: &str) -> bool {
        self.has_tensor(name)
    }

    fn matrix(&self, name: &str, n: usize, k: usize, quant: Quant) -> Result<HostWeights> {
        host_matrix(self, name, n, k, quant)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        vector_values(self, name, n)
    }
}

/// The Hugging Face (transformers Llama / Qwen2 / Qwen3) name of a GGUF tensor name.
pub fn hf_name(gguf: &str) -> String {
    let (base, suffix) = gguf.rsplit_once('.').unwrap_or((gguf, ""));
    let top = match base {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(top) = top {
        return format!("{top}.{suffix}");
    }
    let Some((layer, part)) = base
        .strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return gguf.to_string();
    };
    let part = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => other,
    };
    format!("model.layers.{layer}.{part}.{suffix}")
}

impl HfFolder {
    /// `t` checked against `shape`, its bytes and the weight format they are.
    fn typed<'a>(&self, name: &str, t: &HfTensor<'a>, shape: &[usize]) -> Result<&'a [u8]> {
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                path: t.path.to_path_buf(),
                tensor: name.into(),
                expected: shape.iter().map(|&d| d as u64).collect(),
                found: t.shape.iter().map(|&d| d as u64).collect(),
            });
        }
        Ok(t.data)
    }

    fn unsupported(name: &str, t: &HfTensor<'_>) -> ModelError {
        ModelError::UnsupportedTensorType {
            path: t.path.to_path_buf(),
            tensor: name.into(),
            ggml_type: format!("safetensors {:?}", t.dtype),
        }
    }
}

impl WeightSource for HfFolder {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn has(&self, name: &str) -> bool {
        HfFolder::has(self, &hf_name(name))
    }

    fn matrix(&self, name: &str, n: usize, k: usize, quant: Quant) -> Result<HostWeights> {
        let name = hf_name(name);
        let t = self.tensor(&name)?;
        let data = self.typed(&name, &t, &[n, k])?.to_vec();
        let format = match t.dtype {
            Dtype::F32 => kiln_kernels::WeightFormat::F32,
            Dtype::F16 => kiln_kernels::WeightFormat::F16,
            Dtype::BF16 => kiln_kernels::WeightFormat::BF16,
            _ => return Err(Self::unsupported(&name, &t)),
        };
        Ok(quant.apply(HostWeights::new(format, n, k, data)?)?)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let name = hf_name(name);
        let t = self.tensor(&name)?;
        let data = self.typed(&name, &t, &[n])?;
        Ok(match t.dtype {
            Dtype::F32 => bytemuck::pod_collect_to_vec(data),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => return Err(Self::unsupported(&name, &t)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::hf_name;

    #[test]
    fn gguf_names_map_to_transformers_names() {
        for (gguf, hf) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            (
                "blk.0.attn_k_norm.weight",
                "model.layers.0.self_attn.k_norm.weight",
            ),
            (
                "blk.11.ffn_down.weight",
                "model.layers.11.mlp.down_proj.weight",
            ),
            (
                "blk.2.ffn_norm.weight",
                "model.layers.2.post_attention_layernorm.weight",
            ),
        ] {
            assert_eq!(hf_name(gguf), hf);
        }
    }
}
