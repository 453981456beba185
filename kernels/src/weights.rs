//! Weight matrices in every format the matrix kernels read (`shaders/weights.wgsl`), on the host
//! and on the device, with the CPU dequantizer that is the reference for the shader's `w_load4`.
//!
//! A matrix has `n` rows of `k` values, row-major (the GGUF / PyTorch `[out, in]` layout). GGUF
//! block layouts follow ggml's `block_q8_0`, `block_q4_0` and `block_q4_1`: 32 values per block,
//! an f16 scale (and an f16 minimum for Q4_1), then the quants; in Q4 blocks element j < 16 is the
//! low nibble of byte j and element j + 16 its high nibble. On the device the blocks are split
//! into aligned quants and scales (the same bytes, moved; see [`split_blocks`]).

use half::f16;
use kiln_runtime::{Binding, Context, DType, Defines, Tensor};

use crate::outliers::Outliers;
use crate::plan::DevicePlan;
use crate::{KernelError, Result};

/// The weight-format WGSL, prepended to every family that reads weights.
pub const WEIGHTS_WGSL: &str = include_str!("../../shaders/weights.wgsl");

/// Values per GGUF block.
pub const BLOCK: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
    /// int8 with an f32 scale per `group` values of a row (`group == k` is per output channel),
    /// and with an f32 zero point per group when `zero_point` (asymmetric).
    Int8 {
        group: usize,
        zero_point: bool,
    },
}

impl WeightFormat {
    /// Bytes of one GGUF block, for block formats.
    pub fn block_bytes(self) -> Option<usize> {
        match self {
            WeightFormat::Q8_0 => Some(34),
            WeightFormat::Q4_0 => Some(18),
            WeightFormat::Q4_1 => Some(20),
            _ => None,
        }
    }

    /// Bytes of one row of `k` values in the data buffer.
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * k,
            WeightFormat::F16 => 2 * k,
            WeightFormat::Int8 { .. } => k.div_ceil(4) * 4,
            block => k / BLOCK * block.block_bytes().unwrap_or(0),
        }
    }

    pub(crate) fn flag(self) -> &'static str {
        match self {
            WeightFormat::F32 => "W_F32",
            WeightFormat::F16 => "W_F16",
            WeightFormat::Q8_0 => "W_Q8_0",
            WeightFormat::Q4_0 => "W_Q4_0",
            WeightFormat::Q4_1 => "W_Q4_1",
            WeightFormat::Int8 { .. } => "W_I8",
        }
    }

    /// Checks that `k` values per row fit this format.
    pub fn check_k(self, k: usize) -> Result<()> {
        let ok = match self {
            WeightFormat::F32 | WeightFormat::F16 => k > 0,
            WeightFormat::Int8 { group, .. } => {
                k > 0 && (group == k || (group > 0 && group % 4 == 0))
            }
            _ => k > 0 && k.is_multiple_of(BLOCK),
        };
        if ok {
            return Ok(());
        }
        Err(KernelError::Shape {
            kernel: "weights",
            message: format!(
                "{self:?} cannot hold rows of {k} values (blocks of 32; int8 groups a multiple of 4 or the whole row)"
            ),
        })
    }

    /// Every define set the shader can be asked for, for the translation test.
    pub(crate) fn all_defines() -> Vec<Defines> {
        vec![
            Defines::new().flag("W_F32"),
            Defines::new().flag("W_F32").flag("W_VEC4"),
            Defines::new().flag("W_F16"),
            Defines::new().flag("W_F16").flag("F16_NATIVE"),
            Defines::new().flag("W_F16").flag("F16_QUADS"),
            Defines::new().flag("W_Q8_0"),
            Defines::new().flag("W_Q4_0"),
            Defines::new().flag("W_Q4_1"),
            Defines::new().flag("W_Q4_1").flag("W_LANE_TILES"),
            Defines::new().flag("W_Q8_0").flag("W_LANE_TILES"),
            Defines::new().flag("W_I8"),
            Defines::new().flag("W_I8").flag("W_ZP"),
        ]
    }
}

