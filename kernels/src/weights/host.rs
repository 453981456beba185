//! Weight matrices on the host, and the CPU dequantizer that is the reference for the shader's
//! `w_load4`.

use half::f16;

use super::dequant::dequantize_block;
use super::format::WeightFormat;
use crate::error::{KernelError, Result};

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

    /// Raw GGUF blocks or f32 / f16 / bf16 bytes.
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
    /// launch computes them all ([`crate::linear::Output::split`]). They must share a format
    /// and `k`.
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
            WeightFormat::BF16 => out.extend(
                bytes
                    .chunks(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
            ),
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
            WeightFormat::Q5_0
            | WeightFormat::Q5_1
            | WeightFormat::Q2_K
            | WeightFormat::Q3_K
            | WeightFormat::Q4_K
            | WeightFormat::Q5_K
            | WeightFormat::Q6_K => {
                for block in bytes.chunks(self.format.block_bytes().unwrap_or(1)) {
                    dequantize_block(self.format, block, &mut out);
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

/// Moves columns `cols` of `values` (`[n, k]`) out into an `[n, c]` matrix, leaving zeros: the
/// main part and the f32 outlier columns of an LLM.int8() decomposition.
pub fn split_columns(values: &mut [f32], n: usize, k: usize, cols: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * cols.len());
    for r in 0..n {
        for &c in cols {
            out.push(std::mem::take(&mut values[r * k + c as usize]));
        }
    }
    out
}
