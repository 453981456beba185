//! A running model: the KV cache of `n_seq` sequences and every activation buffer, created once
//! at the largest step size, so prefill and decode steps create no buffers. One [`Session::step`]
//! runs any mix of rows (a prompt chunk of one sequence, or one token of each of several) through
//! the whole model, and the copy of its result, in a single submit.

use kiln_kernels::attention::{self, AttnShape};
use kiln_kernels::{argmax, elementwise, embedding, matmul, norm, rope};
use kiln_runtime::{Context, DType, Readback, Tensor};

use crate::error::{ModelError, Result};
use crate::llama::Llama;

/// What a step returns for its selected rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The argmax token of each selected row (4 bytes read back per row).
    Argmax,
    /// The full logits of each selected row.
    Logits,
}

pub struct Session {
    pub shape: AttnShape,
    max_rows: usize,
    /// Tokens held per sequence.
    lens: Vec<usize>,
    k_cache: Vec<Tensor>, // per layer [n_seq, n_kv_head, capacity, head_dim]
    v_cache: Vec<Tensor>,
    x: Tensor,      // [rows, n_embd] residual stream
    h: Tensor,      // [rows, n_embd] normed
    q: Tensor,      // [rows, n_head * head_dim]
    k: Tensor,      // [rows, n_kv_head * head_dim]
    v: Tensor,      // [rows, n_kv_head * head_dim]
    att: Tensor,    // [rows, n_head * head_dim]
    o: Tensor,      // [rows, n_embd]
    gate: Tensor,   // [rows, n_ff]
    up: Tensor,     // [rows, n_ff]
    act: Tensor,    // [rows, n_ff] silu(gate) * up
    sel: Tensor,    // [rows, n_embd] rows whose logits are wanted
    logits: Tensor, // [rows, n_vocab]
    best: Tensor,   // [rows] u32
    ids: Tensor,    // [rows] u32
    pos: Tensor,    // [rows] u32
    slots: Tensor,  // [2 rows] u32: (sequence, position)
    meta: Tensor,   // [2 rows] u32: (sequence, key count)
    scratch: Tensor,
    /// Staging for the step's result (argmax ids or logits), copied in the step's own submit.
    readback: Readback,
}

