//! Attention over a KV cache with grouped-query heads: `shaders/attention.wgsl`.
//!
//! The cache holds `[n_seq, kv_heads, capacity, head_dim]` f32 keys and values. [`kv_store`]
//! writes new rows at their positions; [`attention`] runs causal prefill (one query row per prompt
//! token, each with its own key count) and batched decode (one row per sequence). Long key ranges
//! are split across workgroups and merged, as in flash-decoding (Dao et al. 2023).

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::{Result, ShaderVariants, ensure, expect, groups_for};

pub const SHADER: Shader = Shader {
    name: "attention",
    parts: &[include_str!("../../shaders/attention.wgsl")],
};

/// Widest head the kernel holds in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;
/// Keys per split when a decode row's keys are spread over several workgroups.
pub const DEFAULT_SPLIT: usize = 256;

/// Heads and cache geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions per sequence in the cache.
    pub capacity: usize,
    /// Sequences in the cache.
    pub n_seq: usize,
}

impl AttnShape {
    /// Elements of one cache tensor (keys or values).
    pub fn cache_len(&self) -> usize {
        self.n_seq * self.kv_heads * self.capacity * self.head_dim
    }

    fn check(&self, kernel: &'static str, k_cache: &Tensor, v_cache: &Tensor) -> Result<()> {
        ensure(
            self.kv_heads > 0
                && self.heads.is_multiple_of(self.kv_heads)
                && self.head_dim > 0
                && self.head_dim <= MAX_HEAD_DIM,
            kernel,
            || format!("{self:?}: kv_heads must divide heads and head_dim be 1..={MAX_HEAD_DIM}"),
        )?;
        expect(k_cache, kernel, "k_cache", DType::F32, self.cache_len())?;
        expect(v_cache, kernel, "v_cache", DType::F32, self.cache_len())
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    h: u32,
    kvh: u32,
    d: u32,
    c: u32,
    r: u32,
    splits: u32,
    split_len: u32,
    _pad3: u32,
    scale: f32,
    _pad: [u32; 3],
}

impl Params {
    fn new(s: &AttnShape, rows: usize) -> Self {
        Self {
            h: s.heads as u32,
            kvh: s.kv_heads as u32,
            d: s.head_dim as u32,
            c: s.capacity as u32,
            r: rows as u32,
            splits: 1,
            split_len: 0,
            _pad3: 0,
            scale: 1.0,
            _pad: [0; 3],
        }
    }
}

/// Writes `k_new`, `v_new` (`[T, kv_heads, head_dim]`) into the caches: row `t` goes to
/// sequence `slots[2t]` at position `slots[2t + 1]` (`slots`: `[2T]`, u32). Slots are not checked
/// on the GPU: callers keep sequences below `n_seq` and positions below `capacity`.
#[allow(clippy::too_many_arguments)]
pub fn kv_store(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    k_new: &Tensor,
    v_new: &Tensor,
    slots: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
) -> Result<()> {
    shape.check("kv_store", k_cache, v_cache)?;
    let t = slots.len() / 2;
    expect(slots, "kv_store", "slots", DType::U32, 2 * t)?;
    let row = shape.kv_heads * shape.head_dim;
    expect(k_new, "kv_store", "k_new", DType::F32, t * row)?;
    expect(v_new, "kv_store", "v_new", DType::F32, t * row)?;
    let params = Params::new(shape, t);
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "kv_store",
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &[
            Binding::new(1, k_new),
            Binding::new(2, v_new),
            Binding::new(3, slots),
            Binding::new(4, k_cache),
            Binding::new(5, v_cache),
        ],
        workgroups: groups_for(t * shape.kv_heads, 1)?,
    })?;
    Ok(())
}

/// How the keys of the longest row are split: (splits, keys per split).
pub fn split_plan(
    rows: usize,
    heads: usize,
    max_keys: usize,
    split_len: Option<usize>,
) -> (usize, usize) {
    let whole = max_keys.div_ceil(64).max(1) * 64;
    match split_len {
        Some(len) => {
            let len = len.div_ceil(64).max(1) * 64;
            (max_keys.div_ceil(len).max(1), len)
        }
        // Enough (row, head) pairs already fill the device, or the range is short: one split.
        None if rows * heads >= 256 || max_keys <= DEFAULT_SPLIT => (1, whole),
        None => (max_keys.div_ceil(DEFAULT_SPLIT), DEFAULT_SPLIT),
    }
}

