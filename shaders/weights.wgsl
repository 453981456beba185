// Weight formats, shared by every kernel that reads a weight matrix (matmul, matvec, embedding).
//
// A weight matrix W has N rows of K values (row-major, K contiguous, the GGUF / PyTorch layout).
// `w_load4(n, k, K, G)` returns W[n, k..k+4] as f32 for k a multiple of 4; values past K read as 0.
// The format is chosen by one flag (see kernels/src/weights.rs); packed formats are read from their
// raw bytes, two-byte aligned blocks included, and dequantized here:
//   W_F32   array<f32> (array<vec4<f32>> when W_VEC4: K % 4 == 0)
//   W_F16   array<f16> when F16_NATIVE (SHADER_F16 granted), else halves packed in array<u32>
//   W_Q8_0 34-byte blocks of 32: f16 d, 32 x i8             w = d * q
//   W_Q4_0 18-byte blocks of 32: f16 d, 16 bytes of nibbles  w = d * (q - 8)
//   W_Q4_1 20-byte blocks of 32: f16 d, f16 m, 16 bytes      w = d * q + m
//   W_I8    rows of K int8 padded to 4 bytes; f32 scale per group of G (and a zero point when W_ZP)
// Group 1 holds the weight buffers: 0 = data, 1 = scales (I8), 2 = zero points (I8 + W_ZP),
// 3 = bias (when HAS_BIAS; used by the matrix kernels).

#if F16_NATIVE
enable f16;
#endif

#if W_F32 && W_VEC4
@group(1) @binding(0) var<storage, read> w: array<vec4<f32>>;
#elif W_F32
@group(1) @binding(0) var<storage, read> w: array<f32>;
#elif W_F16 && F16_NATIVE
@group(1) @binding(0) var<storage, read> w: array<f16>;
#else
@group(1) @binding(0) var<storage, read> w: array<u32>;
#endif
#if W_I8
@group(1) @binding(1) var<storage, read> w_scales: array<f32>;
#endif
#if W_I8 && W_ZP
@group(1) @binding(2) var<storage, read> w_zeros: array<f32>;
#endif

#if W_Q8_0 || W_Q4_0 || W_Q4_1
// Two bytes at a two-byte aligned byte offset.
fn w_u16(byte: u32) -> u32 {
    return (w[byte >> 2u] >> ((byte & 2u) * 8u)) & 0xffffu;
}

// Four bytes at a two-byte aligned byte offset (blocks of 34 and 18 bytes are only 2-aligned).
fn w_u32(byte: u32) -> u32 {
    let i = byte >> 2u;
    if ((byte & 3u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}
#endif

fn half_bits_to_f32(bits: u32) -> f32 {
    return unpack2x16float(bits).x;
}

// Four signed bytes of a word, sign-extended.
fn i8x4(q: u32) -> vec4<f32> {
    let s = bitcast<i32>(q);
    return vec4<f32>(vec4<i32>(extractBits(s, 0u, 8u), extractBits(s, 8u, 8u),
                               extractBits(s, 16u, 8u), extractBits(s, 24u, 8u)));
}

// Four unsigned nibbles, one from the low half of each byte of q.
fn u4x4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
}

#if W_Q8_0 || W_Q4_0 || W_Q4_1
// Whole blocks, for kernels that give each invocation one block (decode mat-vec): the block's
// scale and offset are decoded once, w = d * q + m (m = 0 but for Q4_1; Q4_0's quants come
// back already offset by -8, which keeps d * sum(q x) from cancelling against a large m sum(x)).
fn w_block_dm(n: u32, blk: u32, K: u32) -> vec2<f32> {
#if W_Q8_0
    return vec2<f32>(half_bits_to_f32(w_u16((n * (K >> 5u) + blk) * 34u)), 0.0);
#elif W_Q4_0
    return vec2<f32>(half_bits_to_f32(w_u16((n * (K >> 5u) + blk) * 18u)), 0.0);
#else
    return unpack2x16float(w[(n * (K >> 5u) + blk) * 5u]);
#endif
}

// Quants of elements 4i .. 4i+4 (lo) and 16+4i .. 16+4i+4 (hi) of a block, i in 0..4: in Q4
// blocks both come from the same word.
struct Quads {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn w_block_quads(n: u32, blk: u32, K: u32, i: u32) -> Quads {
#if W_Q8_0
    let base = (n * (K >> 5u) + blk) * 34u + 2u + 4u * i;
    return Quads(i8x4(w_u32(base)), i8x4(w_u32(base + 16u)));
#elif W_Q4_0
    let q = w_u32((n * (K >> 5u) + blk) * 18u + 2u + 4u * i);
    return Quads(u4x4(q) - vec4<f32>(8.0), u4x4(q >> 4u) - vec4<f32>(8.0));
#else
    let q = w[(n * (K >> 5u) + blk) * 5u + 1u + i];
    return Quads(u4x4(q), u4x4(q >> 4u));
#endif
}
#endif

fn w_load4(n: u32, k: u32, K: u32, G: u32) -> vec4<f32> {
#if W_F32 && W_VEC4
    return w[(n * K + k) >> 2u];
#elif W_F32
    let base = n * K + k;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < K) {
            v[i] = w[base + i];
        }
    }
    return v;
#elif W_F16 && F16_NATIVE
    let base = n * K + k;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < K) {
            v[i] = f32(w[base + i]);
        }
    }
    return v;
#elif W_F16
    let base = n * K + k;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let e = base + i;
        if (k + i < K) {
            v[i] = unpack2x16float(w[e >> 1u])[e & 1u];
        }
    }
    return v;
#elif W_Q8_0
    let j = k & 31u;
    let block = (n * (K >> 5u) + (k >> 5u)) * 34u;
    let d = half_bits_to_f32(w_u16(block));
    return d * i8x4(w_u32(block + 2u + j));
#elif W_Q4_0
    let j = k & 31u;
    let block = (n * (K >> 5u) + (k >> 5u)) * 18u;
    let d = half_bits_to_f32(w_u16(block));
    // Element j < 16 is the low nibble of byte j, element j >= 16 the high nibble of byte j - 16.
    let q = w_u32(block + 2u + (j & 15u)) >> select(0u, 4u, j >= 16u);
    return d * (u4x4(q) - vec4<f32>(8.0));
#elif W_Q4_1
    let j = k & 31u;
    let block = (n * (K >> 5u) + (k >> 5u)) * 20u;
    let dm = unpack2x16float(w[block >> 2u]);
    let q = w[(block + 4u + (j & 15u)) >> 2u] >> select(0u, 4u, j >= 16u);
    return dm.x * u4x4(q) + vec4<f32>(dm.y);
#elif W_I8
    let row_words = (K + 3u) >> 2u;
    let groups = (K + G - 1u) / G;
    let g = n * groups + k / G;
    let q = i8x4(w[n * row_words + (k >> 2u)]);
#if W_ZP
    return w_scales[g] * (q - vec4<f32>(w_zeros[g]));
#else
    return w_scales[g] * q;
#endif
#endif
}
