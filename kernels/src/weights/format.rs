//! Weight formats and their byte math. A matrix has `n` rows of `k` values, row-major (the GGUF /
//! PyTorch `[out, in]` layout). GGUF block layouts follow ggml's `block_*` structs: Q8_0, Q4_0,
//! Q4_1, Q5_0 and Q5_1 hold 32 values per block, the K-quants (Q2_K .. Q6_K) 256 in a super-block
//! of 16- or 32-value sub-blocks with quantized scales; in Q4 blocks element j < 16 is the low
//! nibble of byte j and element j + 16 its high nibble.

use kiln_runtime::Defines;

use crate::error::{KernelError, Result};
use crate::plan::{BlockOrder, F16Read};

/// Values per GGUF block (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
pub const BLOCK: usize = 32;

/// Values per K-quant super-block (ggml's `QK_K`).
pub const SUPER_BLOCK: usize = 256;

/// A weight format; block formats are named as GGUF names their types.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    /// bfloat16: the top half of an f32.
    BF16,
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
            WeightFormat::Q5_0 => Some(22),
            WeightFormat::Q5_1 => Some(24),
            WeightFormat::Q2_K => Some(84),
            WeightFormat::Q3_K => Some(110),
            WeightFormat::Q4_K => Some(144),
            WeightFormat::Q5_K => Some(176),
            WeightFormat::Q6_K => Some(210),
            _ => None,
        }
    }

    /// Byte offsets in a block of its f16 super-scales: d first, then the minimum (m or dmin)
    /// where the format has one. Empty for formats without blocks.
    pub fn scale_fields(self) -> &'static [usize] {
        match self {
            WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q5_0 => &[0],
            WeightFormat::Q4_1 | WeightFormat::Q5_1 => &[0, 2],
            WeightFormat::Q2_K => &[80, 82],
            WeightFormat::Q3_K => &[108],
            WeightFormat::Q4_K | WeightFormat::Q5_K => &[0, 2],
            WeightFormat::Q6_K => &[208],
            _ => &[],
        }
    }

    /// Values per block, for block formats (32, or 256 for the K-quants).
    pub fn block_values(self) -> usize {
        match self {
            WeightFormat::Q2_K
            | WeightFormat::Q3_K
            | WeightFormat::Q4_K
            | WeightFormat::Q5_K
            | WeightFormat::Q6_K => SUPER_BLOCK,
            _ => BLOCK,
        }
    }

    /// Whether the device splits the format's blocks into quants and scales and the mat-vec
    /// reads it by whole blocks (Q8_0, Q4_0, Q4_1: `split_blocks`). The other block formats keep
    /// each GGUF block whole, padded to a word (`pad_blocks`), and are read four values at a time.
    pub fn split_blocks(self) -> bool {
        matches!(
            self,
            WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q4_1
        )
    }

    /// Bytes of one row of `k` values in the data buffer.
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * k,
            WeightFormat::F16 | WeightFormat::BF16 => 2 * k,
            WeightFormat::Int8 { .. } => k.div_ceil(4) * 4,
            block => k / block.block_values() * block.block_bytes().unwrap_or(0),
        }
    }

    /// Bytes of one row on the device: as [`WeightFormat::row_bytes`], but blocks kept whole
    /// take a word-padded size each (`pad_blocks`). Split block formats also pad their rows
    /// to groups; weights are cut into parts by this size.
    pub fn device_row_bytes(self, k: usize) -> usize {
        match self.block_bytes() {
            Some(bytes) if !self.split_blocks() => {
                k / self.block_values() * bytes.next_multiple_of(4)
            }
            _ => self.row_bytes(k),
        }
    }

    /// The name GGUF gives the type (`Q5_0`, `BF16`), or the int8 scheme's.
    pub fn name(self) -> String {
        match self {
            WeightFormat::Int8 { group, zero_point } => {
                format!(
                    "int8 (group {group}{})",
                    if zero_point { ", zero point" } else { "" }
                )
            }
            other => format!("{other:?}"),
        }
    }

    pub(crate) fn flag(self) -> &'static str {
        match self {
            WeightFormat::F32 => "W_F32",
            WeightFormat::F16 => "W_F16",
            WeightFormat::Q8_0 => "W_Q8_0",
            WeightFormat::Q4_0 => "W_Q4_0",
            WeightFormat::Q4_1 => "W_Q4_1",
            WeightFormat::Q5_0 => "W_Q5_0",
            WeightFormat::Q5_1 => "W_Q5_1",
            WeightFormat::Q2_K => "W_Q2_K",
            WeightFormat::Q3_K => "W_Q3_K",
            WeightFormat::Q4_K => "W_Q4_K",
            WeightFormat::Q5_K => "W_Q5_K",
            WeightFormat::Q6_K => "W_Q6_K",
            WeightFormat::BF16 => "W_BF16",
            WeightFormat::Int8 { .. } => "W_I8",
        }
    }

    /// Checks that `k` values per row fit this format.
    pub fn check_k(self, k: usize) -> Result<()> {
        let ok = match self {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => k > 0,
            WeightFormat::Int8 { group, .. } => {
                k > 0 && (group == k || (group > 0 && group % 4 == 0))
            }
            block => k > 0 && k.is_multiple_of(block.block_values()),
        };
        if ok {
            return Ok(());
        }
        let rule = match self {
            WeightFormat::Int8 { .. } => "int8 groups a multiple of 4 or the whole row".to_string(),
            block => format!("blocks of {}", block.block_values()),
        };
        Err(KernelError::Shape {
            kernel: "weights",
            message: format!("{} cannot hold rows of {k} values ({rule})", self.name()),
        })
    }

    /// Whether the format has a lane-tile order ([`BlockOrder::LaneTiles`]): Q4_1 and Q8_0.
    pub fn has_lane_tiles(self) -> bool {
        matches!(self, WeightFormat::Q4_1 | WeightFormat::Q8_0)
    }
}

