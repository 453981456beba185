//! GPT-2 (Radford et al. 2019): config → weights → block.
//!
//! From a Hugging Face model folder (`config.json` + `model.safetensors`, f32 or f16, tensor names
//! with or without the `transformer.` prefix) or from GGUF (`gpt2.*` metadata, llama.cpp's tensor
//! names, any block format Kiln reads). Hugging Face Conv1D weights are stored `[in, out]`; they are
//! transposed at load into the `[out, in]` layout the matrix kernels read (GGUF already stores
//! them so). The fused QKV projection stays one biased matrix, whose launch writes q, k and v
//! each to its own output. Learned position embeddings, pre-LayerNorm blocks, GELU (tanh form),
//! and an LM head tied to the token embedding unless the file carries its own.

use std::path::{Path, PathBuf};

use half::f16;
use kiln_kernels::attention::{self, KvCache};
use kiln_kernels::elementwise::accumulate;
use kiln_kernels::embedding::embedding;
use kiln_kernels::linear::{self, Input, Output};
use kiln_kernels::{HostWeights, Weights};
use kiln_runtime::{Context, Recorder, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::architecture::Architecture;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::gguf_weights::{lm_head, matrix, n_vocab, vector, vector_values};
use crate::matrix::{Matrix, NamedMatrix, matrix_bytes};
use crate::quantize::Quant;
use crate::step::{Dims, StepIo};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gpt2Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// Width of the MLP's hidden layer (4 × `n_embd` in every released GPT-2).
    pub n_ff: usize,
    pub n_positions: usize,
    pub n_vocab: usize,
    pub eps: f32,
}

impl Gpt2Config {
    /// Reads a Hugging Face `config.json`.
    pub fn from_json(path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        if let Some(t) = v
            .get("model_type")
            .and_then(|t| t.as_str())
            .filter(|&t| t != "gpt2")
        {
            return Err(bad(format!("model_type {t:?} is not gpt2")));
        }
        let num = |key: &str| {
            v.get(key)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| ModelError::MissingKey {
                    path: path.to_path_buf(),
                    key: key.into(),
                })
        };
        let n_embd = num("n_embd")?;
        let cfg = Self {
            n_layer: num("n_layer")?,
            n_embd,
            n_head: num("n_head")?,
            // `n_inner` is null when the MLP is the usual 4 × width.
            n_ff: num("n_inner").unwrap_or(4 * n_embd),
            n_positions: num("n_positions").or_else(|_| num("n_ctx"))?,
            n_vocab: num("vocab_size")?,
            eps: v
                .get("layer_norm_epsilon")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-5) as f32,
        };
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    /// Reads `gpt2.*` GGUF metadata (as llama.cpp's converter writes it).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let u = |key: &str| g.u32(&format!("gpt2.{key}")).map(|v| v as usize);
        let n_embd = u("embedding_length")?;
        let n_vocab = n_vocab(g, "gpt2")?;
        let cfg = Self {
            n_layer: u("block_count")?,
            n_embd,
            n_head: u("attention.head_count")?,
            n_ff: u("feed_forward_length").unwrap_or(4 * n_embd),
            n_positions: u("context_length")?,
            n_vocab,
            eps: g.f32("gpt2.attention.layer_norm_epsilon").unwrap_or(1e-5),
        };
        cfg.check().map_err(|message| ModelError::Config {
            path: g.path.clone(),
            message,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_head {} does not divide n_embd {}",
                self.n_head, self.n_embd
            ));
        }
        if self.n_layer == 0 || self.n_ff == 0 || self.n_positions == 0 || self.n_vocab == 0 {
            return Err(format!("a zero dimension in {self:?}"));
        }
        Ok(())
    }
}

struct LayerNorm {
    gamma: Tensor, // [n_embd]
    beta: Tensor,  // [n_embd]
}

impl LayerNorm {
    /// This norm of `x` as a projection's input (written to `normed` where not folded).
    fn of<'a>(&'a self, x: &'a Tensor, normed: &'a Tensor, eps: f32) -> Input<'a> {
        Input::LayerNorm {
            x,
            gamma: &self.gamma,
            beta: &self.beta,
            eps,
            normed,
        }
    }
}

struct Block {
    ln_1: LayerNorm,
    /// q, k and v stacked: [n_embd] -> [3 * n_embd], biased (one launch, outputs split)
    qkv: Matrix,
    proj: Matrix, // attention output, biased
    ln_2: LayerNorm,
    fc: Matrix,     // [n_embd] -> [n_ff], biased
    fc_out: Matrix, // [n_ff] -> [n_embd], biased
}

pub struct Gpt2 {
    pub cfg: Gpt2Config,
    wte: Matrix, // [n_vocab, n_embd]
    wpe: Matrix, // [n_positions, n_embd]
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// The LM head `[n_vocab, n_embd]`; `None` when tied to `wte`.
    output: Option<Matrix>,
}

