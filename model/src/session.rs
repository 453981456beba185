//! A running model of any [`Architecture`]: the KV cache of `n_seq` sequences and every activation buffer, created once
//! at the largest step size, so prefill and decode steps create no buffers. One [`Session::step`]
//! runs any mix of rows (a prompt chunk of one sequence, or one token of each of several) through
//! the whole model, and the copy of its result, in a single submit.

use kiln_kernels::attention::{self, AttnShape, KvCache, KvFormat};
use kiln_kernels::{DevicePlan, Weights, argmax, matmul};
use kiln_runtime::{BindGroupCache, Context, DType, Readback, Recorder, Tensor};

use crate::error::{ModelError, Result};

/// Sizes a session allocates for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    /// Positions the model can attend over (learned position tables end there), if bounded.
    pub max_positions: Option<usize>,
}

/// The buffers of one step, as views of `rows` rows.
pub struct StepIo {
    pub rows: usize,
    pub ids: Tensor,   // [rows] u32 token ids
    pub pos: Tensor,   // [rows] u32 positions
    pub slots: Tensor, // [2 rows] u32 (sequence, position) for kv_store
    pub meta: Tensor,  // [2 rows] u32 (sequence, key count) for attention
    pub max_keys: usize,
    pub x: Tensor,    // [rows, n_embd] residual stream
    pub h: Tensor,    // [rows, n_embd]
    pub q: Tensor,    // [rows, n_head * head_dim]
    pub k: Tensor,    // [rows, n_kv_head * head_dim]
    pub v: Tensor,    // [rows, n_kv_head * head_dim]
    pub att: Tensor,  // [rows, n_head * head_dim]
    pub gate: Tensor, // [rows, n_ff]
    pub up: Tensor,   // [rows, n_ff]
    pub act: Tensor,  // [rows, n_ff]
    pub shape: AttnShape,
    pub scratch: Tensor,
}

/// What a model architecture records for a step; the session does the rest.
pub trait Architecture {
    fn dims(&self) -> Dims;
    /// Embeds `io.ids` at `io.pos` into `io.x` and runs every block, layer `l` using
    /// `caches[l]`; the residual stream is left in `io.x`.
    fn record_blocks(&self, rec: &mut Recorder<'_>, io: &StepIo, caches: &[KvCache]) -> Result<()>;
    /// The final normalization of rows `x` into `out`.
    fn record_final_norm(&self, rec: &mut Recorder<'_>, x: &Tensor, out: &Tensor) -> Result<()>;
    /// The LM head, `[n_vocab, n_embd]`.
    fn lm_head(&self) -> &Weights;
    /// Bytes of every weight on the device (matrices with their scales, norms, biases).
    fn weight_bytes(&self) -> u64;
    /// Bytes of weights one decode step reads (what bounds decode speed).
    fn weight_bytes_per_token(&self) -> u64;
    /// Every weight matrix once (embeddings and LM head included).
    fn matrices(&self) -> Vec<&Weights>;
    /// Every weight matrix once, named as llama.cpp names it, to be replaced or probed.
    fn matrices_mut(&mut self) -> Vec<NamedMatrix<'_>>;
}

/// A weight matrix of a model, for whole-model passes such as the outlier decomposition.
pub struct NamedMatrix<'a> {
    /// `token_embd`, `blk.3.attn_qkv` (a stack), `blk.3.attn_output`, `output`, ...
    pub name: String,
    pub weights: &'a mut Weights,
    /// Rows are also gathered (an embedding table, or a tied LM head), not only multiplied.
    pub gathered: bool,
    /// The row counts of the projections stacked in it (Llama's q, k and v), each quantized on
    /// its own; empty for one projection.
    pub stacked: Vec<usize>,
}

impl<'a> NamedMatrix<'a> {
    pub fn new(name: impl Into<String>, weights: &'a mut Weights, gathered: bool) -> Self {
        Self {
            name: name.into(),
            weights,
            gathered,
            stacked: Vec::new(),
        }
    }

    /// A matrix stacked from projections of `rows` rows each.
    pub fn stacked(mut self, rows: Vec<usize>) -> Self {
        self.stacked = rows;
        self
    }

    /// Row ranges quantized on their own: each stacked projection, or all rows.
    pub fn quant_parts(&self) -> Vec<std::ops::Range<usize>> {
        if self.stacked.is_empty() {
            return std::iter::once(0..self.weights.n).collect();
        }
        let mut start = 0;
        self.stacked
            .iter()
            .map(|&n| {
                start += n;
                start - n..start
            })
            .collect()
    }
}

/// Bytes of `matrices` on the device (data, scales, zero points, biases).
pub fn matrix_bytes(matrices: &[&Weights]) -> u64 {
    matrices.iter().map(|w| w.size_bytes()).sum()
}

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
    /// Per layer: keys and values, each [n_seq, n_kv_head, capacity, head_dim].
    caches: Vec<KvCache>,
    x: Tensor,      // [rows, n_embd] residual stream
    h: Tensor,      // [rows, n_embd] normed
    q: Tensor,      // [rows, n_head * head_dim]
    k: Tensor,      // [rows, n_kv_head * head_dim]
    v: Tensor,      // [rows, n_kv_head * head_dim]
    att: Tensor,    // [rows, n_head * head_dim]
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
    /// The steps' bind groups, made once: every step binds these same buffers.
    bind_groups: BindGroupCache,
}