/// How kernels read f16 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Read {
    /// As `f16` values (SHADER_F16).
    Native,
    /// One half at a time out of packed u32 words (any device, any K).
    Packed,
    /// Four halves at a time as one `vec2<u32>` (K a multiple of 4): for CPU adapters, whose
    /// cost is per loaded component (docs/benchmarks/NOTES.md).
    Quads,
}

impl F16Read {
    /// The device plan's read ([`DevicePlan::f16_read`]): quads on CPU adapters, whose cost is
    /// per loaded component; native halves where SHADER_F16 is granted; otherwise packed words.
    pub fn for_device(ctx: &Context, k: usize) -> Self {
        DevicePlan::of(ctx).f16_read(k)
    }

    /// Whether the device can read rows of `k` halves this way.
    pub fn supported(self, ctx: &Context, k: usize) -> bool {
        match self {
            Self::Native => ctx.features.f16,
            Self::Packed => true,
            Self::Quads => k.is_multiple_of(4),
        }
    }
}

/// How a block format's quants and scales are ordered on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOrder {
    /// Quants by groups of 8 rows, block by block, the 8 rows' blocks side by side, and the
    /// scales apart in the same order ([`split_blocks`]). A GPU's lanes read a row tile's blocks
    /// together.
    Interleaved,
    /// Q4_1 and Q8_0 only: by tiles of 64 rows, lane l of a tile owning rows l + 8j (j < 8), the
    /// rows one invocation of the `RowsShared` mat-vec owns in decode. Q4_1's quants and scales
    /// go in one buffer ([`pack_lane_tiles`]), so that the lane reads a block of its rows two
    /// rows to a `vec4<u64>` and their 8 scales in one more; Q8_0 keeps its quants interleaved
    /// (a block is one `vec4<u64>` already) and puts each lane's 8 scales side by side
    /// ([`scale_slots`]), one load.
    LaneTiles,
}

impl BlockOrder {
    /// The device plan's order ([`DevicePlan::block_order`]): lane tiles for Q4_1 and Q8_0
    /// where the mat-vec reads them as `u64` (CPU adapters), interleaved elsewhere: on a GPU, a
    /// workgroup's rows are neighbours, not 8 rows apart.
    pub fn for_device(ctx: &Context, format: WeightFormat) -> Self {
        DevicePlan::of(ctx).block_order(format)
    }
}

/// A weight matrix on the host.
#[derive(Clone, Debug)]
pub struct HostWeights {
    pub format: WeightFormat,
    pub n: usize,
    pub k: usize,
    /// The data buffer: f32 / f16 values, GGUF blocks, or int8 rows padded to 4 bytes.
    pub data: Vec<u8>,
    /// int8: one scale per group, `[n, ceil(k / group)]`.
    pub scales: Vec<f32>,
    /// int8 with zero point: one per group, same shape as `scales`.
    pub zeros: Vec<f32>,
}

