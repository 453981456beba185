//! A running model of any [`Architecture`]: the KV cache of `n_seq` sequences and every activation buffer, created once
//! at the largest step size, so prefill and decode steps create no buffers. One [`Session::step`]
//! runs any mix of rows (a prompt chunk of one sequence, or one token of each of several) through
//! the whole model, and the copy of its result, in a single submit.

use kiln_kernels::DevicePlan;
use kiln_kernels::attention::{AttnShape, KEY_BLOCK, KvCache, KvFormat};
use kiln_runtime::{BindGroupCache, Context, Readback, Submitted, Tensor};

pub use crate::architecture::Architecture;
use crate::error::{ModelError, Result};
pub use crate::step::{Dims, Output, StepIo};

pub struct Session {
    pub shape: AttnShape,
    max_rows: usize,
    /// Tokens held per sequence.
    lens: Vec<usize>,
    /// Per layer: keys and values, each [n_seq, n_kv_head, capacity, head_dim].
    caches: Vec<KvCache>,
    /// Every buffer of a step, at the largest step's rows.
    io: StepIo,
    /// Staging for the step's result (argmax ids or logits), copied in the step's own submit.
    readback: Readback,
    /// The steps' bind groups, made once: every step binds these same buffers.
    bind_groups: BindGroupCache,
    /// Decode steps submitted ahead of their results.
    ahead: Ahead,
}

/// Steps [`Session::step_ahead`] keeps readable at once.
pub const AHEAD_SLOTS: usize = 3;

/// The state of steps submitted ahead: a ring of token readbacks and the sequences of the last.
struct Ahead {
    readbacks: Vec<Readback>,
    /// The step last copied into each readback.
    written: [u64; AHEAD_SLOTS],
    next_step: u64,
    /// The sequences of the last step, while the next may chain on it.
    chain: Option<Vec<usize>>,
}