/// How a kernel reads one matrix: the part of a variant that `shaders/weights.wgsl` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightRead {
    pub format: WeightFormat,
    pub order: BlockOrder,
    pub f16: F16Read,
    /// Rows are a multiple of 4 values (f32 rows are then read as `vec4`).
    pub vec4: bool,
}

impl WeightRead {
    /// The defines that select this read in `weights.wgsl`: the one place they are made.
    pub fn defines(self) -> Defines {
        let mut d = Defines::new().flag(self.format.flag());
        if self.format.block_bytes().is_some() && !self.format.split_blocks() {
            d = d.flag("W_WHOLE");
        }
        if self.order == BlockOrder::LaneTiles {
            d = d.flag("W_LANE_TILES");
        }
        match self.format {
            WeightFormat::F32 if self.vec4 => d = d.flag("W_VEC4"),
            WeightFormat::F16 => match self.f16 {
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

    /// Every read a device can be asked for: each format, block order and f16 mode, with rows
    /// a multiple of 4 values or not where the format allows both.
    pub fn all() -> Vec<WeightRead> {
        let int8 = |zero_point| WeightFormat::Int8 {
            group: 64,
            zero_point,
        };
        let formats = [
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::Q8_0,
            WeightFormat::Q4_0,
            WeightFormat::Q4_1,
            WeightFormat::Q5_0,
            WeightFormat::Q5_1,
            WeightFormat::Q2_K,
            WeightFormat::Q3_K,
            WeightFormat::Q4_K,
            WeightFormat::Q5_K,
            WeightFormat::Q6_K,
            WeightFormat::BF16,
            int8(false),
            int8(true),
        ];
        let mut all = Vec::new();
        for format in formats {
            let orders: &[BlockOrder] = if format.has_lane_tiles() {
                &[BlockOrder::Interleaved, BlockOrder::LaneTiles]
            } else {
                &[BlockOrder::Interleaved]
            };
            let reads: &[F16Read] = if format == WeightFormat::F16 {
                &F16Read::ALL
            } else {
                &[F16Read::Packed]
            };
            for (&order, &f16) in orders
                .iter()
                .flat_map(|o| reads.iter().map(move |r| (o, r)))
            {
                for vec4 in [true, false] {
                    let read = WeightRead {
                        format,
                        order,
                        f16,
                        vec4,
                    };
                    // Blocks hold 32 values; quads need 4.
                    let fits = vec4 || (format.block_bytes().is_none() && f16 != F16Read::Quads);
                    if fits {
                        all.push(read);
                    }
                }
            }
        }
        all
    }
}
