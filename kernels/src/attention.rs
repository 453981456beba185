//! Attention over a KV cache with grouped-query heads: `shaders/attention.wgsl`.
//!
//! A [`KvCache`] (`kv_cache.rs`) holds keys and values in blocks of positions named by a block
//! table per sequence. [`kv_store`] writes new rows at their positions; [`attention`] runs causal
//! prefill (one query row per prompt token, each with its own key count) and batched decode (one
//! row per sequence), dequantizing inside the kernel. Long key ranges are split across workgroups
//! and merged, as in flash-decoding (Dao et al. 2023).

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Context, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect, groups_for};
pub use crate::kv_cache::{AttnShape, DEFAULT_BLOCK, KEY_BLOCK, KvCache, KvFormat, Paging};
pub use crate::plan::Attend;
use crate::plan::DevicePlan;
use crate::rope::{ROTARY_WGSL, Rope, RopeLayout};
use crate::variants::ShaderVariants;

const COMMON_WGSL: &str = include_str!("../../shaders/attention_common.wgsl");

/// The KV store, attention over key chunks per workgroup ([`Attend::Keys`]) and the merge of
/// split key ranges.
pub const SHADER: Shader = Shader {
    name: "attention",
    parts: &[
        ROTARY_WGSL,
        COMMON_WGSL,
        include_str!("../../shaders/attention.wgsl"),
    ],
};

/// The CPU-adapter kernels: [`Attend::Rows`] and [`Attend::Lanes`].
pub const SHADER_CPU: Shader = Shader {
    name: "attention_cpu",
    parts: &[
        COMMON_WGSL,
        include_str!("../../shaders/attention_cpu.wgsl"),
    ],
};

/// Widest head the kernel holds in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;
/// The fewest keys per split any device plan takes ([`DevicePlan::attention_split`]): scratch
/// sized with [`scratch_len`] for it serves every plan.
pub const MIN_SPLIT: usize = 64;

/// Checks that `shape` is one the kernels take and `cache` was made for it.
fn check_shape(shape: &AttnShape, kernel: &'static str, cache: &KvCache) -> Result<()> {
    ensure(
        shape.kv_heads > 0
            && shape.heads.is_multiple_of(shape.kv_heads)
            && shape.head_dim > 0
            && shape.head_dim <= MAX_HEAD_DIM,
        kernel,
        || format!("{shape:?}: kv_heads must divide heads and head_dim be 1..={MAX_HEAD_DIM}"),
    )?;
    ensure(
        cache.shape.kv_heads == shape.kv_heads
            && cache.shape.head_dim == shape.head_dim
            && cache.shape.capacity == shape.capacity
            && cache.shape.n_seq == shape.n_seq,
        kernel,
        || format!("the cache was made for {:?}, not {shape:?}", cache.shape),
    )
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
    /// kv_store with RoPE: rotating dims per head, base and layout (0 interleaved, 1 half split)
    rope_rot: u32,
    scale: f32,
    rope_base: f32,
    rope_mode: u32,
    /// The block pool: positions per block and its log2, table entries per sequence, where
    /// int8's residual keys start ([`KvCache::params`]).
    paging: [u32; 4],
    _pad: u32,
}

impl Params {
    fn set_rope(&mut self, rope: &Rope) {
        self.rope_rot = rope.rot_dims as u32;
        self.rope_base = rope.base;
        self.rope_mode = matches!(rope.layout, RopeLayout::HalfSplit) as u32;
    }

    fn new(s: &AttnShape, cache: &KvCache, rows: usize) -> Self {
        Self {
            h: s.heads as u32,
            kvh: s.kv_heads as u32,
            d: s.head_dim as u32,
            c: s.capacity as u32,
            r: rows as u32,
            splits: 1,
            split_len: 0,
            rope_rot: 0,
            scale: 1.0,
            rope_base: 0.0,
            rope_mode: 0,
            paging: cache.params(),
            _pad: 0,
        }
    }
}

/// Writes `k_new`, `v_new` (`[T, kv_heads, head_dim]`) into the cache: row `t` goes to
/// sequence `slots[2t]` at position `slots[2t + 1]` (`slots`: `[2T]`, u32). Slots are not checked
/// on the GPU: callers keep sequences below `n_seq` and positions below `capacity`, and give each
/// sequence's new rows consecutive positions following the ones it holds (as decoding does).
pub fn kv_store(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    k_new: &Tensor,
    v_new: &Tensor,
    slots: &Tensor,
    cache: &KvCache,
) -> Result<()> {
    store(rec, shape, (k_new, v_new), slots, cache, None)
}