impl HostWeights {
    pub fn f32(n: usize, k: usize, values: &[f32]) -> Result<Self> {
        Self::new(
            WeightFormat::F32,
            n,
            k,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    pub fn f16(n: usize, k: usize, values: &[f16]) -> Result<Self> {
        Self::new(
            WeightFormat::F16,
            n,
            k,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// Raw GGUF blocks (Q8_0, Q4_0, Q4_1) or f32 / f16 bytes.
    pub fn new(format: WeightFormat, n: usize, k: usize, data: Vec<u8>) -> Result<Self> {
        let w = Self {
            format,
            n,
            k,
            data,
            scales: Vec::new(),
            zeros: Vec::new(),
        };
        w.validate()?;
        Ok(w)
    }

    /// int8 values `q` (`n * k`, row-major) with their group scales and optional zero points.
    pub fn int8(
        n: usize,
        k: usize,
        group: usize,
        q: &[i8],
        scales: Vec<f32>,
        zeros: Option<Vec<f32>>,
    ) -> Result<Self> {
        let format = WeightFormat::Int8 {
            group,
            zero_point: zeros.is_some(),
        };
        format.check_k(k)?;
        if q.len() != n * k {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!("int8 data has {} values, expected {n} x {k}", q.len()),
            });
        }
        let row = format.row_bytes(k);
        let mut data = vec![0u8; n * row];
        for (r, values) in q.chunks(k).enumerate() {
            for (c, &v) in values.iter().enumerate() {
                data[r * row + c] = v as u8;
            }
        }
        let w = Self {
            format,
            n,
            k,
            data,
            scales,
            zeros: zeros.unwrap_or_default(),
        };
        w.validate()?;
        Ok(w)
    }

    /// The matrices' rows one after another: projections of one input stacked so that one
    /// launch computes them all (see [`crate::outputs`]). They must share a format and `k`.
    pub fn stack(parts: &[HostWeights]) -> Result<Self> {
        let first = parts.first().ok_or_else(|| KernelError::Shape {
            kernel: "weights",
            message: "nothing to stack".into(),
        })?;
        if let Some(other) = parts
            .iter()
            .find(|w| w.format != first.format || w.k != first.k)
        {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!(
                    "cannot stack {:?} rows of {} values on {:?} rows of {}",
                    other.format, other.k, first.format, first.k
                ),
            });
        }
        let w = Self {
            format: first.format,
            n: parts.iter().map(|w| w.n).sum(),
            k: first.k,
            data: parts.iter().flat_map(|w| w.data.iter().copied()).collect(),
            scales: parts
                .iter()
                .flat_map(|w| w.scales.iter().copied())
                .collect(),
            zeros: parts.iter().flat_map(|w| w.zeros.iter().copied()).collect(),
        };
        w.validate()?;
        Ok(w)
    }

    /// Groups per row for int8.
    pub fn groups_per_row(&self) -> usize {
        match self.format {
            WeightFormat::Int8 { group, .. } => self.k.div_ceil(group),
            _ => 0,
        }
    }

    /// Checks every buffer's size against the shape.
    pub fn validate(&self) -> Result<()> {
        self.format.check_k(self.k)?;
        let expect = self.n * self.format.row_bytes(self.k);
        let bad = |message: String| {
            Err(KernelError::Shape {
                kernel: "weights",
                message,
            })
        };
        if self.data.len() != expect {
            return bad(format!(
                "{:?} [{} x {}] needs {expect} bytes, got {}",
                self.format,
                self.n,
                self.k,
                self.data.len()
            ));
        }
        if let WeightFormat::Int8 { zero_point, .. } = self.format {
            let groups = self.n * self.groups_per_row();
            if self.scales.len() != groups || (zero_point && self.zeros.len() != groups) {
                return bad(format!(
                    "int8 [{} x {}] needs {groups} scales (and zero points), got {} and {}",
                    self.n,
                    self.k,
                    self.scales.len(),
                    self.zeros.len()
                ));
            }
        }
        Ok(())
    }

    /// Row `r` as f32: the CPU reference of the shader's dequantization.
    pub fn row(&self, r: usize) -> Vec<f32> {
        let k = self.k;
        let bytes = &self.data[r * self.format.row_bytes(k)..(r + 1) * self.format.row_bytes(k)];
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut out = Vec::with_capacity(k);
        match self.format {
            WeightFormat::F32 => out.extend(
                bytes
                    .chunks(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            WeightFormat::F16 => out.extend(bytes.chunks(2).map(half)),
            WeightFormat::Q8_0 => {
                for block in bytes.chunks(34) {
                    let d = half(&block[0..2]);
                    out.extend(block[2..].iter().map(|&q| d * q as i8 as f32));
                }
            }
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                let q4_1 = self.format == WeightFormat::Q4_1;
                for block in bytes.chunks(self.format.block_bytes().unwrap_or(18)) {
                    let d = half(&block[0..2]);
                    let (offset, min) = if q4_1 {
                        (-0.0, half(&block[2..4]))
                    } else {
                        (-8.0, 0.0)
                    };
                    let qs = &block[if q4_1 { 4 } else { 2 }..];
                    let lows = qs.iter().map(|&b| (b & 15) as f32);
                    let highs = qs.iter().map(|&b| (b >> 4) as f32);
                    out.extend(lows.chain(highs).map(|q| d * (q + offset) + min));
                }
            }
            WeightFormat::Int8 { group, zero_point } => {
                let groups = self.groups_per_row();
                for (c, &q) in bytes[..k].iter().enumerate() {
                    let g = r * groups + c / group;
                    let zero = if zero_point { self.zeros[g] } else { 0.0 };
                    out.push(self.scales[g] * (q as i8 as f32 - zero));
                }
            }
        }
        out
    }

    /// The whole matrix as f32, `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.n).flat_map(|r| self.row(r)).collect()
    }
}

