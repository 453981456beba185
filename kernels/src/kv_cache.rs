//! The KV cache the attention kernels read and write: a pool of blocks of positions with a block
//! table per sequence (as vLLM's PagedAttention, Kwon et al. 2023), so a sequence holds only the
//! blocks its tokens fill and sequences that start alike can share full blocks.
//!
//! Keys and values are stored as f32, f16, or int8 as KIVI (Liu et al. 2024) suggests: values
//! with one absmax scale per position, keys with one absmax scale per channel for each group of
//! [`KEY_BLOCK`] positions, a group's keys kept in f32 until it is full. Which sequence holds
//! which block is the caller's to decide ([`Paging`]); the kernels only read the table.

use std::fmt;
use std::str::FromStr;

use half::f16;
use kiln_runtime::{Binding, Context, DType, Tensor};

use crate::error::{Result, ensure};

/// Positions that share one int8 key scale per channel (KIVI's key group).
pub const KEY_BLOCK: usize = 32;
/// Positions per block of a cache made by [`KvCache::new`].
pub const DEFAULT_BLOCK: usize = 32;

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
    /// Elements of one cache tensor (keys or values) in sequence order, `[n_seq, kv_heads,
    /// capacity, head_dim]`: what [`KvCache::read_f32`] returns and [`crate::attention::attention_ref`] reads.
    pub fn cache_len(&self) -> usize {
        self.n_seq * self.kv_heads * self.capacity * self.head_dim
    }
}

/// How a [`KvCache`] stores keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvFormat {
    #[default]
    F32,
    /// f16 pairs packed in u32 (needs no SHADER_F16); the head dim must be even.
    F16,
    /// int8 with f32 scales (keys per channel and group, values per position); the head dim must
    /// be a multiple of 4 and blocks a multiple of [`KEY_BLOCK`] positions.
    Int8,
}

impl KvFormat {
    /// Bytes one cached value takes (int8's scales aside).
    pub fn value_bytes(self) -> usize {
        match self {
            KvFormat::F32 => 4,
            KvFormat::F16 => 2,
            KvFormat::Int8 => 1,
        }
    }

    /// The fewest positions a block of this format may hold.
    pub fn min_block(self) -> usize {
        match self {
            KvFormat::Int8 => KEY_BLOCK,
            _ => 1,
        }
    }
}

impl fmt::Display for KvFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvFormat::F32 => "f32",
            KvFormat::F16 => "f16",
            KvFormat::Int8 => "int8",
        })
    }
}

impl FromStr for KvFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(KvFormat::F32),
            "f16" => Ok(KvFormat::F16),
            "int8" => Ok(KvFormat::Int8),
            _ => Err(format!(
                "unknown KV format {s:?}: expected f32, f16 or int8"
            )),
        }
    }
}

/// The block pool's geometry and the device's block table, shared by every layer's cache.
#[derive(Clone, Debug)]
pub struct Paging {
    /// Positions per block, a power of two.
    pub block: usize,
    /// Blocks in the pool.
    pub blocks: usize,
    /// `[n_seq, width]` u32: the block holding positions `j * block ..` of each sequence.
    pub table: Tensor,
}

impl Paging {
    /// Table entries per sequence for a capacity of `capacity` positions.
    pub fn width(block: usize, capacity: usize) -> usize {
        capacity.div_ceil(block).max(1)
    }

    /// A pool of `blocks` blocks of `block` positions, every table entry block 0 until written.
    pub fn new(ctx: &Context, shape: &AttnShape, block: usize, blocks: usize) -> Result<Self> {
        ensure(
            block.is_power_of_two() && blocks > 0 && blocks <= u32::MAX as usize,
            "kv_cache",
            || {
                format!(
                    "blocks of {block} positions (a power of two) and a pool of {blocks} (1 or more)"
                )
            },
        )?;
        let width = Self::width(block, shape.capacity);
        Ok(Self {
            block,
            blocks,
            table: ctx.zeros(DType::U32, &[shape.n_seq * width])?,
        })
    }

    /// A pool with room for every sequence's whole capacity, sequence `s` holding blocks
    /// `s * width ..` in order: a contiguous cache.
    pub fn contiguous(ctx: &Context, shape: &AttnShape, block: usize) -> Result<Self> {
        let width = Self::width(block, shape.capacity);
        let table: Vec<u32> = (0..(shape.n_seq * width) as u32).collect();
        Self::with_table(ctx, shape, block, shape.n_seq * width, &table)
    }

