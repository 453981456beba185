// Weight formats, shared by every kernel that reads a weight matrix (matmul, matvec, embedding).
//
// A weight matrix W has N rows of K values (row-major, K contiguous, the GGUF / PyTorch layout).
// `w_load4(n, k, K, G)` returns W[n, k..k+4] as f32 for k a multiple of 4; values past K read as 0.
// The format is chosen by one flag (see kernels/src/weights/format.rs) and dequantized here:
//   W_F32   array<f32> (array<vec4<f32>> when W_VEC4: K % 4 == 0)
//   W_F16   array<f16> when F16_NATIVE (SHADER_F16 granted), else halves packed in array<u32>;
//           with F16_QUADS four halves per vec2<u32>, K % 4 == 0 (CPU adapters)
//   W_Q8_0  GGUF blocks of 32: f16 d, 32 x i8               w = d * q
//   W_Q4_0  GGUF blocks of 32: f16 d, 16 bytes of nibbles    w = d * (q - 8)
//   W_Q4_1  GGUF blocks of 32: f16 d, f16 m, 16 bytes        w = d * q + m
//   W_I8    rows of K int8 padded to 4 bytes; f32 scale per group of G (and a zero point when W_ZP)
//   W_BF16  bfloat16 halves packed in array<u32>
//   W_Q5_0, W_Q5_1, W_Q2_K, W_Q3_K, W_Q4_K, W_Q5_K, W_Q6_K (with W_WHOLE): whole GGUF blocks
//           (32 values, or 256 for the K-quants) in array<u32>, each padded to a word (Q5_0 with
//           its quants moved two bytes on; kernels/src/weights/packing.rs, pad_blocks), row by
//           row; dequantized as ggml's dequantize_row_* does, 4 values at a time
//           (`w_kblock_load4`) or 16 sharing one scale (`w_kblock_load16`).
// GGUF blocks (34, 18 and 20 bytes, so often not even word-aligned) are split at upload: binding 0
// holds every block's quants, whole vec4s (two for Q8_0), and binding 1 the scales: f16 d two
// blocks to a word (Q8_0, Q4_0), or d and m one block to a word (Q4_1). The quants go by groups
// of 8 rows, block by block, the 8 rows' blocks side by side (`w_block_index`), and so do the
// scales. With W_LANE_TILES (CPU adapters) Q4_1's binding 0 holds both, by lane tiles of 64
// rows (`w_lane_cell`), and Q8_0's scales go by lane tiles (`w_scale_index`). With W_U64 (decode
// mat-vec where SHADER_INT64 is granted) they are read as u64 components: the same bytes, a Q4
// block one vec2<u64>, a Q8_0 block (or 32 int8 values of a row, or two rows' Q4_1 blocks in a
// lane tile) one vec4<u64>; CPU adapters pay per lane and component.
// Group 1 holds the weight buffers: 0 = data, 1 = scales (I8 and blocks), 2 = zero points
// (I8 + W_ZP), 3 = bias (when HAS_BIAS; used by the matrix kernels).

#if F16_NATIVE
enable f16;
#endif

#if W_F32 && W_VEC4
@group(1) @binding(0) var<storage, read> w: array<vec4<f32>>;
#elif W_F32
@group(1) @binding(0) var<storage, read> w: array<f32>;
#elif W_F16 && F16_NATIVE
@group(1) @binding(0) var<storage, read> w: array<f16>;
#elif W_F16 && F16_QUADS
@group(1) @binding(0) var<storage, read> w: array<vec2<u32>>;
#elif W_U64 && W_Q8_0 && W_LANE_TILES
@group(1) @binding(0) var<storage, read> w: array<vec4<u64>>;
@group(1) @binding(1) var<storage, read> w_dm: array<vec2<u64>>;
#elif W_U64 && W_Q8_0
@group(1) @binding(0) var<storage, read> w: array<vec4<u64>>;
@group(1) @binding(1) var<storage, read> w_dm: array<u32>;
#elif W_U64 && W_Q4_1 && W_LANE_TILES
@group(1) @binding(0) var<storage, read> w: array<vec4<u64>>;
#elif W_Q4_1 && W_LANE_TILES
@group(1) @binding(0) var<storage, read> w: array<vec4<u32>>;
#elif W_U64 && W_I8
@group(1) @binding(0) var<storage, read> w: array<vec4<u64>>;
#elif W_U64
@group(1) @binding(0) var<storage, read> w: array<vec2<u64>>;
@group(1) @binding(1) var<storage, read> w_dm: array<u32>;
#elif W_Q8_0 || W_Q4_0 || W_Q4_1
@group(1) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(1) @binding(1) var<storage, read> w_dm: array<u32>;
#else
@group(1) @binding(0) var<storage, read> w: array<u32>;
#endif
#if W_I8
@group(1) @binding(1) var<storage, read> w_scales: array<f32>;
#endif
#if W_I8 && W_ZP
@group(1) @binding(2) var<storage, read> w_zeros: array<f32>;
#endif