/// A safetensors file and the prefix its GPT-2 tensor names carry.
struct Store<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
    path: &'a Path,
}

/// A tensor as f32 values with its shape, and whether it was stored as f16.
struct Loaded {
    values: Vec<f32>,
    shape: Vec<usize>,
    half: bool,
}

impl Store<'_> {
    fn get(&self, name: &str, expected: &[usize]) -> Result<Loaded> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .st
            .tensor(&full)
            .map_err(|_| ModelError::MissingTensor {
                path: self.path.to_path_buf(),
                tensor: full.clone(),
            })?;
        if t.shape() != expected {
            return Err(ModelError::TensorShape {
                path: self.path.to_path_buf(),
                tensor: full,
                expected: expected.iter().map(|&d| d as u64).collect(),
                found: t.shape().iter().map(|&d| d as u64).collect(),
            });
        }
        let data = t.data();
        let (values, half) = match t.dtype() {
            Dtype::F32 => (
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                false,
            ),
            Dtype::F16 => (
                data.chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                true,
            ),
            other => {
                return Err(ModelError::UnsupportedTensorType {
                    path: self.path.to_path_buf(),
                    tensor: full,
                    ggml_type: format!("safetensors {other:?}"),
                });
            }
        };
        Ok(Loaded {
            values,
            shape: t.shape().to_vec(),
            half,
        })
    }
}

/// Uploads `[n, k]` row-major values in the precision they were stored in, or converted to
/// `quant`.
fn upload(
    ctx: &Context,
    values: &[f32],
    (n, k): (usize, usize),
    half: bool,
    bias: Option<&[f32]>,
    quant: Quant,
) -> Result<Matrix> {
    let host = if half {
        HostWeights::f16(
            n,
            k,
            &values.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
        )?
    } else {
        HostWeights::f32(n, k, values)?
    };
    let w = Weights::upload(ctx, &quant.apply(host)?)?;
    Ok(Matrix::new(match bias {
        Some(b) => w.with_bias(ctx, b)?,
        None => w,
    }))
}

/// Columns `c0..c0 + n` of a Conv1D weight `[k, cols]`, transposed to `[n, k]`.
fn conv1d_columns(w: &Loaded, c0: usize, n: usize) -> Vec<f32> {
    let (k, cols) = (w.shape[0], w.shape[1]);
    let mut out = vec![0f32; n * k];
    for r in 0..k {
        for c in 0..n {
            out[c * k + r] = w.values[r * cols + c0 + c];
        }
    }
    out
}