    /// A pool of `blocks` blocks with the table `table` (`[n_seq, width]`).
    pub fn with_table(
        ctx: &Context,
        shape: &AttnShape,
        block: usize,
        blocks: usize,
        table: &[u32],
    ) -> Result<Self> {
        let paging = Self::new(ctx, shape, block, blocks)?;
        paging.write_table(ctx, table)?;
        Ok(paging)
    }

    /// Replaces the device's table (takes effect from the next submit).
    pub fn write_table(&self, ctx: &Context, table: &[u32]) -> Result<()> {
        ensure(table.len() == self.table.len(), "kv_cache", || {
            format!(
                "a block table of {} entries, got {}",
                self.table.len(),
                table.len()
            )
        })?;
        if let Some(bad) = table.iter().find(|&&b| b as usize >= self.blocks) {
            return Err(crate::KernelError::Shape {
                kernel: "kv_cache",
                message: format!("block {bad} is outside the pool of {}", self.blocks),
            });
        }
        ctx.write(&self.table, table)?;
        Ok(())
    }

    fn width_of(&self, shape: &AttnShape) -> usize {
        Self::width(self.block, shape.capacity)
    }
}

/// One layer's keys and values on the device.
pub struct KvCache {
    pub format: KvFormat,
    pub shape: AttnShape,
    pub paging: Paging,
    k: Tensor,
    v: Tensor,
    /// int8 only: per (block, KV head) group flags, key scales and value scales, then per
    /// (sequence, KV head) the open group's keys.
    aux: Option<Tensor>,
}

impl KvCache {
    /// An empty contiguous cache for `shape` ([`Paging::contiguous`] in blocks of
    /// [`DEFAULT_BLOCK`]).
    pub fn new(ctx: &Context, shape: &AttnShape, format: KvFormat) -> Result<Self> {
        Self::paged(
            ctx,
            shape,
            format,
            &Paging::contiguous(ctx, shape, DEFAULT_BLOCK)?,
        )
    }

    /// An empty cache over the block pool `paging` (whose table may be shared with other
    /// layers' caches).
    pub fn paged(
        ctx: &Context,
        shape: &AttnShape,
        format: KvFormat,
        paging: &Paging,
    ) -> Result<Self> {
        let min = format.min_block();
        ensure(paging.block.is_multiple_of(min), "kv_cache", || {
            format!(
                "a {format} KV cache needs blocks of a multiple of {min} positions, got {}",
                paging.block
            )
        })?;
        let n = physical_len(shape, paging);
        let d = shape.head_dim;
        let words = |per_word: usize| -> Result<Tensor> {
            ensure(d.is_multiple_of(per_word), "kv_cache", || {
                format!("a {format} KV cache needs a head dim divisible by {per_word}, got {d}")
            })?;
            Ok(ctx.zeros(DType::U32, &[n / per_word])?)
        };
        let (k, v, aux) = match format {
            KvFormat::F32 => (
                ctx.zeros(DType::F32, &[n])?,
                ctx.zeros(DType::F32, &[n])?,
                None,
            ),
            KvFormat::F16 => (words(2)?, words(2)?, None),
            KvFormat::Int8 => {
                let aux = AuxLayout::new(shape, paging).len();
                (words(4)?, words(4)?, Some(ctx.zeros(DType::F32, &[aux])?))
            }
        };
        Ok(Self {
            format,
            shape: *shape,
            paging: paging.clone(),
            k,
            v,
            aux,
        })
    }

    /// An f32 contiguous cache holding `k` and `v` (`[n_seq, kv_heads, capacity, head_dim]`
    /// each, as [`AttnShape::cache_len`] counts), for tests.
    pub fn from_f32(ctx: &Context, shape: &AttnShape, k: &[f32], v: &[f32]) -> Result<Self> {
        let paging = Paging::contiguous(ctx, shape, DEFAULT_BLOCK)?;
        let width = paging.width_of(shape);
        let table: Vec<u32> = (0..(shape.n_seq * width) as u32).collect();
        Self::from_f32_paged(ctx, shape, &paging, &table, k, v)
    }