#if W_Q8_0 || W_Q4_0 || W_Q4_1 || W_I8
// Where block blk of row n sits among the blocks (kernels/src/weights/packing.rs, split_blocks); int8
// rows are not split, a block is 32 values of a row (K a multiple of 32).
fn w_block_index(n: u32, blk: u32, K: u32) -> u32 {
#if W_I8
    return n * (K >> 5u) + blk;
#elif W_Q4_1 && W_LANE_TILES
    return w_lane_cell(n, blk, K) * 10u + ((n >> 3u) & 7u);
#else
    return ((n >> 3u) * (K >> 5u) + blk) * 8u + (n & 7u);
#endif
}

#if W_Q4_1 && W_LANE_TILES
// The cell (160 bytes) of block blk in the lane tile that holds row n (kernels/src/weights/packing.rs,
// pack_lane_tiles): tiles of 64 rows, lane l owning rows l + 8 j, j < 8; for each tile and block
// the 8 lanes' cells side by side, a cell the lane's 8 rows' quants (16 bytes each), then their
// 8 scale words.
fn w_lane_cell(n: u32, blk: u32, K: u32) -> u32 {
    return (((n >> 6u) * (K >> 5u) + blk) << 3u) + (n & 7u);
}
#endif

#if W_U64
// Two u64 as four u32, low word first (the byte order of the u32 view).
fn split64(a: vec2<u64>) -> vec4<u32> {
    let lo = vec2<u32>(a & vec2<u64>(0xfffffffflu));
    let hi = vec2<u32>(a >> vec2<u32>(32u));
    return vec4<u32>(lo.x, hi.x, lo.y, hi.y);
}

// Quants i*16 .. i*16+16 of the part's bytes.
fn w_vec4(i: u32) -> vec4<u32> {
#if W_Q8_0 || W_I8 || W_Q4_1 && W_LANE_TILES
    let v = w[i >> 1u];
    return select(split64(v.xy), split64(v.zw), (i & 1u) == 1u);
#else
    return split64(w[i]);
#endif
}
#elif W_I8
fn w_vec4(i: u32) -> vec4<u32> {
    return vec4<u32>(w[4u * i], w[4u * i + 1u], w[4u * i + 2u], w[4u * i + 3u]);
}
#else
fn w_vec4(i: u32) -> vec4<u32> {
    return w[i];
}
#endif

#if W_I8
// Word i of the int8 rows, whichever view binds them.
fn w_word(i: u32) -> u32 {
#if W_U64
    return w_vec4(i >> 2u)[i & 3u];
#else
    return w[i];
#endif
}
#endif

#if !W_I8
// Where the scale of block blk of row n sits (kernels/src/weights/packing.rs, scale_slots): as the quants;
// with W_LANE_TILES, Q4_1's after the quants in their cell, Q8_0's by tiles of 64 rows, block by
// block, lane n % 8's 8 rows side by side (`w_lane_scales`).
fn w_scale_index(n: u32, blk: u32, K: u32) -> u32 {
#if W_Q4_1 && W_LANE_TILES
    return w_lane_cell(n, blk, K) * 40u + 32u + ((n >> 3u) & 7u);
#elif W_Q8_0 && W_LANE_TILES
    return ((n >> 6u) * (K >> 5u) + blk) * 64u + ((n & 7u) << 3u) + ((n >> 3u) & 7u);
#else
    return w_block_index(n, blk, K);
#endif
}

