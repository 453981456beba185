//! Llama-family hyperparameters, from GGUF metadata (`ARCH.*`) or a Hugging Face `config.json`,
//! and the RoPE scaling they name.

use std::path::Path;

use kiln_kernels::rope::{Rope, RopeLayout};
use kiln_runtime::Tensor;
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::gguf_weights::n_vocab;
use crate::hf_folder::read_json;

/// The members of the family, by `general.architecture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Llama, Family::Qwen2, Family::Qwen3];

    /// The GGUF architecture name, which prefixes its metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The RoPE pairs of this family's GGUF files: llama.cpp permutes Llama's Q/K rows for
    /// interleaved pairs, and leaves Qwen's half-split (its NEOX type).
    fn gguf_rope_layout(self) -> RopeLayout {
        match self {
            Family::Llama => RopeLayout::Interleaved,
            Family::Qwen2 | Family::Qwen3 => RopeLayout::HalfSplit,
        }
    }
}

/// Hyperparameters read from `ARCH.*` metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rope_dims: usize,
    pub rope_base: f32,
    pub rope_layout: RopeLayout,
    pub rope_scaling: RopeScaling,
    pub eps: f32,
    /// Context length the model was trained for.
    pub n_ctx: usize,
    pub n_vocab: usize,
}

impl LlamaConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.str("general.architecture")?;
        let Some(family) = Family::from_name(arch) else {
            return Err(ModelError::Config {
                path: g.path.clone(),
                message: format!(
                    "architecture {arch:?} is not a Llama-family model (llama, qwen2, qwen3)"
                ),
            });
        };
        let u = |key: &str| g.u32(&format!("{arch}.{key}")).map(|v| v as usize);
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_kv_head = u("attention.head_count_kv").unwrap_or(n_head);
        let bad = |message: String| ModelError::Config {
            path: g.path.clone(),
            message,
        };
        if n_head == 0 || n_embd % n_head != 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(bad(format!(
                "{n_head} heads and {n_kv_head} KV heads do not divide width {n_embd}"
            )));
        }
        // Qwen3 heads are wider than n_embd / n_head (key_length says so).
        let head_dim = u("attention.key_length").unwrap_or(n_embd / n_head);
        let value_dim = u("attention.value_length").unwrap_or(head_dim);
        if head_dim == 0 || value_dim != head_dim {
            return Err(bad(format!(
                "attention.key_length {head_dim} and value_length {value_dim} must be equal and positive"
            )));
        }
        let rope_scaling = match g.str(&format!("{arch}.rope.scaling.type")) {
            Err(_) | Ok("none") => RopeScaling::None,
            Ok("linear") => RopeScaling::Linear(g.f32(&format!("{arch}.rope.scaling.factor"))?),
            Ok(other) => {
                return Err(bad(format!(
                    "rope.scaling.type {other:?} is not supported (none, linear, or Llama 3's rope_freqs tensor)"
                )));
            }
        };
        let n_vocab = n_vocab(g, arch)?;
        let cfg = Self {
            family,
            n_layer: u("block_count")?,
            n_embd,
            n_ff: u("feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim,
            rope_dims: u("rope.dimension_count").unwrap_or(head_dim),
            rope_base: g.f32(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0),
            rope_layout: family.gguf_rope_layout(),
            rope_scaling,
            eps: g.f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))?,
            n_ctx: u("context_length")?,
            n_vocab,
        };
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    /// Sizes that the kernels and the loader rely on.
    fn check(&self) -> std::result::Result<(), String> {
        let (e, h, kv) = (self.n_embd, self.n_head, self.n_kv_head);
        if h == 0 || kv == 0 || h % kv != 0 || e == 0 {
            return Err(format!("{h} heads and {kv} KV heads do not fit width {e}"));
        }
        if self.head_dim == 0 || self.n_layer == 0 || self.n_ff == 0 || self.n_vocab == 0 {
            return Err(format!("a size is zero: {self:?}"));
        }
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return Err(format!(
                "rope.dimension_count {} must be even and at most the head dim {}",
                self.rope_dims, self.head_dim
            ));
        }
        Ok(())
    }

    /// A Hugging Face `config.json` of `model_type` llama, qwen2 or qwen3 (transformers' names).
    /// Its Q/K rows are not permuted, so RoPE turns half-split pairs.
    pub fn from_hf(path: &Path) -> Result<Self> {
        let json = read_json(path)?;
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let model_type = json["model_type"].as_str().unwrap_or("");
        let family = Family::from_name(model_type).ok_or_else(|| {
            bad(format!(
                "model_type {model_type:?} is not a Llama-family model (llama, qwen2, qwen3)"
            ))
        })?;
        let u = |key: &str| -> Result<usize> {
            json[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("{key:?} is missing or not a whole number")))
        };
        let f = |key: &str, default: f64| json[key].as_f64().unwrap_or(default) as f32;
        let (n_embd, n_head) = (u("hidden_size")?, u("num_attention_heads")?);
        let head_dim = match json.get("head_dim") {
            Some(v) if !v.is_null() => u("head_dim")?,
            _ => n_embd.checked_div(n_head).unwrap_or(0),
        };
        let cfg = Self {
            family,
            n_layer: u("num_hidden_layers")?,
            n_embd,
            n_ff: u("intermediate_size")?,
            n_head,
            n_kv_head: u("num_key_value_heads").unwrap_or(n_head),
            head_dim,
            rope_dims: head_dim,
            rope_base: f("rope_theta", 10000.0),
            rope_layout: RopeLayout::HalfSplit,
            rope_scaling: RopeScaling::from_hf(&json["rope_scaling"]).map_err(bad)?,
            eps: f("rms_norm_eps", 1e-6),
            n_ctx: u("max_position_embeddings")?,
            n_vocab: u("vocab_size")?,
        };
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    /// The RoPE settings for `heads` heads, the angles divided by `factors` where given.
    pub fn rope<'a>(&self, heads: usize, factors: Option<&'a Tensor>) -> Rope<'a> {
        Rope {
            heads,
            head_dim: self.head_dim,
            rot_dims: self.rope_dims,
            base: self.rope_base,
            layout: self.rope_layout,
            factors,
        }
    }
}