impl Session {
    /// Bytes of the KV buffer (keys and values of every layer).
    pub fn kv_bytes(&self) -> u64 {
        self.caches.iter().map(KvCache::size_bytes).sum()
    }

    /// A cache of `n_seq` sequences of `capacity` positions; steps take at most `max_rows` rows.
    pub fn new(
        ctx: &Context,
        model: &dyn Architecture,
        n_seq: usize,
        capacity: usize,
        max_rows: usize,
    ) -> Result<Self> {
        Self::with_kv(ctx, model, n_seq, capacity, max_rows, KvFormat::F32)
    }

    /// As [`Session::new`], with the KV cache stored as `kv`.
    pub fn with_kv(
        ctx: &Context,
        model: &dyn Architecture,
        n_seq: usize,
        capacity: usize,
        max_rows: usize,
        kv: KvFormat,
    ) -> Result<Self> {
        let c = &model.dims();
        if let Some(max) = c.max_positions.filter(|&m| capacity > m) {
            return Err(ModelError::Config {
                path: "session".into(),
                message: format!("a context of {capacity} positions exceeds the model's {max}"),
            });
        }
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
        let caches = (0..c.n_layer)
            .map(|_| KvCache::new(ctx, &shape, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            bind_groups: BindGroupCache::new(),
            shape,
            max_rows,
            lens: vec![0; n_seq],
            caches,
            x: f(r * c.n_embd)?,
            h: f(r * c.n_embd)?,
            q: f(r * c.n_head * c.head_dim)?,
            k: f(r * c.n_kv_head * c.head_dim)?,
            v: f(r * c.n_kv_head * c.head_dim)?,
            att: f(r * c.n_head * c.head_dim)?,
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
        model: &dyn Architecture,
        rows: &[(usize, u32)],
        select: &[usize],
        output: Output,
    ) -> Result<StepOutput> {
        let c = &model.dims();
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
        let (qw, kvw) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let io = StepIo {
            rows: n,
            ids: self.ids.view(&[n])?,
            pos: self.pos.view(&[n])?,
            slots: self.slots.view(&[2 * n])?,
            meta: self.meta.view(&[2 * n])?,
            max_keys,
            x: v(&self.x, c.n_embd)?,
            h: v(&self.h, c.n_embd)?,
            q: v(&self.q, qw)?,
            k: v(&self.k, kvw)?,
            v: v(&self.v, kvw)?,
            att: v(&self.att, qw)?,
            gate: v(&self.gate, c.n_ff)?,
            up: v(&self.up, c.n_ff)?,
            act: v(&self.act, c.n_ff)?,
            shape: self.shape,
            scratch: self.scratch.clone(),
        };
        ctx.write(&io.ids, &ids)?;
        ctx.write(&io.pos, &pos)?;
        ctx.write(&io.slots, &slots)?;
        ctx.write(&io.meta, &meta)?;

        let recording = std::time::Instant::now();
        let mut rec = ctx.recorder_cached(&self.bind_groups);
        if let Some(n) = DevicePlan::of(ctx).submit_every {
            rec.submit_every(n);
        }
        model.record_blocks(&mut rec, &io, &self.caches)?;
        let (x, h) = (&io.x, &io.h);
        let m = select.len();
        let mut result = StepOutput::default();
        if m > 0 {
            // Only the selected rows go through the final norm and the LM head.
            let sel = v(&self.sel, c.n_embd)?.view(&[m, c.n_embd])?;
            if select.iter().copied().eq(0..n) {
                model.record_final_norm(&mut rec, x, &sel)?;
            } else {
                for (i, &row) in select.iter().enumerate() {
                    rec.copy(x, row * c.n_embd, h, i * c.n_embd, c.n_embd)?;
                }
                model.record_final_norm(&mut rec, &h.view(&[m, c.n_embd])?, &sel)?;
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
            result.record_time = recording.elapsed();
            rec.submit()?;
            match output {
                Output::Argmax => result.tokens = ctx.map_read(&self.readback, m)?,
                Output::Logits => result.logits = ctx.map_read(&self.readback, m * c.n_vocab)?,
            }
        } else {
            result.record_time = recording.elapsed();
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
    /// CPU time spent recording the step's launches up to its last submit (where the device
    /// plan submits as it records, the GPU works through most of it).
    pub record_time: std::time::Duration,
}