/// [`kv_store`] with the layer's RoPE folded in: the new keys are rotated as they are stored,
/// and the queries `q` (`[T, heads, head_dim]`) in place, each row at its position in the cache
/// (`slots[2t + 1]`). One launch where [`crate::rope::rope`] (on q, and on k) and [`kv_store`]
/// take three.
pub fn kv_store_rope(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    (q, k_new): (&Tensor, &Tensor),
    v_new: &Tensor,
    slots: &Tensor,
    cache: &KvCache,
    rope: &Rope,
) -> Result<()> {
    check_rope("kv_store", shape, rope)?;
    let t = slots.len() / 2;
    expect(
        q,
        "kv_store",
        "q",
        DType::F32,
        t * shape.heads * shape.head_dim,
    )?;
    store(rec, shape, (k_new, v_new), slots, cache, Some((q, rope)))
}

fn check_rope(kernel: &'static str, shape: &AttnShape, rope: &Rope) -> Result<()> {
    ensure(
        rope.heads == shape.heads
            && rope.head_dim == shape.head_dim
            && rope.rot_dims.is_multiple_of(2)
            && rope.rot_dims > 0
            && rope.rot_dims <= shape.head_dim,
        kernel,
        || format!("RoPE {rope:?} does not fit heads of {shape:?}"),
    )
}

/// A step's new rows for [`store_and_attend`]: queries `q` (`[R, heads, head_dim]`), keys `k`
/// and values `v` (`[R, kv_heads, head_dim]`), `slots` and `meta` as [`kv_store`] and
/// [`attention`] take them.
pub struct NewRows<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub slots: &'a Tensor,
    pub meta: &'a Tensor,
    /// The largest key count in `meta`.
    pub max_keys: usize,
    /// Whether each row is the only new row of its sequence (a decode step), so that the store
    /// can fold into the attention.
    pub sole: bool,
}

/// [`kv_store`] (with [`kv_store_rope`]'s RoPE where `rope` is given) then [`attention`]; in one
/// launch where the device plan folds the store in ([`DevicePlan::store_in_attend`]), the rows
/// are `sole`, the plan attends with [`Attend::Keys`] and the cache is f32 or f16. The queries
/// are left turned or as given.
#[allow(clippy::too_many_arguments)]
pub fn store_and_attend(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    rows: &NewRows<'_>,
    cache: &KvCache,
    out: &Tensor,
    scratch: &Tensor,
    scale: f32,
    rope: Option<&Rope>,
) -> Result<()> {
    let r = rows.meta.len() / 2;
    let fold = rows.sole
        && DevicePlan::of(rec.context()).store_in_attend
        && attend_for(rec.context(), cache, r) == Attend::Keys;
    store_and_attend_in(rec, shape, rows, cache, out, scratch, scale, rope, fold)
}

/// [`store_and_attend`], folded or not as `fold` says (tests run both on one device); a fold
/// needs `rows.sole` and an f32 or f16 cache.
#[allow(clippy::too_many_arguments)]
pub fn store_and_attend_in(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    rows: &NewRows<'_>,
    cache: &KvCache,
    out: &Tensor,
    scratch: &Tensor,
    scale: f32,
    rope: Option<&Rope>,
    fold: bool,
) -> Result<()> {
    let (k, v, slots) = (rows.k, rows.v, rows.slots);
    let step = Step {
        q: rows.q,
        meta: rows.meta,
        max_keys: rows.max_keys,
        split_len: None,
        kernel: Attend::Keys,
    };
    ensure(!fold || rows.sole, "attention", || {
        "a store folds into the attention only where each row is its sequence's only new one".into()
    })?;
    if !fold || cache.format == KvFormat::Int8 {
        match rope {
            Some(rope) => kv_store_rope(rec, shape, (rows.q, k), v, slots, cache, rope)?,
            None => kv_store(rec, shape, k, v, slots, cache)?,
        }
        let kernel = attend_for(rec.context(), cache, rows.meta.len() / 2);
        return attend_launch(
            rec,
            shape,
            &Step { kernel, ..step },
            cache,
            out,
            scratch,
            scale,
            None,
        );
    }
    let r = rows.meta.len() / 2;
    let row = shape.kv_heads * shape.head_dim;
    expect(k, "attention", "k_new", DType::F32, r * row)?;
    expect(v, "attention", "v_new", DType::F32, r * row)?;
    if let Some(rope) = rope {
        check_rope("attention", shape, rope)?;
    }
    let fold = Fold { k, v, rope };
    attend_launch(rec, shape, &step, cache, out, scratch, scale, Some(fold))
}

