//! The buffers of one step — token ids, positions, cache slots, activations, logits — made once
//! at a session's largest step and viewed at each step's rows, so that steps create none.

use kiln_kernels::argmax::argmax;
use kiln_kernels::attention::{self, AttnShape, NewRows};
use kiln_runtime::{Context, DType, Recorder, Tensor};

use crate::error::Result;

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

/// What a step returns for its selected rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The argmax token of each selected row (4 bytes read back per row).
    Argmax,
    /// The full logits of each selected row.
    Logits,
}

/// The buffers of a step of `rows` rows, of which `select` want logits.
pub struct StepIo {
    pub rows: usize,
    pub ids: Tensor,   // [rows] u32 token ids
    pub pos: Tensor,   // [rows] u32 positions
    pub slots: Tensor, // [2 rows] u32 (sequence, position) for kv_store
    pub meta: Tensor,  // [2 rows] u32 (sequence, key count) for attention
    pub max_keys: usize,
    /// Whether each row is the only new row of its sequence (a decode step).
    pub sole: bool,
    pub x: Tensor,      // [rows, n_embd] residual stream
    pub h: Tensor,      // [rows, n_embd] normed
    pub q: Tensor,      // [rows, n_head * head_dim]
    pub k: Tensor,      // [rows, n_kv_head * head_dim]
    pub v: Tensor,      // [rows, n_kv_head * head_dim]
    pub att: Tensor,    // [rows, n_head * head_dim]
    pub gate: Tensor,   // [rows, n_ff]
    pub up: Tensor,     // [rows, n_ff]
    pub act: Tensor,    // [rows, n_ff] the MLP's activation
    pub sel: Tensor,    // [selected, n_embd] the selected rows, normed
    pub logits: Tensor, // [selected, n_vocab]
    pub best: Tensor,   // [selected] u32 argmax
    /// Rows whose logits the step wants, in the order they are returned.
    pub select: Vec<usize>,
    pub output: Output,
    pub shape: AttnShape,
    /// Attention's split partials.
    pub scratch: Tensor,
}

impl StepIo {
    /// Buffers for steps of up to `max_rows` rows over caches of `shape`.
    pub fn new(ctx: &Context, c: &Dims, shape: AttnShape, max_rows: usize) -> Result<Self> {
        let r = max_rows;
        let f = |width: usize| ctx.zeros(DType::F32, &[r, width]);
        let u = |width: usize| ctx.zeros(DType::U32, &[r * width]);
        let scratch = (1..=r)
            .map(|rows| attention::scratch_len(&shape, rows, shape.capacity, None))
            .max()
            .unwrap_or(0);
        let (qw, kvw) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        Ok(Self {
            rows: r,
            ids: u(1)?,
            pos: u(1)?,
            slots: u(2)?,
            meta: u(2)?,
            max_keys: shape.capacity,
            sole: false,
            x: f(c.n_embd)?,
            h: f(c.n_embd)?,
            q: f(qw)?,
            k: f(kvw)?,
            v: f(kvw)?,
            att: f(qw)?,
            gate: f(c.n_ff)?,
            up: f(c.n_ff)?,
            act: f(c.n_ff)?,
            sel: f(c.n_embd)?,
            logits: f(c.n_vocab)?,
            best: u(1)?,
            select: (0..r).collect(),
            output: Output::Logits,
            shape,
            scratch: ctx.zeros(DType::F32, &[scratch.max(1)])?,
        })
    }

    /// Views of these buffers for a step of `rows` rows attending over at most `max_keys` keys
    /// (`sole`: each row its sequence's only new one), of which `select` want `output`.
    pub fn view(
        &self,
        rows: usize,
        (max_keys, sole): (usize, bool),
        select: &[usize],
        output: Output,
    ) -> Result<Self> {
        let (n, m) = (rows, select.len());
        let v = |t: &Tensor, rows: usize| t.view(&[rows, t.shape()[1]]);
        Ok(Self {
            rows: n,
            ids: self.ids.view(&[n])?,
            pos: self.pos.view(&[n])?,
            slots: self.slots.view(&[2 * n])?,
            meta: self.meta.view(&[2 * n])?,
            max_keys,
            sole,
            x: v(&self.x, n)?,
            h: v(&self.h, n)?,
            q: v(&self.q, n)?,
            k: v(&self.k, n)?,
            v: v(&self.v, n)?,
            att: v(&self.att, n)?,
            gate: v(&self.gate, n)?,
            up: v(&self.up, n)?,
            act: v(&self.act, n)?,
            sel: v(&self.sel, m)?,
            logits: v(&self.logits, m)?,
            best: self.best.view(&[m])?,
            select: select.to_vec(),
            output,
            shape: self.shape,
            scratch: self.scratch.clone(),
        })
    }

    /// The step's new queries, keys and values with their cache slots, for the attention.
    pub fn new_rows(&self) -> NewRows<'_> {
        NewRows {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            slots: &self.slots,
            meta: &self.meta,
            max_keys: self.max_keys,
            sole: self.sole,
        }
    }

    /// The residual rows whose logits are wanted: `x` itself when they are all its rows in
    /// order, else copied into `h`; `None` when no row is.
    pub fn selected_rows(&self, rec: &mut Recorder<'_>) -> Result<Option<Tensor>> {
        let (m, e) = (self.select.len(), self.x.shape()[1]);
        if m == 0 {
            return Ok(None);
        }
        if self.select.iter().copied().eq(0..self.rows) {
            return Ok(Some(self.x.clone()));
        }
        for (i, &row) in self.select.iter().enumerate() {
            rec.copy(&self.x, row * e, &self.h, i * e, e)?;
        }
        Ok(Some(self.h.view(&[m, e])?))
    }

    /// What the step returns after the LM head wrote `logits`: the argmax of each row into
    /// `best` where tokens are wanted.
    pub fn finish(&self, rec: &mut Recorder<'_>) -> Result<()> {
        if self.output == Output::Argmax && !self.select.is_empty() {
            let n_vocab = self.logits.shape()[1];
            argmax(rec, &self.logits, n_vocab, &self.best)?;
        }
        Ok(())
    }
}
