//! Llama-family models from GGUF (`llama`: SmolLM2, Llama 2/3; `qwen2`: Qwen2/2.5 with q/k/v
//! biases; `qwen3`: Qwen3 with an RMSNorm over each head of q and k): config → weights → block →
//! forward. Weights stay in their GGUF block format on the GPU and are dequantized in the
//! kernels; a tied LM head reads the token embedding. GGUF stores llama's Q/K rows permuted for
//! RoPE on adjacent pairs (llama.cpp's convention), so its RoPE is the interleaved layout; Qwen's
//! rows are not permuted and rotate half-split pairs (llama.cpp's NEOX type).

use kiln_kernels::Weights;
use kiln_kernels::attention::{self, KvCache};
use kiln_kernels::embedding::embedding;
use kiln_kernels::linear::{Input, Output};
use kiln_kernels::norm::rms_norm_in_place;
use kiln_kernels::rope::{Rope, RopeLayout};
use kiln_runtime::{Context, Recorder, Tensor};

use crate::architecture::Architecture;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::gguf_weights::{lm_head, matrix, n_vocab, vector};
use crate::matrix::{Matrix, NamedMatrix, matrix_bytes};
use crate::quantize::Quant;
use crate::stacked::Stacked;
use crate::step::{Dims, StepIo};

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

    fn rope_layout(self) -> RopeLayout {
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
    /// Linear RoPE scaling (position interpolation): every angle divided by this factor.
    pub rope_linear: Option<f32>,
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
        let rope_linear = match g.str(&format!("{arch}.rope.scaling.type")) {
            Err(_) | Ok("none") => None,
            Ok("linear") => Some(g.f32(&format!("{arch}.rope.scaling.factor"))?),
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
            rope_linear,
            eps: g.f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))?,
            n_ctx: u("context_length")?,
            n_vocab,
        };
        if cfg.rope_dims > head_dim || !cfg.rope_dims.is_multiple_of(2) {
            return Err(bad(format!(
                "rope.dimension_count {} must be even and at most the head dim {head_dim}",
                cfg.rope_dims
            )));
        }
        Ok(cfg)
    }

    /// The RoPE settings for `heads` heads, the angles divided by `factors` where given.
    pub fn rope<'a>(&self, heads: usize, factors: Option<&'a Tensor>) -> Rope<'a> {
        Rope {
            heads,
            head_dim: self.head_dim,
            rot_dims: self.rope_dims,
            base: self.rope_base,
            layout: self.family.rope_layout(),
            factors,
        }
    }
}

/// One transformer block's weights.
pub(crate) struct Block {
    pub attn_norm: Tensor, // [n_embd]
    /// q, k and v, stacked: [n_embd] -> [n_head * head_dim], [n_kv_head * head_dim] (twice)
    pub qkv: Stacked,
    pub wo: Matrix,       // [n_head * head_dim] -> [n_embd]
    pub ffn_norm: Tensor, // [n_embd]
    /// Qwen3: RMSNorm weights over each head of q and of k, [head_dim] each.
    pub qk_norm: Option<(Tensor, Tensor)>,
    /// gate and up, stacked: [n_embd] -> [n_ff] (twice)
    pub gate_up: Stacked,
    pub down: Matrix, // [n_ff] -> [n_embd]
}

/// A loaded model: weights on the GPU.
pub struct Llama {
    pub cfg: LlamaConfig,
    pub(crate) tok_embd: Matrix, // [n_vocab, n_embd]
    pub(crate) blocks: Vec<Block>,
    pub(crate) out_norm: Tensor, // [n_embd]
    /// Llama 3's per-pair RoPE frequency divisors (`rope_freqs.weight`, [rope_dims / 2]).
    pub(crate) rope_factors: Option<Tensor>,
    /// The LM head; `None` when tied to the token embedding.
    pub(crate) output: Option<Matrix>,
}

impl Llama {
    /// Uploads every tensor, matrices converted to `quant`; `progress(done, total)` is called
    /// after each.
    pub fn load(
        ctx: &Context,
        g: &GgufFile,
        quant: Quant,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let total = 3 + cfg.n_layer * 9;
        let mut done = 0;
        let mut step = || {
            done += 1;
            progress(done, total);
        };
        let (e, q, kv, ff) = (
            cfg.n_embd,
            cfg.n_head * cfg.head_dim,
            cfg.n_kv_head * cfg.head_dim,
            cfg.n_ff,
        );
        let tok_embd = Matrix::new(matrix(ctx, g, "token_embd.weight", cfg.n_vocab, e, quant)?);
        step();
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let name = |t: &str| format!("blk.{l}.{t}");
            let parts = |ts: &[(&str, usize)]| -> Vec<(String, usize)> {
                ts.iter().map(|&(t, n)| (name(t), n)).collect()
            };
            let qkv_parts = parts(&[("attn_q", q), ("attn_k", kv), ("attn_v", kv)]);
            let qkv = Stacked::load(ctx, g, name("attn_qkv"), &qkv_parts, e, quant)?;
            (0..3).for_each(|_| step());
            let wo = Matrix::new(matrix(ctx, g, &name("attn_output.weight"), e, q, quant)?);
            step();
            let gate_up_parts = parts(&[("ffn_gate", ff), ("ffn_up", ff)]);
            let gate_up = Stacked::load(ctx, g, name("ffn_gate_up"), &gate_up_parts, e, quant)?;
            (0..2).for_each(|_| step());
            let down = Matrix::new(matrix(ctx, g, &name("ffn_down.weight"), e, ff, quant)?);
            step();
            let qk_norm = match cfg.family {
                Family::Qwen3 => Some((
                    vector(ctx, g, &name("attn_q_norm.weight"), cfg.head_dim)?,
                    vector(ctx, g, &name("attn_k_norm.weight"), cfg.head_dim)?,
                )),
                _ => None,
            };
            let attn_norm = vector(ctx, g, &name("attn_norm.weight"), e)?;
            let ffn_norm = vector(ctx, g, &name("ffn_norm.weight"), e)?;
            step();
            step();
            blocks.push(Block {
                attn_norm,
                qkv,
                wo,
                ffn_norm,
                qk_norm,
                gate_up,
                down,
            });
        }
        let out_norm = vector(ctx, g, "output_norm.weight", e)?;
        let rope_factors = match (g.has_tensor("rope_freqs.weight"), cfg.rope_linear) {
            (true, _) => Some(vector(ctx, g, "rope_freqs.weight", cfg.rope_dims / 2)?),
            (false, Some(f)) => {
                Some(ctx.upload_f32(&vec![f; cfg.rope_dims / 2], &[cfg.rope_dims / 2])?)
            }
            (false, None) => None,
        };
        step();
        let output = lm_head(ctx, g, cfg.n_vocab, e, quant)?;
        step();
        Ok(Self {
            cfg,
            tok_embd,
            blocks,
            out_norm,
            rope_factors,
            output,
        })
    }
}