impl Gpt2 {
    /// Loads `dir/config.json` and `dir/model.safetensors`, matrices converted to `quant`.
    pub fn load(
        ctx: &Context,
        dir: &Path,
        quant: Quant,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let cfg = Gpt2Config::from_json(&dir.join("config.json"))?;
        let path: PathBuf = dir.join("model.safetensors");
        let file = std::fs::File::open(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        // SAFETY: read-only map of a file Kiln never writes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: format!("not a safetensors file: {e}"),
        })?;
        let prefix = if st.tensor("wte.weight").is_ok() {
            ""
        } else {
            "transformer."
        };
        let s = Store {
            st,
            prefix,
            path: &path,
        };
        let (e, f, v, p) = (cfg.n_embd, cfg.n_ff, cfg.n_vocab, cfg.n_positions);
        let total = cfg.n_layer + 2;
        let ln = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: ctx.upload_f32(&s.get(&format!("{name}.weight"), &[e])?.values, &[e])?,
                beta: ctx.upload_f32(&s.get(&format!("{name}.bias"), &[e])?.values, &[e])?,
            })
        };
        let wte = s.get("wte.weight", &[v, e])?;
        let wpe = s.get("wpe.weight", &[p, e])?;
        let (wte, wpe) = (
            upload(ctx, &wte.values, (v, e), wte.half, None, quant)?,
            upload(ctx, &wpe.values, (p, e), wpe.half, None, quant)?,
        );
        progress(1, total);
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |t: &str| format!("h.{l}.{t}");
            let attn = s.get(&n("attn.c_attn.weight"), &[e, 3 * e])?;
            let attn_b = s.get(&n("attn.c_attn.bias"), &[3 * e])?.values;
            let qkv = upload(
                ctx,
                &conv1d_columns(&attn, 0, 3 * e),
                (3 * e, e),
                attn.half,
                Some(&attn_b),
                quant,
            )?;
            let proj = s.get(&n("attn.c_proj.weight"), &[e, e])?;
            let fc = s.get(&n("mlp.c_fc.weight"), &[e, f])?;
            let fc_out = s.get(&n("mlp.c_proj.weight"), &[f, e])?;
            blocks.push(Block {
                ln_1: ln(&n("ln_1"))?,
                qkv,
                proj: upload(
                    ctx,
                    &conv1d_columns(&proj, 0, e),
                    (e, e),
                    proj.half,
                    Some(&s.get(&n("attn.c_proj.bias"), &[e])?.values),
                    quant,
                )?,
                ln_2: ln(&n("ln_2"))?,
                fc: upload(
                    ctx,
                    &conv1d_columns(&fc, 0, f),
                    (f, e),
                    fc.half,
                    Some(&s.get(&n("mlp.c_fc.bias"), &[f])?.values),
                    quant,
                )?,
                fc_out: upload(
                    ctx,
                    &conv1d_columns(&fc_out, 0, e),
                    (e, f),
                    fc_out.half,
                    Some(&s.get(&n("mlp.c_proj.bias"), &[e])?.values),
                    quant,
                )?,
            });
            progress(l + 2, total);
        }
        let ln_f = ln("ln_f")?;
        progress(total, total);
        Ok(Self {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            output: None,
        })
    }

    /// Loads GPT-2 from GGUF with llama.cpp's tensor names (`token_embd`, `position_embd`,
    /// `blk.N.attn_qkv`, …), matrices in their own block format.
    pub fn load_gguf(
        ctx: &Context,
        g: &GgufFile,
        quant: Quant,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let cfg = Gpt2Config::from_gguf(g)?;
        let (e, f) = (cfg.n_embd, cfg.n_ff);
        let total = cfg.n_layer + 2;
        let ln = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: vector(ctx, g, &format!("{name}.weight"), e)?,
                beta: vector(ctx, g, &format!("{name}.bias"), e)?,
            })
        };
        let biased = |name: &str, n: usize, k: usize| -> Result<Matrix> {
            let bias = vector_values(g, &format!("{name}.bias"), n)?;
            let w = matrix(ctx, g, &format!("{name}.weight"), n, k, quant)?;
            Ok(Matrix::new(w.with_bias(ctx, &bias)?))
        };
        let wte = Matrix::new(matrix(ctx, g, "token_embd.weight", cfg.n_vocab, e, quant)?);
        let wpe = Matrix::new(matrix(
            ctx,
            g,
            "position_embd.weight",
            cfg.n_positions,
            e,
            quant,
        )?);
        progress(1, total);
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |t: &str| format!("blk.{l}.{t}");
            blocks.push(Block {
                ln_1: ln(&n("attn_norm"))?,
                qkv: biased(&n("attn_qkv"), 3 * e, e)?,
                proj: biased(&n("attn_output"), e, e)?,
                ln_2: ln(&n("ffn_norm"))?,
                fc: biased(&n("ffn_up"), f, e)?,
                fc_out: biased(&n("ffn_down"), e, f)?,
            });
            progress(l + 2, total);
        }
        let ln_f = ln("output_norm")?;
        let output = lm_head(ctx, g, cfg.n_vocab, e, quant)?;
        progress(total, total);
        Ok(Self {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            output,
        })
    }
}

impl Gpt2 {
    /// Random weights at `cfg`'s shapes (for benchmarks at real sizes when no checkpoint is at
    /// hand), stored as `quant` (f32 for [`Quant::None`]): matrices with GPT-2's initial spread,
    /// zero biases, unit norms.
    pub fn random(ctx: &Context, cfg: Gpt2Config, quant: Quant, seed: u64) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let e = cfg.n_embd;
        // A uniform draw with the same variance as N(0, 0.02²) is enough for timing.
        let mut mat = |n: usize, k: usize, bias: bool| -> Result<Matrix> {
            let values: Vec<f32> = (0..n * k)
                .map(|_| rng.random_range(-0.0346..0.0346))
                .collect();
            upload(
                ctx,
                &values,
                (n, k),
                false,
                bias.then(|| vec![0.0; n]).as_deref(),
                quant,
            )
        };
        let wte = mat(cfg.n_vocab, e, false)?;
        let wpe = mat(cfg.n_positions, e, false)?;
        let ln = || -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: ctx.upload_f32(&vec![1.0; e], &[e])?,
                beta: ctx.zeros(kiln_runtime::DType::F32, &[e])?,
            })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            blocks.push(Block {
                ln_1: ln()?,
                qkv: mat(3 * e, e, true)?,
                proj: mat(e, e, true)?,
                ln_2: ln()?,
                fc: mat(cfg.n_ff, e, true)?,
                fc_out: mat(e, cfg.n_ff, true)?,
            });
        }
        Ok(Self {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f: ln()?,
            output: None,
        })
    }
}