    /// As [`KvCache::from_f32`], over `paging` whose table holds `table`; sequences must not
    /// share blocks.
    pub fn from_f32_paged(
        ctx: &Context,
        shape: &AttnShape,
        paging: &Paging,
        table: &[u32],
        k: &[f32],
        v: &[f32],
    ) -> Result<Self> {
        let n = shape.cache_len();
        ensure(k.len() == n && v.len() == n, "kv_cache", || {
            format!("keys and values of {n} values each for {shape:?}")
        })?;
        paging.write_table(ctx, table)?;
        let phys = physical_len(shape, paging);
        let (mut pk, mut pv) = (vec![0f32; phys], vec![0f32; phys]);
        let d = shape.head_dim;
        for_each_row(shape, paging, table, |logical, physical| {
            pk[physical * d..][..d].copy_from_slice(&k[logical * d..][..d]);
            pv[physical * d..][..d].copy_from_slice(&v[logical * d..][..d]);
        });
        Ok(Self {
            format: KvFormat::F32,
            shape: *shape,
            paging: paging.clone(),
            k: ctx.upload_f32(&pk, &[phys])?,
            v: ctx.upload_f32(&pv, &[phys])?,
            aux: None,
        })
    }

    /// Bytes on the device (the table aside).
    pub fn size_bytes(&self) -> u64 {
        self.k.size_bytes() + self.v.size_bytes() + self.aux.as_ref().map_or(0, Tensor::size_bytes)
    }

    pub(crate) fn bindings(&self) -> Vec<Binding<'_>> {
        let mut b = vec![
            Binding::new(4, &self.k),
            Binding::new(5, &self.v),
            Binding::new(10, &self.paging.table),
        ];
        if let Some(aux) = &self.aux {
            b.push(Binding::new(8, aux));
        }
        b
    }

    /// The shader's view of the pool: (block, log2 block, table width, where int8 residual
    /// keys start in `aux`).
    pub(crate) fn params(&self) -> [u32; 4] {
        let p = &self.paging;
        [
            p.block as u32,
            p.block.trailing_zeros(),
            p.width_of(&self.shape) as u32,
            AuxLayout::new(&self.shape, p).resid_at as u32,
        ]
    }

    /// Keys and values as f32 in sequence order (`[n_seq, kv_heads, capacity, head_dim]` each),
    /// decoded on the host from the device buffers through the device's block table: the CPU
    /// reference of each storage format. Positions whose block is not the sequence's read
    /// whatever block the table names.
    pub fn read_f32(&self, ctx: &Context) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = &self.shape;
        let table: Vec<u32> = ctx.read(&self.paging.table)?;
        let (pk, pv) = self.read_physical(ctx)?;
        let n = s.cache_len();
        let d = s.head_dim;
        let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
        for_each_row(s, &self.paging, &table, |logical, physical| {
            k[logical * d..][..d].copy_from_slice(&pk[physical * d..][..d]);
            v[logical * d..][..d].copy_from_slice(&pv[physical * d..][..d]);
        });
        if self.format == KvFormat::Int8 {
            // Open key groups read their sequence's residual keys.
            let aux: Vec<f32> = ctx.read(self.aux.as_ref().expect("int8 cache has aux"))?;
            let layout = AuxLayout::new(s, &self.paging);
            let width = self.paging.width_of(s);
            for seq in 0..s.n_seq {
                for kvh in 0..s.kv_heads {
                    for pos in 0..s.capacity {
                        let block = table[seq * width + pos / self.paging.block] as usize;
                        let within = pos % self.paging.block;
                        if aux[layout.flag(block, kvh, within)] <= 0.5 {
                            let row = ((seq * s.kv_heads + kvh) * s.capacity + pos) * d;
                            let r = layout.resid(seq, kvh, pos);
                            k[row..][..d].copy_from_slice(&aux[r..][..d]);
                        }
                    }
                }
            }
        }
        Ok((k, v))
    }

    /// Keys and values of every block in pool order, decoded (int8 keys with their group's
    /// scales, whether or not the group is complete).
    fn read_physical(&self, ctx: &Context) -> Result<(Vec<f32>, Vec<f32>)> {
        match self.format {
            KvFormat::F32 => Ok((ctx.read(&self.k)?, ctx.read(&self.v)?)),
            KvFormat::F16 => {
                let unpack = |t: &Tensor| -> Result<Vec<f32>> {
                    let words: Vec<u32> = ctx.read(t)?;
                    Ok(words
                        .iter()
                        .flat_map(|w| [*w as u16, (*w >> 16) as u16])
                        .map(|h| f16::from_bits(h).to_f32())
                        .collect())
                };
                Ok((unpack(&self.k)?, unpack(&self.v)?))
            }
            KvFormat::Int8 => {
                let bytes = |t: &Tensor| -> Result<Vec<i8>> {
                    let words: Vec<u32> = ctx.read(t)?;
                    Ok(words
                        .iter()
                        .flat_map(|w| w.to_le_bytes())
                        .map(|b| b as i8)
                        .collect())
                };
                let (kq, vq) = (bytes(&self.k)?, bytes(&self.v)?);
                let aux: Vec<f32> = ctx.read(self.aux.as_ref().expect("int8 cache has aux"))?;
                let layout = AuxLayout::new(&self.shape, &self.paging);
                let (d, bs) = (self.shape.head_dim, self.paging.block);
                let (mut k, mut v) = (vec![0f32; kq.len()], vec![0f32; vq.len()]);
                for block in 0..self.paging.blocks {
                    for kvh in 0..self.shape.kv_heads {
                        for within in 0..bs {
                            let row = ((block * self.shape.kv_heads + kvh) * bs + within) * d;
                            let ks = layout.kscale(block, kvh, within);
                            let vs = aux[layout.vscale(block, kvh, within)];
                            for j in 0..d {
                                k[row + j] = kq[row + j] as f32 * aux[ks + j];
                                v[row + j] = vq[row + j] as f32 * vs;
                            }
                        }
                    }
                }
                Ok((k, v))
            }
        }
    }
}