fn store(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    (k_new, v_new): (&Tensor, &Tensor),
    slots: &Tensor,
    cache: &KvCache,
    rope: Option<(&Tensor, &Rope)>,
) -> Result<()> {
    check_shape(shape, "kv_store", cache)?;
    let t = slots.len() / 2;
    expect(slots, "kv_store", "slots", DType::U32, 2 * t)?;
    let row = shape.kv_heads * shape.head_dim;
    expect(k_new, "kv_store", "k_new", DType::F32, t * row)?;
    expect(v_new, "kv_store", "v_new", DType::F32, t * row)?;
    let mut params = Params::new(shape, cache, t);
    let mut bindings = vec![
        Binding::new(1, k_new),
        Binding::new(2, v_new),
        Binding::new(3, slots),
    ];
    if let Some((q, rope)) = rope {
        params.set_rope(rope);
        bindings.push(Binding::new(6, q));
        bindings.extend(rope.factor_binding("kv_store")?);
    }
    bindings.extend(cache.bindings());
    let variant = Variant::Store {
        kv: cache.format,
        rope: Rotary::of(rope.map(|(_, r)| r)),
    };
    let (shader, entry) = variant.kernel();
    rec.dispatch(&Dispatch {
        shader,
        entry,
        defines: &variant.defines(),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(t * shape.kv_heads, 1)?,
    })?;
    Ok(())
}

/// How the keys of the longest row are split: (splits, keys per split), `split_len` keys if
/// given, else `default_split` when few (row, head) pairs would leave the device idle.
pub fn split_plan(
    rows: usize,
    heads: usize,
    max_keys: usize,
    split_len: Option<usize>,
    default_split: usize,
) -> (usize, usize) {
    let whole = max_keys.div_ceil(64).max(1) * 64;
    match split_len {
        Some(len) => {
            let len = len.div_ceil(64).max(1) * 64;
            (max_keys.div_ceil(len).max(1), len)
        }
        // Enough (row, head) pairs already fill the device, or the range is short: one split.
        None if rows * heads >= 256 || max_keys <= default_split => (1, whole),
        None => (max_keys.div_ceil(default_split), default_split),
    }
}

/// Elements of scratch [`attention`] needs for these arguments (0 when unsplit), on any plan.
pub fn scratch_len(
    shape: &AttnShape,
    rows: usize,
    max_keys: usize,
    split_len: Option<usize>,
) -> usize {
    match split_plan(rows, shape.heads, max_keys, split_len, MIN_SPLIT) {
        (1, _) => 0,
        (splits, _) => rows * shape.heads * splits * (shape.head_dim + 2),
    }
}

/// The device plan's kernel for `rows` query rows over `cache` ([`DevicePlan::attend`]).
pub fn attend_for(ctx: &Context, cache: &KvCache, rows: usize) -> Attend {
    DevicePlan::of(ctx).attend(rows, cache.shape.head_dim, cache.format.value_bytes())
}

/// Whether the device can run `kernel` over `cache`.
pub fn attend_supported(ctx: &Context, kernel: Attend, cache: &KvCache) -> bool {
    let plan = DevicePlan::of(ctx);
    plan.attend_supported(kernel, cache.shape.head_dim, cache.format.value_bytes())
}

/// Softmax attention of query rows `q` (`[R, heads, head_dim]`) into `out` (same shape), with
/// the device's kernel ([`attend_for`]).
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
    cache: &KvCache,
    out: &Tensor,
    scratch: &Tensor,
    scale: f32,
    split_len: Option<usize>,
) -> Result<()> {
    let kernel = attend_for(rec.context(), cache, meta.len() / 2);
    attention_in(
        rec, shape, q, meta, max_keys, cache, out, scratch, scale, split_len, kernel,
    )
}

/// [`attention`] with a chosen kernel (tests compare both on one device).
#[allow(clippy::too_many_arguments)]
pub fn attention_in(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    q: &Tensor,
    meta: &Tensor,
    max_keys: usize,
    cache: &KvCache,
    out: &Tensor,
    scratch: &Tensor,
    scale: f32,
    split_len: Option<usize>,
    kernel: Attend,
) -> Result<()> {
    let step = Step {
        q,
        meta,
        max_keys,
        split_len,
        kernel,
    };
    attend_launch(rec, shape, &step, cache, out, scratch, scale, None)
}