impl Session {
    /// A cache of `n_seq` sequences of `capacity` positions; steps take at most `max_rows` rows.
    pub fn new(
        ctx: &Context,
        model: &Llama,
        n_seq: usize,
        capacity: usize,
        max_rows: usize,
    ) -> Result<Self> {
        let c = &model.cfg;
        let shape = AttnShape {
            heads: c.n_head,
            kv_heads: c.n_kv_head,
            head_dim: c.head_dim,
            capacity,
            n_seq,
        };
        let f = |n: usize| ctx.zeros(DType::F32, &[n]);
        let u = |n: usize| ctx.zeros(DType::U32, &[n]);
        let r = max_rows;
        let scratch = (1..=r)
            .map(|rows| attention::scratch_len(&shape, rows, capacity, None))
            .max()
            .unwrap_or(0);
        let mut k_cache = Vec::with_capacity(c.n_layer);
        let mut v_cache = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            k_cache.push(f(shape.cache_len())?);
            v_cache.push(f(shape.cache_len())?);
        }
        Ok(Self {
            shape,
            max_rows,
            lens: vec![0; n_seq],
            k_cache,
            v_cache,
            x: f(r * c.n_embd)?,
            h: f(r * c.n_embd)?,
            q: f(r * c.n_head * c.head_dim)?,
            k: f(r * c.n_kv_head * c.head_dim)?,
            v: f(r * c.n_kv_head * c.head_dim)?,
            att: f(r * c.n_head * c.head_dim)?,
            o: f(r * c.n_embd)?,
            gate: f(r * c.n_ff)?,
            up: f(r * c.n_ff)?,
            act: f(r * c.n_ff)?,
            sel: f(r * c.n_embd)?,
            logits: f(r * c.n_vocab)?,
            best: u(r)?,
            ids: u(r)?,
            pos: u(r)?,
            slots: u(2 * r)?,
            meta: u(2 * r)?,
            scratch: f(scratch.max(1))?,
            readback: ctx.readback((r * c.n_vocab * 4) as u64)?,
        })
    }

    /// Tokens held by sequence `seq`.
    pub fn len(&self, seq: usize) -> usize {
        self.lens[seq]
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Forgets sequence `seq` (its cache is overwritten by the next tokens).
    pub fn reset(&mut self, seq: usize) {
        self.lens[seq] = 0;
    }

    /// Appends `rows` — (sequence, token) pairs, each taking the next position of its sequence —
    /// runs them through the model and returns the argmax or logits of the rows in `select`.
    pub fn step(
        &mut self,
        ctx: &Context,
        model: &Llama,
        rows: &[(usize, u32)],
        select: &[usize],
        output: Output,
    ) -> Result<StepOutput> {
        let c = &model.cfg;
        let n = rows.len();
        let limit = |message: String| ModelError::Config {
            path: "session".into(),
            message,
        };
        if n == 0 || n > self.max_rows {
            return Err(limit(format!(
                "a step takes 1..={} rows, got {n}",
                self.max_rows
            )));
        }
        if let Some(&bad) = select.iter().find(|&&s| s >= n) {
            return Err(limit(format!("selected row {bad} of a {n}-row step")));
        }
        let (mut ids, mut pos, mut slots, mut meta) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::new(),
            Vec::new(),
        );
        let mut lens = self.lens.clone();
        for &(seq, token) in rows {
            let p = *lens.get(seq).ok_or_else(|| {
                limit(format!(
                    "sequence {seq} is outside the session's {}",
                    self.lens.len()
                ))
            })?;
            if p >= self.shape.capacity {
                return Err(limit(format!(
                    "sequence {seq} is full: the context holds {} tokens",
                    self.shape.capacity
                )));
            }
            if token as usize >= c.n_vocab {
                return Err(limit(format!(
                    "token id {token} is outside the vocabulary of {}",
                    c.n_vocab
                )));
            }
            lens[seq] += 1;
            ids.push(token);
            pos.push(p as u32);
            slots.extend([seq as u32, p as u32]);
            meta.extend([seq as u32, p as u32 + 1]);
        }
        let max_keys = meta.chunks(2).map(|m| m[1] as usize).max().unwrap_or(1);

        let v = |t: &Tensor, width: usize| t.view(&[n, width]);
        let (ids_t, pos_t) = (self.ids.view(&[n])?, self.pos.view(&[n])?);
        let (slots_t, meta_t) = (self.slots.view(&[2 * n])?, self.meta.view(&[2 * n])?);
        ctx.write(&ids_t, &ids)?;
        ctx.write(&pos_t, &pos)?;
        ctx.write(&slots_t, &slots)?;
        ctx.write(&meta_t, &meta)?;
        let (qw, kvw) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let (x, h, o) = (
            v(&self.x, c.n_embd)?,
            v(&self.h, c.n_embd)?,
            v(&self.o, c.n_embd)?,
        );
        let (q, k, val, att) = (
            v(&self.q, qw)?,
            v(&self.k, kvw)?,
            v(&self.v, kvw)?,
            v(&self.att, qw)?,
        );
        let (gate, up, act) = (
            v(&self.gate, c.n_ff)?,
            v(&self.up, c.n_ff)?,
            v(&self.act, c.n_ff)?,
        );
        let scale = 1.0 / (c.head_dim as f32).sqrt();

        let mut rec = ctx.recorder();
        embedding::embedding(&mut rec, &ids_t, &model.tok_embd, &x)?;
        for (l, b) in model.blocks.iter().enumerate() {
            norm::rms_norm(&mut rec, &x, &b.attn_norm, &h, c.eps)?;
            matmul::linear(&mut rec, &h, &b.wq, &q)?;
            matmul::linear(&mut rec, &h, &b.wk, &k)?;
            matmul::linear(&mut rec, &h, &b.wv, &val)?;
            rope::rope(&mut rec, &q, &pos_t, &c.rope(c.n_head))?;
            rope::rope(&mut rec, &k, &pos_t, &c.rope(c.n_kv_head))?;
            attention::kv_store(
                &mut rec,
                &self.shape,
                &k,
                &val,
                &slots_t,
                &self.k_cache[l],
                &self.v_cache[l],
            )?;
            attention::attention(
                &mut rec,
                &self.shape,
                &q,
                &meta_t,
                max_keys,
                &self.k_cache[l],
                &self.v_cache[l],
                &att,
                &self.scratch,
                scale,
                None,
            )?;
            matmul::linear(&mut rec, &att, &b.wo, &o)?;
            elementwise::accumulate(&mut rec, &x, &o)?;
            norm::rms_norm(&mut rec, &x, &b.ffn_norm, &h, c.eps)?;
            matmul::linear(&mut rec, &h, &b.gate, &gate)?;
            matmul::linear(&mut rec, &h, &b.up, &up)?;
            elementwise::swiglu(&mut rec, &gate, &up, &act)?;
            matmul::linear(&mut rec, &act, &b.down, &o)?;
            elementwise::accumulate(&mut rec, &x, &o)?;
        }
        let m = select.len();
        let mut result = StepOutput::default();
        if m > 0 {
            // Only the selected rows go through the final norm and the LM head.
            let sel = v(&self.sel, c.n_embd)?.view(&[m, c.n_embd])?;
            if select.iter().copied().eq(0..n) {
                norm::rms_norm(&mut rec, &x, &model.out_norm, &sel, c.eps)?;
            } else {
                for (i, &row) in select.iter().enumerate() {
                    rec.copy(&x, row * c.n_embd, &h, i * c.n_embd, c.n_embd)?;
                }
                norm::rms_norm(
                    &mut rec,
                    &h.view(&[m, c.n_embd])?,
                    &model.out_norm,
                    &sel,
                    c.eps,
                )?;
            }
            let logits = self.logits.view(&[m, c.n_vocab])?;
            matmul::linear(&mut rec, &sel, model.lm_head(), &logits)?;
            let best = self.best.view(&[m])?;
            if output == Output::Argmax {
                argmax::argmax(&mut rec, &logits, c.n_vocab, &best)?;
                rec.read_back(&best, &self.readback)?;
            } else {
                rec.read_back(&logits, &self.readback)?;
            }
            rec.submit()?;
            match output {
                Output::Argmax => result.tokens = ctx.map_read(&self.readback, m)?,
                Output::Logits => result.logits = ctx.map_read(&self.readback, m * c.n_vocab)?,
            }
        } else {
            rec.submit()?;
        }
        self.lens = lens;
        Ok(result)
    }
}

/// Results of a step for its selected rows.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Argmax token per selected row.
    pub tokens: Vec<u32>,
    /// `[selected, n_vocab]` logits.
    pub logits: Vec<f32>,
}
