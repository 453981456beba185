//! A running model of any [`Architecture`]: the KV cache of `n_seq` sequences and every activation buffer, created once
//! at the largest step size, so prefill and decode steps create no buffers. The cache is a pool
//! of blocks ([`BlockPool`]): sequences take blocks as they grow, give them back when reset, and
//! share the full blocks of a common prefix ([`Session::attach_prefix`]). One [`Session::step`]
//! runs any mix of rows (a prompt chunk of one sequence, or one token of each of several) through
//! the whole model, and the copy of its result, in a single submit.

use kiln_kernels::DevicePlan;
use kiln_kernels::attention::{AttnShape, DEFAULT_BLOCK, KEY_BLOCK, KvCache, KvFormat, Paging};
use kiln_runtime::{BindGroupCache, Context, Readback, Submitted, Tensor};

pub use crate::architecture::Architecture;
use crate::error::{ModelError, Result};
use crate::kv_blocks::{BlockCounts, BlockPool};
pub use crate::step::{Dims, Output, StepIo};

pub struct Session {
    pub shape: AttnShape,
    max_rows: usize,
    /// Tokens held per sequence.
    lens: Vec<usize>,
    /// Per layer: keys and values in blocks of the pool.
    caches: Vec<KvCache>,
    /// Which blocks each sequence holds; the device's copy of its table is in `paging`.
    pool: BlockPool,
    paging: Paging,
    /// The table last written to the device.
    table: Vec<u32>,
    /// Every buffer of a step, at the largest step's rows.
    io: StepIo,
    /// Staging for the step's result (argmax ids or logits), copied in the step's own submit.
    readback: Readback,
    /// The steps' bind groups, made once: every step binds these same buffers.
    bind_groups: BindGroupCache,
    /// Decode steps submitted ahead of their results.
    ahead: Ahead,
}

/// The KV block pool of a session: `blocks` blocks of `block` positions (a power of two; a
/// multiple of [`KEY_BLOCK`] for int8 KV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub block: usize,
    pub blocks: usize,
}

impl PoolSize {
    /// Room for `n_seq` whole sequences of `capacity` positions, in blocks of `block`.
    pub fn whole(n_seq: usize, capacity: usize, block: usize) -> Self {
        Self {
            block,
            blocks: n_seq * Paging::width(block, capacity),
        }
    }
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

    /// As [`Session::new`], with the KV cache stored as `kv`, with room for every sequence's
    /// whole capacity.
    pub fn with_kv(
        ctx: &Context,
        model: &dyn Architecture,
        n_seq: usize,
        capacity: usize,
        max_rows: usize,
        kv: KvFormat,
    ) -> Result<Self> {
        let pool = PoolSize::whole(n_seq, capacity, DEFAULT_BLOCK.max(kv.min_block()));
        Self::with_pool(ctx, model, (n_seq, capacity, max_rows), kv, pool)
    }