#if W_Q8_0 && W_LANE_TILES && W_U64
// The scales of block blk of the 8 rows of the lane that owns row n (n % 8 + 8 j in its tile),
// two to a word.
fn w_lane_scales(n: u32, blk: u32, K: u32) -> vec4<u32> {
    return split64(w_dm[w_scale_index(n, blk, K) >> 3u]);
}
#endif

// Scale d and minimum m (0 but for Q4_1) of the block whose scale sits at i (`w_scale_index`: a
// word of the data for Q4_1 in lane tiles, else a slot of the scales, a word for Q4_1 and a half
// for Q8_0 and Q4_0).
fn w_dm_of(i: u32) -> vec2<f32> {
#if W_Q4_1 && W_LANE_TILES && W_U64
    return unpack2x16float(u32(w[i >> 3u][(i >> 1u) & 3u] >> (32u * (i & 1u))));
#elif W_Q4_1 && W_LANE_TILES
    return unpack2x16float(w[i >> 2u][i & 3u]);
#elif W_Q8_0 && W_LANE_TILES && W_U64
    let v = w_dm[i >> 3u][(i >> 2u) & 1u] >> (16u * (i & 3u));
    return vec2<f32>(unpack2x16float(u32(v & 0xfffflu)).x, 0.0);
#elif W_Q4_1
    return unpack2x16float(w_dm[i]);
#else
    return vec2<f32>(unpack2x16float(w_dm[i >> 1u])[i & 1u], 0.0);
#endif
}
#endif