/// A step submitted by [`Session::step_ahead`] whose tokens have not been read.
pub struct Pending {
    submitted: Submitted,
    step: u64,
    rows: usize,
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
        let caches = (0..c.n_layer)
            .map(|_| KvCache::new(ctx, &shape, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            bind_groups: BindGroupCache::new(),
            shape,
            max_rows,
            lens: vec![0; n_seq],
            caches,
            io: StepIo::new(ctx, c, shape, max_rows)?,
            readback: ctx.readback((max_rows * c.n_vocab * 4) as u64)?,
            ahead: Ahead {
                readbacks: (0..AHEAD_SLOTS)
                    .map(|_| ctx.readback((max_rows * 4) as u64))
                    .collect::<Result<_, _>>()?,
                written: [u64::MAX; AHEAD_SLOTS],
                next_step: 0,
                chain: None,
            },
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
        self.ahead.chain = None;
    }

    /// Keeps the first `keep` (at most [`Session::len`]) cached positions of sequence `seq` and
    /// forgets the rest, so a new prompt that starts with those tokens skips recomputing them.
    /// Returns the positions kept: an int8 cache keeps whole [`KEY_BLOCK`]s, since a full
    /// block's keys are quantized with one scale and cannot take new rows.
    pub fn truncate(&mut self, seq: usize, keep: usize) -> usize {
        let mut keep = keep.min(self.lens[seq]);
        if self
            .caches
            .first()
            .is_some_and(|c| c.format == KvFormat::Int8)
        {
            keep -= keep % KEY_BLOCK;
        }
        self.lens[seq] = keep;
        self.ahead.chain = None;
        keep
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
        let (io, lens) = self.stage(ctx, model, rows, select, output)?;
        let recording = std::time::Instant::now();
        let mut rec = self.recorder(ctx);
        model.record_step(&mut rec, &io, &self.caches)?;
        let m = select.len();
        let result: &Tensor = match output {
            Output::Argmax => &io.best,
            Output::Logits => &io.logits,
        };
        if m > 0 {
            rec.read_back(result, &self.readback)?;
        }
        let mut out = StepOutput {
            record_time: recording.elapsed(),
            launches: rec.len(),
            ..StepOutput::default()
        };
        rec.submit()?;
        if m > 0 {
            match output {
                Output::Argmax => out.tokens = ctx.map_read(&self.readback, m)?,
                Output::Logits => out.logits = ctx.map_read(&self.readback, m * c.n_vocab)?,
            }
        }
        self.lens = lens;
        self.ahead.chain = None;
        Ok(out)
    }

    /// Submits a greedy decode step of one row for each sequence of `seqs` and returns without
    /// waiting for it ([`Session::tokens`] reads its tokens later). The rows' tokens are
    /// `tokens` where given; `None` chains the step on the one before it, which must have been
    /// submitted this way over the same `seqs`: its argmax tokens are copied into this step's
    /// input on the device, so steps queue up with no wait on the CPU between them.
    pub fn step_ahead(
        &mut self,
        ctx: &Context,
        model: &dyn Architecture,
        seqs: &[usize],
        tokens: Option<&[u32]>,
    ) -> Result<Pending> {
        let limit = |message: String| ModelError::Config {
            path: "session".into(),
            message,
        };
        match tokens {
            Some(t) if t.len() != seqs.len() => {
                return Err(limit(format!(
                    "{} tokens for {} sequences",
                    t.len(),
                    seqs.len()
                )));
            }
            None if self.ahead.chain.as_deref() != Some(seqs) => {
                return Err(limit(format!(
                    "a chained step decodes the sequences of the step before it, in its order: {seqs:?} after {:?}",
                    self.ahead.chain
                )));
            }
            _ => {}
        }
        let rows: Vec<(usize, u32)> = (0..seqs.len())
            .map(|i| (seqs[i], tokens.map_or(0, |t| t[i])))
            .collect();
        let all: Vec<usize> = (0..rows.len()).collect();
        let (io, lens) = self.stage(ctx, model, &rows, &all, Output::Argmax)?;
        let mut rec = self.recorder(ctx);
        if tokens.is_none() {
            // Runs after the step's staged writes of its (placeholder) ids.
            rec.copy(&self.io.best, 0, &io.ids, 0, rows.len())?;
        }
        model.record_step(&mut rec, &io, &self.caches)?;
        let step = self.ahead.next_step;
        let slot = (step % AHEAD_SLOTS as u64) as usize;
        rec.read_back(&io.best, &self.ahead.readbacks[slot])?;
        let submitted = rec.submit()?;
        self.ahead.written[slot] = step;
        self.ahead.next_step += 1;
        self.ahead.chain = Some(seqs.to_vec());
        self.lens = lens;
        Ok(Pending {
            submitted,
            step,
            rows: rows.len(),
        })
    }

    /// The argmax tokens of a step submitted by [`Session::step_ahead`], one per sequence in its
    /// order, waiting for that step alone (steps submitted after it keep running). A step's
    /// tokens can be read until [`AHEAD_SLOTS`] more steps have been submitted.
    pub fn tokens(&self, ctx: &Context, pending: &Pending) -> Result<Vec<u32>> {
        let slot = (pending.step % AHEAD_SLOTS as u64) as usize;
        if self.ahead.written[slot] != pending.step {
            return Err(ModelError::Config {
                path: "session".into(),
                message: format!(
                    "step {} was read too late: {AHEAD_SLOTS} steps have been submitted since",
                    pending.step
                ),
            });
        }
        let readback = &self.ahead.readbacks[slot];
        Ok(ctx.map_read_after(readback, pending.rows, &pending.submitted)?)
    }

    fn recorder<'c>(&'c self, ctx: &'c Context) -> kiln_runtime::Recorder<'c> {
        let mut rec = ctx.recorder_cached(&self.bind_groups);
        if let Some(n) = DevicePlan::of(ctx).submit_every {
            rec.submit_every(n);
        }
        rec
    }

    /// Checks `rows` and writes their ids, positions and cache slots for a step; returns the
    /// step's view of the buffers and the sequence lengths after it.
    fn stage(
        &self,
        ctx: &Context,
        model: &dyn Architecture,
        rows: &[(usize, u32)],
        select: &[usize],
        output: Output,
    ) -> Result<(StepIo, Vec<usize>)> {
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
        let mut seen = vec![false; self.lens.len()];
        let sole = rows
            .iter()
            .all(|&(seq, _)| !std::mem::replace(&mut seen[seq], true));

        let io = self.io.view(n, (max_keys, sole), select, output)?;
        ctx.write(&io.ids, &ids)?;
        ctx.write(&io.pos, &pos)?;
        ctx.write(&io.slots, &slots)?;
        ctx.write(&io.meta, &meta)?;
        Ok((io, lens))
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
    /// Kernel launches the step recorded.
    pub launches: usize,
}