/// What one attention launch attends.
struct Step<'a> {
    q: &'a Tensor,
    meta: &'a Tensor,
    max_keys: usize,
    split_len: Option<usize>,
    kernel: Attend,
}

/// The new rows an attention launch stores itself (`STORE_NEW`), with the layer's RoPE if any.
struct Fold<'a> {
    k: &'a Tensor,
    v: &'a Tensor,
    rope: Option<&'a Rope<'a>>,
}

#[allow(clippy::too_many_arguments)]
fn attend_launch(
    rec: &mut Recorder<'_>,
    shape: &AttnShape,
    step: &Step<'_>,
    cache: &KvCache,
    out: &Tensor,
    scratch: &Tensor,
    scale: f32,
    fold: Option<Fold<'_>>,
) -> Result<()> {
    let Step {
        q,
        meta,
        max_keys,
        split_len,
        kernel,
    } = *step;
    check_shape(shape, "attention", cache)?;
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
    ensure(
        attend_supported(rec.context(), kernel, cache),
        "attention",
        || {
            format!(
                "{kernel:?} attention needs subgroups of at least 8 and, for its cache format {}, a head size divisible by {} (head size {})",
                cache.format,
                match kernel {
                    Attend::Lanes =>
                        DevicePlan::of(rec.context()).lanes_item_values(cache.format.value_bytes()),
                    _ => 8,
                },
                shape.head_dim
            )
        },
    )?;
    let kv = cache.format;
    let (variant, splits, split_len, groups) = match kernel {
        Attend::Rows => {
            let head_dim = shape.head_dim;
            let groups = rows.div_ceil(32) * shape.heads;
            (Variant::Rows { kv, head_dim }, 1, 0, groups)
        }
        Attend::Keys | Attend::Lanes => {
            let default_split = DevicePlan::of(rec.context()).attention_split;
            let (splits, split_len) =
                split_plan(rows, shape.heads, max_keys, split_len, default_split);
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
            let groups = rows * shape.heads * splits;
            let variant = if let Some(f) = &fold {
                Variant::StoreKeys {
                    kv,
                    rope: Rotary::of(f.rope),
                }
            } else if kernel == Attend::Keys {
                Variant::Keys { kv }
            } else {
                Variant::Lanes {
                    kv,
                    head_dim: shape.head_dim,
                    wide: rec.context().features.int64,
                }
            };
            (variant, splits, split_len, groups)
        }
    };
    let mut params = Params {
        splits: splits as u32,
        split_len: split_len as u32,
        scale,
        ..Params::new(shape, cache, rows)
    };
    let mut bindings = vec![
        Binding::new(1, q),
        Binding::new(3, meta),
        Binding::new(6, out),
    ];
    if kernel != Attend::Rows {
        bindings.push(Binding::new(7, scratch));
    }
    if let Some(f) = &fold {
        bindings.extend([Binding::new(9, f.k), Binding::new(2, f.v)]);
        if let Some(rope) = f.rope {
            params.set_rope(rope);
            bindings.extend(rope.factor_binding("attention")?);
        }
    }
    bindings.extend(cache.bindings());
    let (shader, entry) = variant.kernel();
    rec.dispatch(&Dispatch {
        shader,
        entry,
        defines: &variant.defines(),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(groups, 1)?,
    })?;
    if splits > 1 {
        let (shader, entry) = Variant::Combine.kernel();
        rec.dispatch(&Dispatch {
            shader,
            entry,
            defines: &Variant::Combine.defines(),
            params: bytemuck::bytes_of(&params),
            bindings: &[Binding::new(6, out), Binding::new(7, scratch)],
            workgroups: groups_for(rows * shape.heads, 1)?,
        })?;
    }
    Ok(())
}

/// CPU reference over caches in sequence order ([`AttnShape::cache_len`]), in f64.
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