// The scale and minimum of block blk of row n, as `w_block` takes them (G: int8 group size, a
// multiple of 32 for int8 blocks).
fn w_block_dm(n: u32, blk: u32, K: u32, G: u32) -> vec2<f32> {
#if W_I8
    let g = n * ((K + G - 1u) / G) + (blk << 5u) / G;
#if W_ZP
    return vec2<f32>(w_scales[g], -w_scales[g] * w_zeros[g]);
#else
    return vec2<f32>(w_scales[g], 0.0);
#endif
#else
    return w_dm_of(w_scale_index(n, blk, K));
#endif
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

#if W_Q8_0 || W_Q4_0 || W_Q4_1 || W_I8
// Whole blocks, for kernels that give each invocation one block at a time (decode mat-vec): the
// scale and offset are decoded once per block, and a block's sum is dm.x * sum(v x) +
// dm.y * sum(x) over the values v of `w_block_quads`. A block's quants are one vec4 load (two
// for Q8_0 and int8).
//   Q8_0: v = q, dm = (d, 0); int8 the same, with a 32-value block of a row and dm = (s, -s z),
//         s and z its group's scale and zero point.
//   Q4_1: v = 1 + q / 16, the nibble moved into the mantissa of 1.0 (a shift, then one and-or)
//         instead of masked out and converted: a CPU adapter does one integer op less per
//         weight, a GPU skips its slow int-to-float conversion. Then d * sum(q x) + m * sum(x)
//         = 16d * sum(v x) + (m - 16d) * sum(x), so dm = (16d, m - 16d). Both terms are then
//         about 3x larger for a typical m = -8d, and so is their f32 rounding: far below the
//         4-bit quantization's own error.
//   Q4_0: v = 1 + q / 16 as for Q4_1, with m = -8d: dm = (16d, -24d). The two terms are about
//         5x larger than d * sum((q - 8) x), and so is their rounding, still far below the
//         quantization's error.
#if W_Q8_0 || W_I8
const QVEC4: u32 = 2u;
#else
const QVEC4: u32 = 1u;
#endif

struct Block {
    dm: vec2<f32>,
    q: array<vec4<u32>, QVEC4>,
}

// The dm of a block as `w_block_quads` needs it, from the scale and minimum as stored.
fn block_dm(dm: vec2<f32>) -> vec2<f32> {
#if W_Q4_1
    return vec2<f32>(16.0 * dm.x, dm.y - 16.0 * dm.x);
#elif W_Q4_0
    return vec2<f32>(16.0 * dm.x, -24.0 * dm.x);
#else
    return dm;
#endif
}

// Block blk of row n, given its scale and minimum as stored (`w_block_dm`).
fn w_block(n: u32, blk: u32, K: u32, dm: vec2<f32>) -> Block {
    let i = w_block_index(n, blk, K);
    var b: Block;
    b.dm = block_dm(dm);
#if W_U64 && W_Q8_0 || W_U64 && W_I8
    let v = w[i];
    b.q[0] = split64(v.xy);
    b.q[1] = split64(v.zw);
#else
    for (var j = 0u; j < QVEC4; j++) {
        b.q[j] = w_vec4(i * QVEC4 + j);
    }
#endif
    return b;
}

// Quants of elements 4i .. 4i+4 (lo) and 16+4i .. 16+4i+4 (hi) of a block, i in 0..4: in Q4
// blocks both come from the same word.
struct Quads {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn w_block_quads(b: Block, i: u32) -> Quads {
#if W_Q8_0 || W_I8
    return Quads(i8x4(b.q[0][i]), i8x4(b.q[1][i]));
#else
    // Low nibble of byte j at bits 8j, high nibble at 8j + 4: each shifted to bits 19..22.
    let q = b.q[0][i];
    let lo = vec4<u32>(q << 19u, q << 11u, q << 3u, q >> 5u);
    let hi = vec4<u32>(q << 15u, q << 7u, q >> 1u, q >> 9u);
    return Quads(one_plus_nibble(lo), one_plus_nibble(hi));
#endif
}

#if W_Q4_0 || W_Q4_1
// 1 + n / 16 for the nibble n at bits 19..22 of each word.
fn one_plus_nibble(v: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>((v & vec4<u32>(0x00780000u)) | vec4<u32>(0x3f800000u));
}
#endif
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
#elif W_F16 && F16_QUADS
    let v = w[(n * K + k) >> 2u];
    return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
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
#elif W_Q8_0 || W_Q4_0 || W_Q4_1
    let i = w_block_index(n, k >> 5u, K);
    let j = k & 31u;
    let dm = w_dm_of(w_scale_index(n, k >> 5u, K));
#if W_Q8_0
    return dm.x * i8x4(w_vec4(2u * i + (j >> 4u))[(j >> 2u) & 3u]);
#else
    // Element j < 16 is the low nibble of byte j, element j >= 16 the high nibble of byte j - 16.
    let q = u4x4(w_vec4(i)[(j >> 2u) & 3u] >> select(0u, 4u, j >= 16u));
#if W_Q4_0
    return dm.x * (q - vec4<f32>(8.0));
#else
    return dm.x * q + vec4<f32>(dm.y);
#endif
#endif
#elif W_BF16
    let base = n * K + k;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let e = base + i;
        if (k + i < K) {
            v[i] = bitcast<f32>(((w[e >> 1u] >> (16u * (e & 1u))) & 0xffffu) << 16u);
        }
    }
    return v;
#elif W_WHOLE
    return w_kblock_load4(n, k, K);
#elif W_I8
    let row_words = (K + 3u) >> 2u;
    let groups = (K + G - 1u) / G;
    let g = n * groups + k / G;
    let q = i8x4(w_word(n * row_words + (k >> 2u)));
#if W_ZP
    return w_scales[g] * (q - vec4<f32>(w_zeros[g]));
#else
    return w_scales[g] * q;
#endif
#endif
}

#if W_WHOLE
// Blocks kept whole: words per padded block and values per block.
#if W_Q5_0 || W_Q5_1
const KB_WORDS: u32 = 6u;
const KB_SHIFT: u32 = 5u;
#elif W_Q2_K
const KB_WORDS: u32 = 21u;
const KB_SHIFT: u32 = 8u;
#elif W_Q3_K
const KB_WORDS: u32 = 28u;
const KB_SHIFT: u32 = 8u;
#elif W_Q4_K
const KB_WORDS: u32 = 36u;
const KB_SHIFT: u32 = 8u;
#elif W_Q5_K
const KB_WORDS: u32 = 44u;
const KB_SHIFT: u32 = 8u;
#else
const KB_WORDS: u32 = 53u;
const KB_SHIFT: u32 = 8u;
#endif