    /// A session of `n_seq` sequences of up to `capacity` positions, steps of up to `max_rows`
    /// rows, over a KV pool of `pool` blocks stored as `kv`. A step needing more blocks than
    /// are left fails with [`ModelError::KvFull`].
    pub fn with_pool(
        ctx: &Context,
        model: &dyn Architecture,
        (n_seq, capacity, max_rows): (usize, usize, usize),
        kv: KvFormat,
        pool: PoolSize,
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
        let paging = Paging::new(ctx, &shape, pool.block, pool.blocks)?;
        let caches = (0..c.n_layer)
            .map(|_| KvCache::paged(ctx, &shape, kv, &paging))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            pool: BlockPool::new(n_seq, capacity, pool.block, pool.blocks),
            table: vec![0; paging.table.len()],
            paging,
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

    /// Forgets sequence `seq` and gives back its blocks (full ones keep their prefix for
    /// [`Session::attach_prefix`] until the pool needs them).
    pub fn reset(&mut self, seq: usize) {
        self.lens[seq] = 0;
        self.pool.reset(seq);
        self.ahead.chain = None;
    }

    /// Gives empty sequence `seq` the cached blocks that `prompt` starts with (full blocks that
    /// another sequence computed from the same tokens, held or released), so its steps start
    /// after them; returns the positions it now holds. At least the prompt's last token is left
    /// to run, since its logits give the next token.
    pub fn attach_prefix(&mut self, seq: usize, prompt: &[u32]) -> Result<usize> {
        if self.lens[seq] != 0 {
            return Err(ModelError::Config {
                path: "session".into(),
                message: format!(
                    "a prefix attaches to an empty sequence; {seq} holds {}",
                    self.lens[seq]
                ),
            });
        }
        let n = self.pool.attach(seq, prompt);
        self.lens[seq] = n;
        self.ahead.chain = None;
        Ok(n)
    }

    /// Positions of `prompt` that [`Session::attach_prefix`] would find cached.
    pub fn cached_prefix(&self, prompt: &[u32]) -> usize {
        self.pool.cached_prefix(prompt) * self.pool.block()
    }

    /// Blocks of the KV pool by state.
    pub fn blocks(&self) -> BlockCounts {
        self.pool.counts()
    }

    /// Bind groups the session keeps for its steps (at most [`kiln_runtime::bind_cache::MAX_ENTRIES`]).
    pub fn bind_groups_held(&self) -> usize {
        self.bind_groups.len()
    }

    /// Positions per KV block.
    pub fn block_size(&self) -> usize {
        self.pool.block()
    }

    /// New blocks sequence `seq` needs to take `more` positions.
    pub fn blocks_needed(&self, seq: usize, more: usize) -> usize {
        self.pool.needed(seq, self.lens[seq], more)
    }

    /// Blocks the pool can still give: free ones and cached ones.
    pub fn blocks_available(&self) -> usize {
        self.pool.available()
    }

    /// Keeps the first `keep` (at most [`Session::len`]) cached positions of sequence `seq` and
    /// forgets the rest, so a new prompt that starts with those tokens skips recomputing them.
    /// Returns the positions kept: an int8 cache keeps whole [`KEY_BLOCK`]s, since a full
    /// group's keys are quantized with one scale and cannot take new rows; and a block another
    /// sequence shares is kept whole or not at all.
    pub fn truncate(&mut self, seq: usize, keep: usize) -> usize {
        let mut keep = keep.min(self.lens[seq]);
        if self
            .caches
            .first()
            .is_some_and(|c| c.format == KvFormat::Int8)
        {
            keep -= keep % KEY_BLOCK;
        }
        let keep = self.pool.truncate(seq, self.lens[seq], keep);
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
        let (io, lens) = self.stage(ctx, model, rows, select, output, true)?;
        let out = self.run_step(ctx, model, &io, output);
        let out = self.settle(out, lens)?;
        Ok(out)
    }

    fn run_step(
        &self,
        ctx: &Context,
        model: &dyn Architecture,
        io: &StepIo,
        output: Output,
    ) -> Result<StepOutput> {
        let c = &model.dims();
        let recording = std::time::Instant::now();
        let mut rec = self.recorder(ctx);
        model.record_step(&mut rec, io, &self.caches)?;
        let m = io.select.len();
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
        Ok(out)
    }

    /// Commits a staged step's lengths if it ran; if not, gives back the blocks it took and
    /// forgets cached prefixes (what it wrote is unknown).
    fn settle<T>(&mut self, ran: Result<T>, lens: Vec<usize>) -> Result<T> {
        match ran {
            Ok(t) => {
                self.lens = lens;
                self.ahead.chain = None;
                Ok(t)
            }
            Err(e) => {
                for (seq, (&after, &before)) in lens.iter().zip(&self.lens).enumerate() {
                    if after > before {
                        self.pool.truncate(seq, after, before);
                    }
                }
                self.pool.forget_prefixes();
                self.ahead.chain = None;
                Err(e)
            }
        }
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
        let (io, lens) = self.stage(ctx, model, &rows, &all, Output::Argmax, tokens.is_some())?;
        let submitted = self.submit_ahead(ctx, model, &io, tokens.is_none());
        let submitted = self.settle(submitted, lens)?;
        let step = self.ahead.next_step;
        let slot = (step % AHEAD_SLOTS as u64) as usize;
        self.ahead.written[slot] = step;
        self.ahead.next_step += 1;
        self.ahead.chain = Some(seqs.to_vec());
        Ok(Pending {
            submitted,
            step,
            rows: rows.len(),
        })
    }

    fn submit_ahead(
        &self,
        ctx: &Context,
        model: &dyn Architecture,
        io: &StepIo,
        chained: bool,
    ) -> Result<Submitted> {
        let mut rec = self.recorder(ctx);
        if chained {
            // Runs after the step's staged writes of its (placeholder) ids.
            rec.copy(&self.io.best, 0, &io.ids, 0, io.rows)?;
        }
        model.record_step(&mut rec, io, &self.caches)?;
        let slot = (self.ahead.next_step % AHEAD_SLOTS as u64) as usize;
        rec.read_back(&io.best, &self.ahead.readbacks[slot])?;
        Ok(rec.submit()?)
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

    /// Checks `rows`, takes the blocks their positions need, and writes their ids, positions,
    /// cache slots and the block table for a step; returns the step's view of the buffers and
    /// the sequence lengths after it. `known`: whether the rows' tokens are theirs (not
    /// placeholders for a chained step's).
    fn stage(
        &mut self,
        ctx: &Context,
        model: &dyn Architecture,
        rows: &[(usize, u32)],
        select: &[usize],
        output: Output,
        known: bool,
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
        // Last, so that nothing after it can fail and leave the pool ahead of `self.lens`.
        self.take_blocks(ctx, rows, &lens, known)?;
        Ok((io, lens))
    }
}

impl Session {
    /// Gives each sequence of `rows` the blocks up to its length in `lens` (all or none),
    /// records its tokens for the prefix cache, and writes the block table if it changed.
    fn take_blocks(
        &mut self,
        ctx: &Context,
        rows: &[(usize, u32)],
        lens: &[usize],
        known: bool,
    ) -> Result<()> {
        let grows = || (0..lens.len()).filter(|&s| lens[s] > self.lens[s]);
        let needed: usize = grows()
            .map(|s| self.pool.needed(s, self.lens[s], lens[s] - self.lens[s]))
            .sum();
        if needed > self.pool.available() {
            return Err(ModelError::KvFull {
                needed,
                available: self.pool.available(),
                block: self.pool.block(),
            });
        }
        for seq in grows().collect::<Vec<_>>() {
            self.pool.grow(seq, lens[seq]);
            let tokens: Vec<u32> = rows.iter().filter(|r| r.0 == seq).map(|r| r.1).collect();
            self.pool
                .append(seq, self.lens[seq], known.then_some(&tokens[..]));
        }
        let table = self.pool.table();
        if table != self.table {
            if let Err(e) = self.paging.write_table(ctx, &table) {
                self.settle::<()>(Err(e.into()), lens.to_vec())?;
            }
            self.table = table;
        }
        Ok(())
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
