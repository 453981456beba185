//! CPU dequantization of the GGUF block formats that the device keeps whole (Q5_0, Q5_1 and the
//! K-quants), after ggml's `dequantize_row_*`: the reference for `w_load4` in
//! `shaders/weights.wgsl`, and the source of `--quant` conversions.

use half::f16;

use super::format::WeightFormat;

fn half(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Appends the values of one GGUF `block` of `format` (a format for which
/// [`WeightFormat::split_blocks`] is false) to `out`.
pub(super) fn dequantize_block(format: WeightFormat, block: &[u8], out: &mut Vec<f32>) {
    match format {
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => q5(format == WeightFormat::Q5_1, block, out),
        WeightFormat::Q2_K => q2_k(block, out),
        WeightFormat::Q3_K => q3_k(block, out),
        WeightFormat::Q4_K | WeightFormat::Q5_K => q45_k(format == WeightFormat::Q5_K, block, out),
        WeightFormat::Q6_K => q6_k(block, out),
        other => unreachable!("{other:?} is not dequantized by blocks here"),
    }
}

/// Q5_0: f16 d, 32 high bits, 16 bytes of nibbles; w = d (q - 16). Q5_1: f16 d and m first;
/// w = d q + m.
fn q5(with_min: bool, b: &[u8], out: &mut Vec<f32>) {
    let d = half(&b[0..2]);
    let (min, at) = if with_min {
        (half(&b[2..4]), 4)
    } else {
        (0.0, 2)
    };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let qs = &b[at + 4..at + 20];
    let offset = if with_min { 0.0 } else { -16.0 };
    for e in 0..32 {
        let nibble = if e < 16 { qs[e] & 15 } else { qs[e - 16] >> 4 };
        let q = (nibble as u32 | ((qh >> e) & 1) << 4) as f32;
        out.push(d * (q + offset) + min);
    }
}

/// Q2_K: 16 scale bytes (low nibble scale, high nibble minimum of a 16-value group), 64 bytes of
/// 2-bit quants, f16 d and dmin. w = d sc q - dmin m.
fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half(&b[80..82]), half(&b[82..84]));
    for e in 0..256 {
        let (h, j, l) = (e / 128, e % 128 / 32, e % 32);
        let sc = scales[h * 8 + j * 2 + l / 16];
        let q = (qs[h * 32 + l] >> (2 * j)) & 3;
        out.push(d * (sc & 15) as f32 * q as f32 - dmin * (sc >> 4) as f32);
    }
}

/// Q3_K: 32 bytes of high bits, 64 bytes of 2-bit quants, 12 bytes of 6-bit signed scales (16
/// groups of 16 values), f16 d. w = d (sc - 32) (q - (high bit ? 0 : 4)).
fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half(&b[108..110]);
    for e in 0..256 {
        let (h, j, l) = (e / 128, e % 128 / 32, e % 32);
        let is = h * 8 + j * 2 + l / 16;
        let low = (scales[is % 8] >> (4 * (is / 8))) & 15;
        let high = (scales[8 + is % 4] >> (2 * (is / 4))) & 3;
        let sc = (low | high << 4) as i32 - 32;
        let q = ((qs[h * 32 + l] >> (2 * j)) & 3) as i32;
        let q = q - if hmask[l] >> (h * 4 + j) & 1 == 1 {
            0
        } else {
            4
        };
        out.push(d * sc as f32 * q as f32);
    }
}

/// The 6-bit scale and minimum of sub-block j of a Q4_K / Q5_K super-block (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

/// Q4_K: f16 d and dmin, 12 bytes of 6-bit scales and minimums (8 sub-blocks of 32), 128 bytes
/// of nibbles; Q5_K adds 32 bytes of high bits before the nibbles. w = d sc q - dmin m.
fn q45_k(five: bool, b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half(&b[0..2]), half(&b[2..4]));
    let scales = &b[4..16];
    let (qh, qs) = if five {
        (&b[16..48], &b[48..176])
    } else {
        (&b[0..0], &b[16..144])
    };
    for e in 0..256 {
        let (c, half_, l) = (e / 64, e % 64 / 32, e % 32);
        let (sc, m) = scale_min_k4(2 * c + half_, scales);
        let mut q = (qs[c * 32 + l] >> (4 * half_)) & 15;
        if five {
            q |= ((qh[l] >> (2 * c + half_)) & 1) << 4;
        }
        out.push(d * sc * q as f32 - dmin * m);
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2 bits, 16 signed scales (groups of 16),
/// f16 d. w = d sc (q - 32).
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(&b[208..210]);
    for e in 0..256 {
        let (h, quarter, l) = (e / 128, e % 128 / 32, e % 32);
        let low = (ql[h * 64 + l + 32 * (quarter & 1)] >> (4 * (quarter >> 1))) & 15;
        let high = (qh[h * 32 + l] >> (2 * quarter)) & 3;
        let q = (low | high << 4) as i32 - 32;
        let sc = scales[h * 8 + l / 16 + 2 * quarter] as i8 as f32;
        out.push(d * sc * q as f32);
    }
}