/// Everything that selects an attention variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// `kv_store`, with RoPE folded in or not.
    Store { kv: KvFormat, rope: Rotary },
    /// `attend` ([`Attend::Keys`]).
    Keys { kv: KvFormat },
    /// `attend` with the new rows' store folded in (f32 and f16 caches), RoPE or not.
    StoreKeys { kv: KvFormat, rope: Rotary },
    /// `attend_rows` ([`Attend::Rows`]) over heads of `head_dim` values.
    Rows { kv: KvFormat, head_dim: usize },
    /// `attend_lanes` ([`Attend::Lanes`]) over heads of `head_dim` values, the cache read in
    /// `u64` items when `wide` (SHADER_INT64).
    Lanes {
        kv: KvFormat,
        head_dim: usize,
        wide: bool,
    },
    /// `combine`: split key ranges merged.
    Combine,
}

/// The RoPE a store applies to the new keys (and the queries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rotary {
    None,
    Plain,
    /// With per-pair angle divisors ([`Rope::factors`]).
    Factors,
}

impl Rotary {
    const ALL: [Rotary; 3] = [Rotary::None, Rotary::Plain, Rotary::Factors];

    fn of(rope: Option<&Rope<'_>>) -> Self {
        match rope {
            None => Rotary::None,
            Some(r) if r.factors.is_some() => Rotary::Factors,
            Some(_) => Rotary::Plain,
        }
    }

    fn defines(self, d: Defines) -> Defines {
        match self {
            Rotary::None => d,
            Rotary::Plain => d.flag("ROPE"),
            Rotary::Factors => d.flag("ROPE").flag("ROPE_FACTORS"),
        }
    }
}

impl Variant {
    /// The shader and entry point.
    fn kernel(self) -> (&'static Shader, &'static str) {
        match self {
            Variant::Store { .. } => (&SHADER, "kv_store"),
            Variant::Keys { .. } | Variant::StoreKeys { .. } => (&SHADER, "attend"),
            Variant::Combine => (&SHADER, "combine"),
            Variant::Rows { .. } => (&SHADER_CPU, "attend_rows"),
            Variant::Lanes { .. } => (&SHADER_CPU, "attend_lanes"),
        }
    }

    /// The variant's defines: the one place they are made.
    fn defines(self) -> Defines {
        let cache = |kv: KvFormat| match kv {
            KvFormat::F32 => Defines::new(),
            KvFormat::F16 => Defines::new().flag("KV_F16"),
            KvFormat::Int8 => Defines::new().flag("KV_I8"),
        };
        match self {
            Variant::Store { kv, rope } => rope.defines(cache(kv)),
            Variant::StoreKeys { kv, rope } => rope.defines(cache(kv).flag("STORE_NEW")),
            Variant::Keys { kv } => cache(kv),
            Variant::Rows { kv, head_dim } => cache(kv)
                .flag("ATTEND_ROWS")
                .set("HEAD_DIM", head_dim as u32),
            Variant::Lanes { kv, head_dim, wide } => {
                let d = cache(kv)
                    .flag("ATTEND_LANES")
                    .set("HEAD_DIM", head_dim as u32);
                if wide { d.flag("KV_WIDE") } else { d }
            }
            Variant::Combine => Defines::new(),
        }
    }

    /// Every variant a launch can ask for: each cache format, and for the CPU kernels every head
    /// size they take up to [`MAX_HEAD_DIM`].
    fn all() -> Vec<Variant> {
        let formats = [KvFormat::F32, KvFormat::F16, KvFormat::Int8];
        let mut all = vec![Variant::Combine];
        for kv in formats {
            all.push(Variant::Keys { kv });
            all.extend(Rotary::ALL.map(|rope| Variant::Store { kv, rope }));
            for head_dim in (8..=MAX_HEAD_DIM).step_by(8) {
                all.push(Variant::Rows { kv, head_dim });
            }
            if kv == KvFormat::Int8 {
                continue;
            }
            all.extend(Rotary::ALL.map(|rope| Variant::StoreKeys { kv, rope }));
            for wide in [false, true] {
                // An item holds 16 bytes, 32 when wide.
                let item = if wide { 32 } else { 16 } / kv.value_bytes();
                for head_dim in (item..=MAX_HEAD_DIM).step_by(item) {
                    all.push(Variant::Lanes { kv, head_dim, wide });
                }
            }
        }
        all
    }
}

pub fn shader_variants() -> Vec<ShaderVariants> {
    [SHADER, SHADER_CPU]
        .into_iter()
        .map(|shader| ShaderVariants {
            shader,
            variants: Variant::all()
                .into_iter()
                .filter(|v| v.kernel().0.name == shader.name)
                .map(|v| (v.defines(), vec![v.kernel().1]))
                .collect(),
        })
        .collect()
}