/// Elements of scratch [`attention`] needs for these arguments (0 when unsplit).
pub fn scratch_len(
    shape: &AttnShape,
    rows: usize,
    max_keys: usize,
    split_len: Option<usize>,
) -> usize {
    match split_plan(rows, shape.heads, max_keys, split_len) {
        (1, _) => 0,
        (splits, _) => rows * shape.heads * splits * (shape.head_dim + 2),
    }
}

/// Softmax attention of query rows `q` (`[R, heads, head_dim]`) into `out` (same shape).
///
/// `meta` (`[2R]`, u32) gives each row's sequence and key count (keys `0..count` of the cache;
/// causal prefill passes `position + 1`); `max_keys` bounds the counts. `scratch` holds
/// [`scratch_len`] elements for split rows; `split_len` overrides the split size (tests).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    q: &Tensor,
    meta: &Tensor,
    max_keys: usize,
    k_cache: &Tensor,
    v_cache: &Tensor,
    out: &Tensor,
    scratch: &Tensor,
    scale: f32,
    split_len: Option<usize>,
) -> Result<()> {
    shape.check("attention", k_cache, v_cache)?;
    let rows = meta.len() / 2;
    expect(meta, "attention", "meta", DType::U32, rows * 2)?;
    let width = shape.heads * shape.head_dim;
    expect(q, "attention", "q", DType::F32, rows * width)?;
    expect(out, "attention", "out", DType::F32, rows * width)?;
    ensure(
        max_keys > 0 && max_keys <= shape.capacity,
        "attention",
        || {
            format!(
                "key count {max_keys} must be 1..={} (the cache capacity)",
                shape.capacity
            )
        },
    )?;
    let (splits, split_len) = split_plan(rows, shape.heads, max_keys, split_len);
    let need = scratch_len(shape, rows, max_keys, Some(split_len));
    ensure(
        splits == 1 || (scratch.dtype() == DType::F32 && scratch.len() >= need),
        "attention",
        || {
            format!(
                "scratch must hold {need} f32, got {:?}{:?}",
                scratch.dtype(),
                scratch.shape()
            )
        },
    )?;
    let params = Params {
        splits: splits as u32,
        split_len: split_len as u32,
        scale,
        ..Params::new(shape, rows)
    };
    let bindings = [
        Binding::new(1, q),
        Binding::new(3, meta),
        Binding::new(4, k_cache),
        Binding::new(5, v_cache),
        Binding::new(6, out),
        Binding::new(7, scratch),
    ];
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "attend",
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(rows * shape.heads * splits, 1)?,
    })?;
    if splits > 1 {
        rec.dispatch(&Dispatch {
            shader: &SHADER,
            entry: "combine",
            defines: &Defines::new(),
            params: bytemuck::bytes_of(&params),
            bindings: &[Binding::new(6, out), Binding::new(7, scratch)],
            workgroups: groups_for(rows * shape.heads, 1)?,
        })?;
    }
    Ok(())
}

/// CPU reference over the same cache layout (f64).
pub fn attention_ref(
    shape: &AttnShape,
    q: &[f32],
    meta: &[u32],
    k_cache: &[f32],
    v_cache: &[f32],
    scale: f32,
) -> Vec<f32> {
    let (h_n, d_n) = (shape.heads, shape.head_dim);
    let group = shape.heads / shape.kv_heads;
    let mut out = vec![0f32; q.len()];
    for r in 0..meta.len() / 2 {
        let (seq, keys) = (meta[2 * r] as usize, meta[2 * r + 1] as usize);
        for h in 0..h_n {
            let kvh = h / group;
            let qrow = &q[(r * h_n + h) * d_n..][..d_n];
            let at = |j: usize| ((seq * shape.kv_heads + kvh) * shape.capacity + j) * d_n;
            let scores: Vec<f64> = (0..keys)
                .map(|j| {
                    qrow.iter()
                        .zip(&k_cache[at(j)..][..d_n])
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = w.iter().sum();
            for d in 0..d_n {
                let o: f64 = (0..keys).map(|j| w[j] * v_cache[at(j) + d] as f64).sum();
                out[(r * h_n + h) * d_n + d] = (o / sum) as f32;
            }
        }
    }
    out
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![(Defines::new(), vec!["kv_store", "attend", "combine"])],
    }
}
