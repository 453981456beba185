//! GPT-2 (Radford et al. 2019) from a Hugging Face model folder: config → weights → block.
//!
//! `config.json` + `model.safetensors`, f32 or f16, tensor names with or without the
//! `transformer.` prefix. Conv1D weights are stored `[in, out]`; they are transposed at load into
//! the `[out, in]` layout the matrix kernels read, and the fused QKV projection is split into three
//! biased matrices. Learned position embeddings, pre-LayerNorm blocks, GELU (tanh form), and an LM
//! head tied to the token embedding.

use std::path::{Path, PathBuf};

use half::f16;
use kiln_kernels::{HostWeights, Weights, attention, elementwise, embedding, matmul, norm};
use kiln_runtime::{Context, Recorder, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};
use crate::session::{Architecture, Dims, StepIo};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gpt2Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
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
        let cfg = Self {
            n_layer: num("n_layer")?,
            n_embd: num("n_embd")?,
            n_head: num("n_head")?,
            n_positions: num("n_positions").or_else(|_| num("n_ctx"))?,
            n_vocab: num("vocab_size")?,
            eps: v
                .get("layer_norm_epsilon")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-5) as f32,
        };
        if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(bad(format!(
                "n_head {} does not divide n_embd {}",
                cfg.n_head, cfg.n_embd
            )));
        }
        Ok(cfg)
    }
}

struct LayerNorm {
    gamma: Tensor, // [n_embd]
    beta: Tensor,  // [n_embd]
}

struct Block {
    ln_1: LayerNorm,
    wq: Weights, // [n_embd] -> [n_embd], biased
    wk: Weights,
    wv: Weights,
    proj: Weights, // attention output, biased
    ln_2: LayerNorm,
    fc: Weights,     // [n_embd] -> [4 n_embd], biased
    fc_out: Weights, // [4 n_embd] -> [n_embd], biased
}

pub struct Gpt2 {
    pub cfg: Gpt2Config,
    wte: Weights, // [n_vocab, n_embd]; also the LM head
    wpe: Weights, // [n_positions, n_embd]
    blocks: Vec<Block>,
    ln_f: LayerNorm,
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

/// Uploads `[n, k]` row-major values in the precision they were stored in.
fn upload(
    ctx: &Context,
    values: &[f32],
    n: usize,
    k: usize,
    half: bool,
    bias: Option<&[f32]>,
) -> Result<Weights> {
    let host = if half {
        HostWeights::f16(
            n,
            k,
            &values.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
        )?
    } else {
        HostWeights::f32(n, k, values)?
    };
    let w = Weights::upload(ctx, &host)?;
    Ok(match bias {
        Some(b) => w.with_bias(ctx, b)?,
        None => w,
    })
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
    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub fn load(ctx: &Context, dir: &Path, mut progress: impl FnMut(usize, usize)) -> Result<Self> {
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
        let (e, v, p) = (cfg.n_embd, cfg.n_vocab, cfg.n_positions);
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
            upload(ctx, &wte.values, v, e, wte.half, None)?,
            upload(ctx, &wpe.values, p, e, wpe.half, None)?,
        );
        progress(1, total);
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |t: &str| format!("h.{l}.{t}");
            let attn = s.get(&n("attn.c_attn.weight"), &[e, 3 * e])?;
            let attn_b = s.get(&n("attn.c_attn.bias"), &[3 * e])?.values;
            let split = |i: usize| {
                upload(
                    ctx,
                    &conv1d_columns(&attn, i * e, e),
                    e,
                    e,
                    attn.half,
                    Some(&attn_b[i * e..(i + 1) * e]),
                )
            };
            let proj = s.get(&n("attn.c_proj.weight"), &[e, e])?;
            let fc = s.get(&n("mlp.c_fc.weight"), &[e, 4 * e])?;
            let fc_out = s.get(&n("mlp.c_proj.weight"), &[4 * e, e])?;
            blocks.push(Block {
                ln_1: ln(&n("ln_1"))?,
                wq: split(0)?,
                wk: split(1)?,
                wv: split(2)?,
                proj: upload(
                    ctx,
                    &conv1d_columns(&proj, 0, e),
                    e,
                    e,
                    proj.half,
                    Some(&s.get(&n("attn.c_proj.bias"), &[e])?.values),
                )?,
                ln_2: ln(&n("ln_2"))?,
                fc: upload(
                    ctx,
                    &conv1d_columns(&fc, 0, 4 * e),
                    4 * e,
                    e,
                    fc.half,
                    Some(&s.get(&n("mlp.c_fc.bias"), &[4 * e])?.values),
                )?,
                fc_out: upload(
                    ctx,
                    &conv1d_columns(&fc_out, 0, e),
                    e,
                    4 * e,
                    fc_out.half,
                    Some(&s.get(&n("mlp.c_proj.bias"), &[e])?.values),
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
        })
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
            n_ff: 4 * c.n_embd,
            n_vocab: c.n_vocab,
            max_positions: Some(c.n_positions),
        }
    }

    fn record_blocks(
        &self,
        rec: &mut Recorder<'_>,
        io: &StepIo,
        caches: &[(Tensor, Tensor)],
    ) -> Result<()> {
        let c = &self.cfg;
        let scale = 1.0 / ((c.n_embd / c.n_head) as f32).sqrt();
        // x = wte[ids] + wpe[pos]
        embedding::embedding(rec, &io.ids, &self.wte, &io.x)?;
        embedding::embedding(rec, &io.pos, &self.wpe, &io.h)?;
        elementwise::accumulate(rec, &io.x, &io.h)?;
        for (b, (kc, vc)) in self.blocks.iter().zip(caches) {
            // x += proj(attend(q, k, v)), (q, k, v) = qkv(layernorm_1(x))
            norm::layer_norm(rec, &io.x, &b.ln_1.gamma, &b.ln_1.beta, &io.h, c.eps)?;
            matmul::linear(rec, &io.h, &b.wq, &io.q)?;
            matmul::linear(rec, &io.h, &b.wk, &io.k)?;
            matmul::linear(rec, &io.h, &b.wv, &io.v)?;
            attention::kv_store(rec, &io.shape, &io.k, &io.v, &io.slots, kc, vc)?;
            attention::attention(
                rec,
                &io.shape,
                &io.q,
                &io.meta,
                io.max_keys,
                kc,
                vc,
                &io.att,
                &io.scratch,
                scale,
                None,
            )?;
            matmul::linear(rec, &io.att, &b.proj, &io.o)?;
            elementwise::accumulate(rec, &io.x, &io.o)?;
            // x += fc_out(gelu(fc(layernorm_2(x))))
            norm::layer_norm(rec, &io.x, &b.ln_2.gamma, &b.ln_2.beta, &io.h, c.eps)?;
            matmul::linear(rec, &io.h, &b.fc, &io.gate)?;
            elementwise::gelu(rec, &io.gate, &io.act)?;
            matmul::linear(rec, &io.act, &b.fc_out, &io.o)?;
            elementwise::accumulate(rec, &io.x, &io.o)?;
        }
        Ok(())
    }

    fn record_final_norm(&self, rec: &mut Recorder<'_>, x: &Tensor, out: &Tensor) -> Result<()> {
        Ok(norm::layer_norm(
            rec,
            x,
            &self.ln_f.gamma,
            &self.ln_f.beta,
            out,
            self.cfg.eps,
        )?)
    }

    fn lm_head(&self) -> &Weights {
        &self.wte
    }
}