/// Values of one cache tensor over the whole pool.
fn physical_len(shape: &AttnShape, paging: &Paging) -> usize {
    paging.blocks * shape.kv_heads * paging.block * shape.head_dim
}

/// Calls `f(logical row, physical row)` for every (sequence, KV head, position) of `shape`:
/// logical rows in `[n_seq, kv_heads, capacity]` order, physical rows through `table`.
fn for_each_row(
    shape: &AttnShape,
    paging: &Paging,
    table: &[u32],
    mut f: impl FnMut(usize, usize),
) {
    let width = paging.width_of(shape);
    let bs = paging.block;
    for seq in 0..shape.n_seq {
        for kvh in 0..shape.kv_heads {
            for pos in 0..shape.capacity {
                let block = table[seq * width + pos / bs] as usize;
                let logical = (seq * shape.kv_heads + kvh) * shape.capacity + pos;
                f(logical, (block * shape.kv_heads + kvh) * bs + pos % bs);
            }
        }
    }
}

/// Where int8's side values live in `aux` (attention_common.wgsl's `aux_*`).
struct AuxLayout {
    d: usize,
    kv_heads: usize,
    block: usize,
    /// Key groups per block.
    groups: usize,
    resid_at: usize,
    n_seq: usize,
}

impl AuxLayout {
    fn new(shape: &AttnShape, paging: &Paging) -> Self {
        let groups = paging.block.div_ceil(KEY_BLOCK);
        let d = shape.head_dim;
        let per_block = groups * (1 + d) + paging.block;
        Self {
            d,
            kv_heads: shape.kv_heads,
            block: paging.block,
            groups,
            resid_at: paging.blocks * shape.kv_heads * per_block,
            n_seq: shape.n_seq,
        }
    }

    fn len(&self) -> usize {
        self.resid_at + self.n_seq * self.kv_heads * KEY_BLOCK * self.d
    }

    fn base(&self, block: usize, kvh: usize) -> usize {
        (block * self.kv_heads + kvh) * (self.groups * (1 + self.d) + self.block)
    }

    fn flag(&self, block: usize, kvh: usize, within: usize) -> usize {
        self.base(block, kvh) + within / KEY_BLOCK
    }

    fn kscale(&self, block: usize, kvh: usize, within: usize) -> usize {
        self.base(block, kvh) + self.groups + (within / KEY_BLOCK) * self.d
    }

    fn vscale(&self, block: usize, kvh: usize, within: usize) -> usize {
        self.base(block, kvh) + self.groups * (1 + self.d) + within
    }

    fn resid(&self, seq: usize, kvh: usize, pos: usize) -> usize {
        self.resid_at + ((seq * self.kv_heads + kvh) * KEY_BLOCK + pos % KEY_BLOCK) * self.d
    }
}