impl Gpt2Config {
    /// GPT-2 124M ("gpt2"): 12 layers, width 768, 12 heads, 1024 positions, 50257 tokens.
    pub fn gpt2_124m() -> Self {
        Self {
            n_layer: 12,
            n_embd: 768,
            n_head: 12,
            n_ff: 3072,
            n_positions: 1024,
            n_vocab: 50257,
            eps: 1e-5,
        }
    }
}

impl Architecture for Gpt2 {
    fn dims(&self) -> Dims {
        let c = &self.cfg;
        Dims {
            n_layer: c.n_layer,
            n_embd: c.n_embd,
            n_head: c.n_head,
            n_kv_head: c.n_head,
            head_dim: c.n_embd / c.n_head,
            n_ff: c.n_ff,
            n_vocab: c.n_vocab,
            max_positions: Some(c.n_positions),
        }
    }

    fn record_step(&self, rec: &mut Recorder<'_>, io: &StepIo, caches: &[KvCache]) -> Result<()> {
        let c = &self.cfg;
        let scale = 1.0 / ((c.n_embd / c.n_head) as f32).sqrt();
        // x = wte[ids] + wpe[pos]
        embedding(rec, &io.ids, &self.wte, &io.x)?;
        embedding(rec, &io.pos, &self.wpe, &io.h)?;
        accumulate(rec, &io.x, &io.h)?;
        for (b, cache) in self.blocks.iter().zip(caches) {
            // x += proj(attend(q, k, v)), (q, k, v) = qkv(layernorm_1(x))
            // The norms and GELU fold into the mat-vec that reads them where the plan does that.
            let qkv = Output::split(&[&io.q, &io.k, &io.v], linear::Store::Write);
            b.qkv.record(rec, b.ln_1.of(&io.x, &io.h, c.eps), qkv)?;
            let (rows, att, scratch) = (io.new_rows(), &io.att, &io.scratch);
            attention::store_and_attend(rec, &io.shape, &rows, cache, att, scratch, scale, None)?;
            b.proj
                .record(rec, Input::Rows(&io.att), Output::add(&io.x))?;
            // x += fc_out(gelu(fc(layernorm_2(x))))
            b.fc.record(rec, b.ln_2.of(&io.x, &io.h, c.eps), Output::write(&io.gate))?;
            let act = Input::Gelu {
                x: &io.gate,
                act: &io.act,
            };
            b.fc_out.record(rec, act, Output::add(&io.x))?;
        }
        // Logits of the selected rows: head · layernorm_f(x), the head tied to wte by default.
        let Some(x) = io.selected_rows(rec)? else {
            return Ok(());
        };
        let head = self.output.as_ref().unwrap_or(&self.wte);
        let normed = self.ln_f.of(&x, &io.sel, c.eps);
        head.record(rec, normed, Output::write(&io.logits))?;
        io.finish(rec)
    }

    fn matrices(&self) -> Vec<&Weights> {
        let mut all = vec![&self.wte.weights, &self.wpe.weights];
        for b in &self.blocks {
            all.extend([&b.qkv, &b.proj, &b.fc, &b.fc_out].map(|m| &m.weights));
        }
        all.extend(self.output.as_ref().map(|m| &m.weights));
        all
    }

    fn matrices_mut(&mut self) -> Vec<NamedMatrix<'_>> {
        let mut all = vec![
            NamedMatrix::new("token_embd", &mut self.wte, true),
            NamedMatrix::new("position_embd", &mut self.wpe, true),
        ];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (name, w) in [
                ("attn_qkv", &mut b.qkv),
                ("attn_output", &mut b.proj),
                ("ffn_up", &mut b.fc),
                ("ffn_down", &mut b.fc_out),
            ] {
                all.push(NamedMatrix::new(format!("blk.{i}.{name}"), w, false));
            }
        }
        all.extend(
            self.output
                .as_mut()
                .map(|w| NamedMatrix::new("output", w, false)),
        );
        all
    }

    /// Bytes of weights one decode step reads: every block matrix with its bias, the LM head,
    /// and one row of each embedding table.
    fn weight_bytes_per_token(&self) -> u64 {
        let row = |w: &Weights| w.size_bytes() / w.n as u64;
        let tables = self.wte.size_bytes() + self.wpe.size_bytes();
        let head = if self.output.is_some() {
            0
        } else {
            self.wte.size_bytes()
        };
        matrix_bytes(&self.matrices()) - tables + head + row(&self.wte) + row(&self.wpe)
    }

    fn weight_bytes(&self) -> u64 {
        let ln = |l: &LayerNorm| l.gamma.size_bytes() + l.beta.size_bytes();
        let norms: u64 = self.blocks.iter().map(|b| ln(&b.ln_1) + ln(&b.ln_2)).sum();
        matrix_bytes(&self.matrices()) + norms + ln(&self.ln_f)
    }
}