/// A GGUF block's scale bytes (f16 d, or d and m for Q4_1) and its quant bytes.
fn block_split(format: WeightFormat) -> (usize, usize) {
    match format {
        WeightFormat::Q4_1 => (4, 16),
        WeightFormat::Q4_0 => (2, 16),
        _ => (2, 32),
    }
}

/// GGUF blocks as the device keeps them (but Q4_1 in lane tiles, [`pack_lane_tiles`]): every
/// block's quants, 16-byte aligned so that a block is whole vec4 loads, and the scales apart
/// (f16 d, two blocks to a word; Q4_1's d and m, one block to a word), padded to a word. The
/// quants are ordered by groups of 8 rows, block by block, the 8 rows' blocks side by side
/// ([`INTERLEAVE`]; rows past the end pad with zeros): neighbouring invocations read
/// neighbouring bytes when each owns a row or a block of a tile's rows. The scales go in the
/// same order, or for Q8_0 in lane tiles by [`scale_slots`].
fn split_blocks(
    format: WeightFormat,
    order: BlockOrder,
    bytes: &[u8],
    rows: usize,
) -> (Vec<u8>, Vec<u8>) {
    let (head, body) = block_split(format);
    let row_bytes = bytes.len() / rows.max(1);
    let blocks = row_bytes / (head + body);
    let padded = rows.next_multiple_of(INTERLEAVE);
    let mut quants = Vec::with_capacity(padded * blocks * body);
    for group in (0..padded).step_by(INTERLEAVE) {
        for blk in 0..blocks {
            for row in group..group + INTERLEAVE {
                if row < rows {
                    let at = row * row_bytes + blk * (head + body);
                    quants.extend_from_slice(&bytes[at + head..at + head + body]);
                } else {
                    quants.resize(quants.len() + body, 0);
                }
            }
        }
    }
    let slots = scale_slots(order, rows, blocks);
    let mut scales = vec![0u8; (slots.len() * head).next_multiple_of(4)];
    for (slot, at) in slots.into_iter().enumerate() {
        if let Some((row, blk)) = at {
            let from = row * row_bytes + blk * (head + body);
            scales[slot * head..(slot + 1) * head].copy_from_slice(&bytes[from..from + head]);
        }
    }
    (quants, scales)
}

/// The (row, block) whose scale each slot of the scale buffer holds (None: padding), in
/// `order` (`w_scale_index` in `shaders/weights.wgsl`): as the quants, or for Q8_0 in lane tiles
/// by tiles of [`LANE_TILE`] rows, block by block, each lane's 8 rows side by side.
fn scale_slots(order: BlockOrder, rows: usize, blocks: usize) -> Vec<Option<(usize, usize)>> {
    let (group, row_of): (usize, fn(usize) -> usize) = match order {
        BlockOrder::Interleaved => (INTERLEAVE, |s| s),
        BlockOrder::LaneTiles => (LANE_TILE, |s| s / LANE_ROWS + 8 * (s % LANE_ROWS)),
    };
    let padded = rows.next_multiple_of(group);
    let mut slots = Vec::with_capacity(padded * blocks);
    for first in (0..padded).step_by(group) {
        for blk in 0..blocks {
            slots.extend((0..group).map(|s| {
                let row = first + row_of(s);
                (row < rows).then_some((row, blk))
            }));
        }
    }
    slots
}

