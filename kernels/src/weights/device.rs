//! Weight matrices on the device: uploaded in row parts within the binding limit, in the
//! device plan's block order and f16 read, with the per-matrix extras the matrix kernels add
//! (bias, outlier columns).

use kiln_runtime::{Binding, Context, DType, Tensor};

use super::format::{WeightFormat, WeightRead};
use super::host::HostWeights;
use super::outliers::Outliers;
use super::packing::{
    INTERLEAVE, LANE_TILE, join_blocks, pack_lane_tiles, pad_blocks, split_blocks,
    unpack_lane_tiles, unpad_blocks,
};
use crate::error::{KernelError, Result};
use crate::plan::{BlockOrder, DevicePlan, F16Read};

/// A weight matrix on the device, with an optional bias `[n]` added by the matrix kernels.
///
/// A matrix larger than the device's storage-binding limit (a 50257 × 768 f32 GPT-2 embedding is
/// 154 MB; WebGPU and some drivers bind 128 MiB) is stored as row ranges in separate buffers, and
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
        let order = DevicePlan::of(ctx).block_order(host.format.has_lane_tiles());
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
        // Blocks kept whole grow to a word each on the device: parts are cut by those bytes.
        let device_row_bytes = host.format.device_row_bytes(host.k);
        let rows_per_part = (max_part_bytes / device_row_bytes as u64) as usize;
        if rows_per_part == 0 {
            return Err(KernelError::Shape {
                kernel: "weights",
                message: format!(
                    "one row of {} values takes {device_row_bytes} bytes, over the {max_part_bytes}-byte binding limit",
                    host.k
                ),
            });
        }
        if order == BlockOrder::LaneTiles && !host.format.has_lane_tiles() {
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
        let rows_per_part = if host.format.split_blocks() && rows_per_part > group {
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
                // bf16 is kept as 2-byte elements like f16 and read as bits by the shader.
                WeightFormat::F16 | WeightFormat::BF16 => {
                    (ctx.upload(bytes, DType::F16, &[n, host.k])?, None)
                }
                whole if !whole.split_blocks() && whole.block_bytes().is_some() => {
                    (ctx.upload_bytes(&pad_blocks(whole, bytes))?, None)
                }
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
            f16_read: DevicePlan::of(ctx).f16_read(host.k),
            block_order: order,
            outliers: None,
        })
    }

    /// Adds input columns `cols` held in f32 (`values`, `[n, cols.len()]`); the main part should
    /// hold zeros there, as [`super::split_columns`] leaves it.
    pub fn with_outliers(mut self, ctx: &Context, cols: &[u32], values: &[f32]) -> Result<Self> {
        self.outliers = Some(Outliers::upload(ctx, self.n, self.k, cols, values)?);
        Ok(self)
    }

    pub fn outliers(&self) -> Option<&Outliers> {
        self.outliers.as_ref()
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
                WeightFormat::F16 | WeightFormat::BF16 => {
                    data.extend(bytemuck::cast_slice(&ctx.read::<u16>(&part.data)?))
                }
                whole if !whole.split_blocks() && whole.block_bytes().is_some() => {
                    data.extend(unpad_blocks(whole, &ctx.read::<u8>(&part.data)?))
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

    /// How the kernels read this matrix ([`WeightRead::defines`] selects it in `weights.wgsl`).
    pub fn read(&self) -> WeightRead {
        WeightRead {
            format: self.format,
            order: self.block_order,
            f16: self.f16_read,
            vec4: self.k.is_multiple_of(4),
        }
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