/// How RoPE angles are scaled for contexts past the trained one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every angle divided by the factor.
    Linear(f32),
    /// Llama 3's: slow pairs divided by `factor`, fast ones kept, the band between blended
    /// (`rope_scaling.rope_type = "llama3"`; GGUF files carry the result as `rope_freqs.weight`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
}

impl RopeScaling {
    /// From `config.json`'s `rope_scaling` (null, linear or llama3).
    fn from_hf(v: &Value) -> std::result::Result<Self, String> {
        if v.is_null() {
            return Ok(RopeScaling::None);
        }
        let kind = v["rope_type"].as_str().or(v["type"].as_str()).unwrap_or("");
        let f = |key: &str| {
            v[key]
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| format!("rope_scaling.{key} is missing"))
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear(f("factor")?)),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_context: f("original_max_position_embeddings")?,
            }),
            other => Err(format!(
                "rope_scaling type {other:?} is not supported (linear, llama3)"
            )),
        }
    }

    /// The divisor of each of the `rot_dims / 2` pairs' angles, or `None` when unscaled (as
    /// convert_hf_to_gguf.py computes Llama 3's `rope_freqs`).
    pub fn factors(self, rot_dims: usize, base: f32) -> Option<Vec<f32>> {
        let pairs = rot_dims / 2;
        match self {
            RopeScaling::None => None,
            RopeScaling::Linear(f) => Some(vec![f; pairs]),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_context: original,
            } => Some(
                (0..pairs)
                    .map(|i| {
                        let freq = (base as f64).powf(-2.0 * i as f64 / rot_dims as f64);
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        let (factor, low, high, original) =
                            (factor as f64, low as f64, high as f64, original as f64);
                        if wavelen < original / high {
                            1.0
                        } else if wavelen > original / low {
                            factor as f32
                        } else {
                            let smooth = (original / wavelen - low) / (high - low);
                            (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                        }
                    })
                    .collect(),
            ),
        }
    }
}