/// The inverse of [`split_blocks`]: `rows` rows of `k` values as GGUF blocks.
fn join_blocks(
    format: WeightFormat,
    order: BlockOrder,
    quants: &[u8],
    scales: &[u8],
    rows: usize,
    k: usize,
) -> Vec<u8> {
    let (head, body) = block_split(format);
    let blocks = k / BLOCK;
    let mut scale_at = vec![0; rows * blocks];
    for (slot, at) in scale_slots(order, rows, blocks).into_iter().enumerate() {
        if let Some((row, blk)) = at {
            scale_at[row * blocks + blk] = slot;
        }
    }
    let mut out = Vec::with_capacity(rows * blocks * (head + body));
    for row in 0..rows {
        for blk in 0..blocks {
            let i = ((row / INTERLEAVE) * blocks + blk) * INTERLEAVE + row % INTERLEAVE;
            let s = scale_at[row * blocks + blk];
            out.extend_from_slice(&scales[s * head..(s + 1) * head]);
            out.extend_from_slice(&quants[i * body..(i + 1) * body]);
        }
    }
    out
}

/// Q4_1 blocks in lane tiles ([`BlockOrder::LaneTiles`], `w_lane_cell` in
/// `shaders/weights.wgsl`): tiles of [`LANE_TILE`] rows, lane l of a tile owning rows l + 8j;
/// for each tile and block, the 8 lanes' cells side by side, each the lane's 8 rows' quants
/// (16 bytes each) and then their scale words (f16 d and m). Rows past the end pad with zeros.
fn pack_lane_tiles(bytes: &[u8], rows: usize) -> Vec<u8> {
    let (head, body) = block_split(WeightFormat::Q4_1);
    let row_bytes = bytes.len() / rows.max(1);
    let blocks = row_bytes / (head + body);
    let padded = rows.next_multiple_of(LANE_TILE);
    let mut out = vec![0u8; padded * blocks * (head + body)];
    for (i, cell) in out.chunks_exact_mut(LANE_CELL).enumerate() {
        let (lane, blk, tile) = (i % 8, i / 8 % blocks, i / 8 / blocks);
        let (quants, scales) = cell.split_at_mut(LANE_ROWS * body);
        for j in 0..LANE_ROWS {
            let row = tile * LANE_TILE + lane + 8 * j;
            if row < rows {
                let at = row * row_bytes + blk * (head + body);
                scales[j * head..(j + 1) * head].copy_from_slice(&bytes[at..at + head]);
                quants[j * body..(j + 1) * body]
                    .copy_from_slice(&bytes[at + head..at + head + body]);
            }
        }
    }
    out
}

/// The inverse of [`pack_lane_tiles`]: `rows` rows of `k` values as GGUF blocks.
fn unpack_lane_tiles(packed: &[u8], rows: usize, k: usize) -> Vec<u8> {
    let (head, body) = block_split(WeightFormat::Q4_1);
    let blocks = k / BLOCK;
    let mut out = Vec::with_capacity(rows * blocks * (head + body));
    for row in 0..rows {
        let (tile, lane, j) = (row / LANE_TILE, row % 8, row % LANE_TILE / 8);
        for blk in 0..blocks {
            let cell = &packed[((tile * blocks + blk) * 8 + lane) * LANE_CELL..][..LANE_CELL];
            out.extend_from_slice(&cell[LANE_ROWS * body + j * head..][..head]);
            out.extend_from_slice(&cell[j * body..][..body]);
        }
    }
    out
}

/// Rows of a lane tile ([`BlockOrder::LaneTiles`]): 8 lanes of 8 rows.
const LANE_TILE: usize = 8 * LANE_ROWS;

