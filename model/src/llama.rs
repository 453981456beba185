//! Llama-family models from GGUF (`llama`: SmolLM2, Llama 2/3; `qwen2`: Qwen2/2.5 with q/k/v
//! biases; `qwen3`: Qwen3 with an RMSNorm over each head of q and k): config → weights → block →
//! forward. Weights stay in their GGUF block format on the GPU and are dequantized in the
//! kernels; a tied LM head reads the token embedding. GGUF stores llama's Q/K rows permuted for
//! RoPE on adjacent pairs (llama.cpp's convention), so its RoPE is the interleaved layout; Qwen's
//! rows are not permuted and rotate half-split pairs (llama.cpp's NEOX type).

use std::path::Path;

use kiln_kernels::Weights;
use kiln_kernels::attention::{self, KvCache};
use kiln_kernels::embedding::embedding;
use kiln_kernels::linear::{Input, Output};
use kiln_kernels::norm::rms_norm_in_place;
use kiln_runtime::{Context, Recorder, Tensor};

use crate::architecture::Architecture;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::hf_folder::HfFolder;
pub use crate::llama_config::{Family, LlamaConfig, RopeScaling};
use crate::matrix::{Matrix, NamedMatrix, matrix_bytes};
use crate::quantize::Quant;
use crate::stacked::Stacked;
use crate::step::{Dims, StepIo};
use crate::weight_source::WeightSource;

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
    /// Uploads every tensor of a GGUF file, matrices converted to `quant`; `progress(done,
    /// total)` is called after each.
    pub fn load(
        ctx: &Context,
        g: &GgufFile,
        quant: Quant,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_from(ctx, g, LlamaConfig::from_gguf(g)?, quant, progress)
    }

    /// A Hugging Face folder: `config.json` and the safetensors weights (one file or shards).
    pub fn load_hf(
        ctx: &Context,
        dir: &Path,
        quant: Quant,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let cfg = LlamaConfig::from_hf(&dir.join("config.json"))?;
        Self::load_from(ctx, &HfFolder::open(dir)?, cfg, quant, progress)
    }

    /// Uploads the model `cfg` describes from `src`.
    pub fn load_from(
        ctx: &Context,
        src: &dyn WeightSource,
        cfg: LlamaConfig,
        quant: Quant,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
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
        let matrix = |name: &str, n: usize, k: usize| -> Result<Matrix> {
            let host = src.matrix(&format!("{name}.weight"), n, k, quant)?;
            Ok(Matrix::new(Weights::upload(ctx, &host)?))
        };
        let vector = |name: &str, n: usize| -> Result<Tensor> {
            Ok(ctx.upload_f32(&src.vector(&format!("{name}.weight"), n)?, &[n])?)
        };
        let tok_embd = matrix("token_embd", cfg.n_vocab, e)?;
        step();
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let name = |t: &str| format!("blk.{l}.{t}");
            let parts = |ts: &[(&str, usize)]| -> Vec<(String, usize)> {
                ts.iter().map(|&(t, n)| (name(t), n)).collect()
            };
            let qkv_parts = parts(&[("attn_q", q), ("attn_k", kv), ("attn_v", kv)]);
            let qkv = Stacked::load(ctx, src, name("attn_qkv"), &qkv_parts, e, quant)?;
            (0..3).for_each(|_| step());
            let wo = matrix(&name("attn_output"), e, q)?;
            step();
            let gate_up_parts = parts(&[("ffn_gate", ff), ("ffn_up", ff)]);
            let gate_up = Stacked::load(ctx, src, name("ffn_gate_up"), &gate_up_parts, e, quant)?;
            (0..2).for_each(|_| step());
            let down = matrix(&name("ffn_down"), e, ff)?;
            step();
            let qk_norm = match cfg.family {
                Family::Qwen3 => Some((
                    vector(&name("attn_q_norm"), cfg.head_dim)?,
                    vector(&name("attn_k_norm"), cfg.head_dim)?,
                )),
                _ => None,
            };
            let attn_norm = vector(&name("attn_norm"), e)?;
            let ffn_norm = vector(&name("ffn_norm"), e)?;
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
        let out_norm = vector("output_norm", e)?;
        // Llama 3's divisors as the GGUF file stores them, or from the config's scaling.
        let pairs = cfg.rope_dims / 2;
        let rope_factors = if src.has("rope_freqs.weight") {
            Some(vector("rope_freqs", pairs)?)
        } else {
            match cfg.rope_scaling.factors(cfg.rope_dims, cfg.rope_base) {
                Some(f) => Some(ctx.upload_f32(&f, &[pairs])?),
                None => None,
            }
        };
        step();
        let output = match src.has("output.weight") {
            true => Some(matrix("output", cfg.n_vocab, e)?),
            false => None,
        };
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
