//! A synthetic Llama 3.2 1B (its real shapes: 16 layers, width 2048, 32 heads over 8 KV heads of
//! 64, FFN 8192, vocabulary 128,256, tied head, Llama 3 RoPE scaling) with deterministic weights
//! in llama.cpp's Q4_K_M mix, for timing a 1B-class model without downloading one.

use kiln_kernels::rope::RopeLayout;
use kiln_kernels::{HostWeights, WeightFormat};
use kiln_model::llama::{Family, LlamaConfig, RopeScaling};
use kiln_model::quantize::Quant;
use kiln_model::weight_source::WeightSource;

use crate::roofline::synthetic_weights;

/// Llama 3.2 1B's hyperparameters.
pub fn llama3_1b() -> LlamaConfig {
    LlamaConfig {
        family: Family::Llama,
        n_layer: 16,
        n_embd: 2048,
        n_ff: 8192,
        n_head: 32,
        n_kv_head: 8,
        head_dim: 64,
        rope_dims: 64,
        rope_base: 500_000.0,
        rope_layout: RopeLayout::Interleaved,
        rope_scaling: RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192.0,
        },
        eps: 1e-5,
        n_ctx: 131_072,
        n_vocab: 128_256,
    }
}

/// Weights named as GGUF names them, typed as llama.cpp's `Q4_K_M` types a Llama: Q6_K for the
/// token embedding (the tied head) and for `attn_v` and `ffn_down` in its "more bits" layers (the
/// first and last eighth, and every third between), Q4_K elsewhere; f32 norms of ones.
pub struct Q4KMix {
    pub n_layer: usize,
}

impl Q4KMix {
    fn format(&self, name: &str) -> WeightFormat {
        let more_bits = |layer: usize| {
            let n = self.n_layer;
            layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2
        };
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok());
        match (name, layer) {
            ("token_embd.weight", _) => WeightFormat::Q6_K,
            (n, Some(l)) if (n.contains("attn_v") || n.contains("ffn_down")) && more_bits(l) => {
                WeightFormat::Q6_K
            }
            _ => WeightFormat::Q4_K,
        }
    }
}

impl WeightSource for Q4KMix {
    fn path(&self) -> &std::path::Path {
        std::path::Path::new("synthetic Llama 3.2 1B (Q4_K_M mix)")
    }

    fn has(&self, name: &str) -> bool {
        !(name == "output.weight" || name == "rope_freqs.weight" || name.ends_with(".bias"))
    }

    fn matrix(
        &self,
        name: &str,
        n: usize,
        k: usize,
        quant: Quant,
    ) -> kiln_model::Result<HostWeights> {
        Ok(
            quant.apply(synthetic_weights(self.format(name), n, k).map_err(|e| {
                kiln_model::ModelError::Config {
                    path: self.path().to_path_buf(),
                    message: e.to_string(),
                }
            })?)?,
        )
    }

    fn vector(&self, _name: &str, n: usize) -> kiln_model::Result<Vec<f32>> {
        Ok(vec![1.0; n])
    }
}