impl Architecture for Llama {
    fn dims(&self) -> Dims {
        let c = &self.cfg;
        Dims {
            n_layer: c.n_layer,
            n_embd: c.n_embd,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            n_ff: c.n_ff,
            n_vocab: c.n_vocab,
            max_positions: None,
        }
    }

    fn record_step(&self, rec: &mut Recorder<'_>, io: &StepIo, caches: &[KvCache]) -> Result<()> {
        let c = &self.cfg;
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        embedding(rec, &io.ids, &self.tok_embd, &io.x)?;
        for (b, cache) in self.blocks.iter().zip(caches) {
            // Attention: x += Wo · attend(rope(Wq h), rope(Wk h), Wv h), h = rmsnorm(x)
            let h = Input::RmsNorm {
                x: &io.x,
                gamma: &b.attn_norm,
                eps: c.eps,
                normed: &io.h,
            };
            b.qkv.record(rec, h, &[&io.q, &io.k, &io.v])?;
            if let Some((q_norm, k_norm)) = &b.qk_norm {
                rms_norm_in_place(rec, &io.q, q_norm, c.eps)?;
                rms_norm_in_place(rec, &io.k, k_norm, c.eps)?;
            }
            // RoPE at each row's cache position, folded into the store of k and v.
            let rope = c.rope(c.n_head, self.rope_factors.as_ref());
            let (rows, att, scratch) = (io.new_rows(), &io.att, &io.scratch);
            attention::store_and_attend(
                rec,
                &io.shape,
                &rows,
                cache,
                att,
                scratch,
                scale,
                Some(&rope),
            )?;
            b.wo.record(rec, Input::Rows(&io.att), Output::add(&io.x))?;
            // MLP: x += Wdown · (silu(Wgate h) * Wup h), h = rmsnorm(x)
            let h = Input::RmsNorm {
                x: &io.x,
                gamma: &b.ffn_norm,
                eps: c.eps,
                normed: &io.h,
            };
            b.gate_up.record(rec, h, &[&io.gate, &io.up])?;
            let act = Input::SwiGlu {
                gate: &io.gate,
                up: &io.up,
                act: &io.act,
            };
            b.down.record(rec, act, Output::add(&io.x))?;
        }
        // Logits of the selected rows: Wout · rmsnorm(x), with a tied head reading the embedding
        // (the norm folds into the head where the plan finds that pays, at small vocabularies).
        let Some(x) = io.selected_rows(rec)? else {
            return Ok(());
        };
        let normed = Input::RmsNorm {
            x: &x,
            gamma: &self.out_norm,
            eps: c.eps,
            normed: &io.sel,
        };
        let head = self.output.as_ref().unwrap_or(&self.tok_embd);
        head.record(rec, normed, Output::write(&io.logits))?;
        io.finish(rec)
    }

    fn matrices(&self) -> Vec<&Weights> {
        let mut all = vec![&self.tok_embd.weights];
        for b in &self.blocks {
            all.extend(b.qkv.matrices());
            all.push(&b.wo.weights);
            all.extend(b.gate_up.matrices());
            all.push(&b.down.weights);
        }
        all.extend(self.output.as_ref().map(|m| &m.weights));
        all
    }

    fn matrices_mut(&mut self) -> Vec<NamedMatrix<'_>> {
        let mut all = vec![NamedMatrix::new("token_embd", &mut self.tok_embd, true)];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let name = |t: &str| format!("blk.{i}.{t}");
            all.extend(b.qkv.named_mut());
            all.push(NamedMatrix::new(name("attn_output"), &mut b.wo, false));
            all.extend(b.gate_up.named_mut());
            all.push(NamedMatrix::new(name("ffn_down"), &mut b.down, false));
        }
        all.extend(
            self.output
                .as_mut()
                .map(|w| NamedMatrix::new("output", w, false)),
        );
        all
    }

    /// Bytes of weights read for one decode step: every matrix once, except that a token
    /// embedding that is not also the LM head gives one row.
    fn weight_bytes_per_token(&self) -> u64 {
        let all = matrix_bytes(&self.matrices());
        match self.output {
            Some(_) => {
                all - self.tok_embd.size_bytes()
                    + self.tok_embd.size_bytes() / self.cfg.n_vocab as u64
            }
            None => all,
        }
    }

    fn weight_bytes(&self) -> u64 {
        let norms: u64 = self
            .blocks
            .iter()
            .map(|b| b.attn_norm.size_bytes() + b.ffn_norm.size_bytes())
            .sum();
        matrix_bytes(&self.matrices()) + norms + self.out_norm.size_bytes()
    }
}