// Byte i of the block whose first word is b.
fn kb_byte(b: u32, i: u32) -> u32 {
    return (w[b + (i >> 2u)] >> ((i & 3u) * 8u)) & 255u;
}

// Bit s of each byte of a word, as 0.0 or 1.0.
fn bits4(v: u32, s: u32) -> vec4<f32> {
    let x = v >> s;
    return vec4<f32>(f32(x & 1u), f32((x >> 8u) & 1u), f32((x >> 16u) & 1u), f32((x >> 24u) & 1u));
}

// Bits s, s + 1 of each byte of a word.
fn crumbs4(v: u32, s: u32) -> vec4<f32> {
    let x = v >> s;
    return vec4<f32>(f32(x & 3u), f32((x >> 8u) & 3u), f32((x >> 16u) & 3u), f32((x >> 24u) & 3u));
}

#if W_Q4_K || W_Q5_K
// The 6-bit scale and minimum of sub-block j of the 12 scale bytes at byte 4 of block b (ggml's
// get_scale_min_k4).
fn kb_scale_min(b: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(kb_byte(b, 4u + j) & 63u), f32(kb_byte(b, 8u + j) & 63u));
    }
    let hi = kb_byte(b, 8u + j);
    let sc = (hi & 15u) | ((kb_byte(b, j) >> 6u) << 4u);
    let m = (hi >> 4u) | ((kb_byte(b, 4u + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
#endif

// Where value k of row n sits: (first word of its block, index in the block).
fn kb_at(n: u32, k: u32, K: u32) -> vec2<u32> {
    return vec2<u32>((n * (K >> KB_SHIFT) + (k >> KB_SHIFT)) * KB_WORDS, k & ((1u << KB_SHIFT) - 1u));
}

// The scale x and offset y of the 16 values from e (a multiple of 16) of block b: each value is
// x * q + y for its quant q (`kb_quants`). As ggml's dequantize_row_* computes them, so that
// the values are the same f32 numbers: K-quants' x = d * sc and y = -(dmin * m).
fn kb_scale(b: u32, e: u32) -> vec2<f32> {
#if W_Q5_0
    return vec2<f32>(unpack2x16float(w[b]).x, 0.0);
#elif W_Q5_1
    return unpack2x16float(w[b]);
#elif W_Q2_K
    // 16 scale bytes (words 0..3): a scale nibble and a minimum nibble per 16 values; d and dmin
    // in word 20.
    let sc = kb_byte(b, ((e >> 7u) << 3u) + ((e >> 4u) & 7u));
    let dm = unpack2x16float(w[b + 20u]);
    return vec2<f32>(dm.x * f32(sc & 15u), -(dm.y * f32(sc >> 4u)));
#elif W_Q3_K
    // 12 bytes of 6-bit signed scales (bytes 96..107), one per 16 values; d in word 27.
    let is = ((e >> 7u) << 3u) + ((e >> 4u) & 7u);
    let low = (kb_byte(b, 96u + (is & 7u)) >> (4u * (is >> 3u))) & 15u;
    let high = (kb_byte(b, 104u + (is & 3u)) >> (2u * (is >> 2u))) & 3u;
    let d = unpack2x16float(w[b + 27u]).x;
    return vec2<f32>(d * f32(i32(low | (high << 4u)) - 32), 0.0);
#elif W_Q4_K || W_Q5_K
    // d and dmin (word 0); 6-bit scales and minimums, one pair per 32 values (bytes 4..15).
    let dm = unpack2x16float(w[b]);
    let sm = kb_scale_min(b, e >> 5u);
    return vec2<f32>(dm.x * sm.x, -(dm.y * sm.y));
#else
    // Q6_K: 16 signed scales (bytes 192..207), one per 16 values in the order of the quants'
    // halves and quarters; d in word 52.
    let h = e >> 7u;
    let quarter = (e >> 5u) & 3u;
    let sc = extractBits(i32(kb_byte(b, 192u + h * 8u + ((e >> 4u) & 1u) + 2u * quarter)), 0u, 8u);
    return vec2<f32>(unpack2x16float(w[b + 52u]).x * f32(sc), 0.0);
#endif
}

// The quants of values e .. e + 4 (e a multiple of 4) of block b, the format's offset included
// (Q5_0's 16, Q3_K's missing high bit, Q6_K's 32): four bytes of one word of every field.
fn kb_quants(b: u32, e: u32) -> vec4<f32> {
#if W_Q5_0 || W_Q5_1
    // The 32 high bits in word 1, the nibbles in words 2..5.
    let nib = u4x4(w[b + 2u + ((e & 15u) >> 2u)] >> select(0u, 4u, e >= 16u));
    let hb = (w[b + 1u] >> e) & 15u;
    let high = vec4<f32>(f32(hb & 1u), f32((hb >> 1u) & 1u), f32((hb >> 2u) & 1u), f32(hb >> 3u));
#if W_Q5_0
    return nib + 16.0 * high - vec4<f32>(16.0);
#else
    return nib + 16.0 * high;
#endif
#elif W_Q2_K || W_Q3_K
    // Halves of 128 values; in each, 4 shifts of 32 values of 2-bit quants (Q2_K: words 4..19,
    // Q3_K: words 8..23, after its 32 high-bit bytes).
    let h = e >> 7u;
    let j = (e >> 5u) & 3u;
    let l = e & 31u;
#if W_Q2_K
    return crumbs4(w[b + 4u + ((h * 32u + l) >> 2u)], 2u * j);
#else
    let q = crumbs4(w[b + 8u + ((h * 32u + l) >> 2u)], 2u * j);
    let hm = bits4(w[b + (l >> 2u)], h * 4u + j);
    return q - 4.0 * (vec4<f32>(1.0) - hm);
#endif
#elif W_Q4_K || W_Q5_K
    // 4 chunks of 64 values, low nibbles the first 32 and high the next (Q4_K: words 4..35;
    // Q5_K: words 12..43, after 32 high-bit bytes).
    let c = e >> 6u;
    let hi = (e >> 5u) & 1u;
    let l = e & 31u;
#if W_Q4_K
    return u4x4(w[b + 4u + c * 8u + (l >> 2u)] >> (4u * hi));
#else
    let q = u4x4(w[b + 12u + c * 8u + (l >> 2u)] >> (4u * hi));
    return q + 16.0 * bits4(w[b + 4u + (l >> 2u)], 2u * c + hi);
#endif
#else
    // Q6_K: 128 low-nibble bytes (words 0..31), 64 bytes of high 2 bits (words 32..47); halves
    // of 128 values, quarters of 32.
    let h = e >> 7u;
    let quarter = (e >> 5u) & 3u;
    let l = e & 31u;
    let low = u4x4(w[b + ((h * 64u + l + 32u * (quarter & 1u)) >> 2u)] >> (4u * (quarter >> 1u)));
    let high = crumbs4(w[b + 32u + ((h * 32u + l) >> 2u)], 2u * quarter);
    return low + 16.0 * high - vec4<f32>(32.0);
#endif
}

// W[n, k .. k + 4] from the whole block that holds it (k a multiple of 4).
fn w_kblock_load4(n: u32, k: u32, K: u32) -> vec4<f32> {
    let at = kb_at(n, k, K);
    let s = kb_scale(at.x, at.y & ~15u);
    return s.x * kb_quants(at.x, at.y) + vec4<f32>(s.y);
}

// W[n, k .. k + 16] (k a multiple of 16): one scale for all 16 values.
fn w_kblock_load16(n: u32, k: u32, K: u32) -> array<vec4<f32>, 4> {
    let at = kb_at(n, k, K);
    let s = kb_scale(at.x, at.y);
    var v: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        v[i] = s.x * kb_quants(at.x, at.y + 4u * i) + vec4<f32>(s.y);
    }
    return v;
}
#endif