/// Rows one lane owns in a lane tile.
const LANE_ROWS: usize = 8;

/// Bytes of one lane's cell in a lane tile: 8 Q4_1 blocks.
const LANE_CELL: usize = LANE_ROWS * 20;

/// Rows whose blocks the device keeps side by side (see [`split_blocks`] and `w_block_index`
/// in `shaders/weights.wgsl`).
const INTERLEAVE: usize = 8;

/// A weight matrix on the device, with an optional bias `[n]` added by the matrix kernels.
///
/// A matrix larger than the device's storage-binding limit (a 50257 × 768 f32 GPT-2 embedding is
/// 154 MB; lavapipe and WebGPU bind 128 MiB) is stored as row ranges in separate buffers, and
/// every kernel runs once per part, writing its columns of the output.
pub struct Weights {
    pub format: WeightFormat,
    pub n: usize,
    pub k: usize,
    parts: Vec<Part>,
    f16_read: F16Read,
    block_order: BlockOrder,
    /// Input columns held in f32 beside the main part (LLM.int8() decomposition).
    outliers: Option<Outliers>,
    /// `[k]` maxima of |input| per column, accumulated by every launch while calibrating.
    probe: Option<Tensor>,
}

/// Rows `row0 .. row0 + n` of a weight matrix, each buffer within the binding limit.
pub(crate) struct Part {
    pub row0: usize,
    pub n: usize,
    data: Tensor,
    scales: Option<Tensor>,
    zeros: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Weights {
    /// Uploads host weights; f16 is read natively where SHADER_F16 was granted.
    pub fn upload(ctx: &Context, host: &HostWeights) -> Result<Self> {
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        Self::upload_in_parts(ctx, host, limit)
    }

    /// Uploads with at most `max_part_bytes` of data per buffer (the binding limit, or smaller in
    /// tests of the split path).
    pub fn upload_in_parts(ctx: &Context, host: &HostWeights, max_part_bytes: u64) -> Result<Self> {
        let order = BlockOrder::for_device(ctx, host.format);
        Self::upload_ordered(ctx, host, max_part_bytes, order)
    }

    /// [`Weights::upload_in_parts`] with a block format in `order` instead of the device's (the
    /// tests check both orders on one device).
    pub fn upload_ordered(
        ctx: &Context,
        host: &HostWeights,
        max_part_bytes: u64,
        order: BlockOrder,
    ) -> Result<Self> {
        host.validate()?;
        let row_bytes = host.format.row_bytes(host.k);
        let rows_per_part = (max_part_bytes / row_bytes as u64) as usize;
        if rows_per_part == 0 {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!(
                    "one row of {} values takes {row_bytes} bytes, over the {max_part_bytes}-byte binding limit",
                    host.k
                ),
            });
        }
        let lane_format = matches!(host.format, WeightFormat::Q4_1 | WeightFormat::Q8_0);
        if order == BlockOrder::LaneTiles && !lane_format {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!("lane tiles hold Q4_1 or Q8_0 blocks, not {:?}", host.format),
            });
        }
        // A tile pads to 64 rows: a part under a tile (in the tests' small parts) takes a tile's
        // bytes, which the device's limit must hold.
        let device_limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        if order == BlockOrder::LaneTiles && (LANE_TILE * row_bytes) as u64 > device_limit {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!(
                    "a lane tile of {LANE_TILE} rows of {row_bytes} bytes is over the {device_limit}-byte binding limit"
                ),
            });
        }
        // Block rows are kept in groups (of INTERLEAVE, or of LANE_TILE): whole groups per part
        // stay in the limit.
        let group = match order {
            BlockOrder::LaneTiles => LANE_TILE,
            _ => INTERLEAVE,
        };
        let rows_per_part = if host.format.block_bytes().is_some() && rows_per_part > group {
            rows_per_part / group * group
        } else {
            rows_per_part
        };
        let groups = host.groups_per_row();
        let mut parts = Vec::new();
        for row0 in (0..host.n).step_by(rows_per_part) {
            let n = rows_per_part.min(host.n - row0);
            let bytes = &host.data[row0 * row_bytes..(row0 + n) * row_bytes];
            let per_group =
                |v: &[f32]| ctx.upload_f32(&v[row0 * groups..(row0 + n) * groups], &[n, groups]);
            let (data, scales) = match host.format {
                WeightFormat::F32 => (ctx.upload(bytes, DType::F32, &[n, host.k])?, None),
                WeightFormat::F16 => (ctx.upload(bytes, DType::F16, &[n, host.k])?, None),
                WeightFormat::Int8 { .. } => {
                    (ctx.upload_bytes(bytes)?, Some(per_group(&host.scales)?))
                }
                WeightFormat::Q4_1 if order == BlockOrder::LaneTiles => {
                    (ctx.upload_bytes(&pack_lane_tiles(bytes, n))?, None)
                }
                block => {
                    let (quants, scales) = split_blocks(block, order, bytes, n);
                    (ctx.upload_bytes(&quants)?, Some(ctx.upload_bytes(&scales)?))
                }
            };
            let zeros = match host.format {
                WeightFormat::Int8 {
                    zero_point: true, ..
                } => Some(per_group(&host.zeros)?),
                _ => None,
            };
            parts.push(Part {
                row0,
                n,
                data,
                scales,
                zeros,
                bias: None,
            });
        }
        Ok(Self {
            format: host.format,
            n: host.n,
            k: host.k,
            parts,
            f16_read: F16Read::for_device(ctx, host.k),
            block_order: order,
            outliers: None,
            probe: None,
        })
    }

    /// Adds input columns `cols` held in f32 (`values`, `[n, cols.len()]`); the main part should
    /// hold zeros there, as [`crate::outliers::split_columns`] leaves it.
    pub fn with_outliers(mut self, ctx: &Context, cols: &[u32], values: &[f32]) -> Result<Self> {
        self.outliers = Some(Outliers::upload(ctx, self.n, self.k, cols, values)?);
        Ok(self)
    }

    pub fn outliers(&self) -> Option<&Outliers> {
        self.outliers.as_ref()
    }

    /// Starts (a zeroed `[k]` tensor) or stops recording the maxima of |input| per column.
    pub fn set_probe(&mut self, probe: Option<Tensor>) {
        self.probe = probe;
    }

    pub fn probe(&self) -> Option<&Tensor> {
        self.probe.as_ref()
    }

    /// Reads the matrix back to the host (its main part: outlier columns are not merged back),
    /// with its bias.
    pub fn download(&self, ctx: &Context) -> Result<(HostWeights, Option<Vec<f32>>)> {
        let (mut data, mut scales, mut zeros, mut bias) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for part in &self.parts {
            match self.format {
                WeightFormat::F32 => {
                    data.extend(bytemuck::cast_slice(&ctx.read::<f32>(&part.data)?))
                }
                WeightFormat::F16 => {
                    data.extend(bytemuck::cast_slice(&ctx.read::<u16>(&part.data)?))
                }
                WeightFormat::Int8 { .. } => data.extend(ctx.read::<u8>(&part.data)?),
                WeightFormat::Q4_1 if self.block_order == BlockOrder::LaneTiles => data.extend(
                    unpack_lane_tiles(&ctx.read::<u8>(&part.data)?, part.n, self.k),
                ),
                block => {
                    let s = part
                        .scales
                        .as_ref()
                        .expect("block weights keep their scales");
                    data.extend(join_blocks(
                        block,
                        self.block_order,
                        &ctx.read::<u8>(&part.data)?,
                        &ctx.read::<u8>(s)?,
                        part.n,
                        self.k,
                    ));
                }
            }
            if let (Some(s), WeightFormat::Int8 { .. }) = (&part.scales, self.format) {
                scales.extend(ctx.read::<f32>(s)?);
            }
            if let Some(z) = &part.zeros {
                zeros.extend(ctx.read::<f32>(z)?);
            }
            if let Some(b) = &part.bias {
                bias.extend(ctx.read::<f32>(b)?);
            }
        }
        let host = HostWeights {
            format: self.format,
            n: self.n,
            k: self.k,
            data,
            scales,
            zeros,
        };
        host.validate()?;
        Ok((host, self.has_bias().then_some(bias)))
    }

    /// Adds a bias of `n` values.
    pub fn with_bias(mut self, ctx: &Context, bias: &[f32]) -> Result<Self> {
        if bias.len() != self.n {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!("bias has {} values for {} rows", bias.len(), self.n),
            });
        }
        for part in &mut self.parts {
            part.bias = Some(ctx.upload_f32(&bias[part.row0..part.row0 + part.n], &[part.n])?);
        }
        Ok(self)
    }

    /// Reads f16 through the packed-u32 fallback even where SHADER_F16 is granted (for tests
    /// and comparisons).
    pub fn force_packed_f16(mut self) -> Self {
        self.f16_read = F16Read::Packed;
        self
    }

    /// Reads f16 weights as `read` (tests and comparisons); the caller checks
    /// [`F16Read::supported`].
    pub fn force_f16_read(mut self, read: F16Read) -> Self {
        self.f16_read = read;
        self
    }

    pub fn has_bias(&self) -> bool {
        self.parts[0].bias.is_some()
    }

    /// The row ranges the kernels launch over, one launch each.
    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Bytes the kernels read for one pass over the matrix (data, scales, zero points, bias).
    pub fn size_bytes(&self) -> u64 {
        let blocks = self.format.block_bytes().is_some();
        self.parts
            .iter()
            .map(|p| {
                // Block formats count their rows' GGUF bytes, not the zeros that pad the
                // device's groups of rows.
                let data = if blocks {
                    (p.n * self.format.row_bytes(self.k)) as u64
                } else {
                    p.data.size_bytes() + p.scales.as_ref().map_or(0, Tensor::size_bytes)
                };
                data + [p.zeros.as_ref(), p.bias.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(Tensor::size_bytes)
                    .sum::<u64>()
            })
            .sum::<u64>()
            + self.outliers.as_ref().map_or(0, Outliers::size_bytes)
    }

    /// How a block format's quants and scales are ordered on the device.
    pub fn block_order(&self) -> BlockOrder {
        self.block_order
    }

    /// The int8 group size passed to the shader (unused by other formats).
    pub(crate) fn group(&self) -> u32 {
        match self.format {
            WeightFormat::Int8 { group, .. } => group as u32,
            _ => self.k as u32,
        }
    }

    /// The defines that select this format in `weights.wgsl` (the matrix kernels add `HAS_BIAS`).
    pub(crate) fn defines(&self) -> Defines {
        let mut d = Defines::new().flag(self.format.flag());
        if self.block_order == BlockOrder::LaneTiles {
            d = d.flag("W_LANE_TILES");
        }
        match self.format {
            WeightFormat::F32 if self.k.is_multiple_of(4) => d = d.flag("W_VEC4"),
            WeightFormat::F16 => match self.f16_read {
                F16Read::Native => d = d.flag("F16_NATIVE"),
                F16Read::Packed => {}
                F16Read::Quads => d = d.flag("F16_QUADS"),
            },
            WeightFormat::Int8 {
                zero_point: true, ..
            } => d = d.flag("W_ZP"),
            _ => {}
        }
        d
    }
}

impl Part {
    /// Group-1 bindings: data, scales, zero points, bias.
    pub(crate) fn bindings(&self) -> Vec<Binding<'_>> {
        let mut b = vec![Binding::weight(0, &self.data)];
        if let Some(s) = &self.scales {
            b.push(Binding::weight(1, s));
        }
        if let Some(z) = &self.zeros {
            b.push(Binding::weight(2, z));
        }
        if let Some(bias) = &self.bias {
            b.push(Binding::weight(3, bias));
        }
        b
    }
}
