// The KV cache the attention kernels share (attention.wgsl: store, attend, combine;
// attention_cpu.wgsl: the CPU-adapter kernels), with their parameters and bindings.
//
// Cache layout (paged, as vLLM's PagedAttention): k_cache / v_cache hold a pool of blocks of B
//   positions, [blocks][KVH][B][D]; a sequence's positions j*B .. (j+1)*B live in block
//   table[seq * TW + j], so sequences take blocks as they grow and may share full ones.
//   Stored as f32; KV_F16: f16 pairs packed in u32; KV_I8: int8 quadruples packed in u32 with
//   f32 scales in `aux` (as KIVI, Liu et al. 2024): values per token (one absmax scale per
//   position), keys per channel (one absmax scale per channel for each key group of KB
//   positions, B a multiple of KB). A key group is quantized once all its KB positions are
//   written; until then its keys stay f32 in the sequence's residual in `aux`, and the group's
//   flag says which to read.

struct Params {
    H: u32,
    KVH: u32,
    D: u32,          // head dim, at most 256
    C: u32,          // cache capacity (positions per sequence)
    R: u32,          // query rows (attend, combine) or new rows T (kv_store)
    splits: u32,
    split_len: u32,  // keys per split, a multiple of 64
    rope_rot: u32,   // kv_store with ROPE: rotating dims of each head (rotary.wgsl)
    scale: f32,      // softmax scale, usually 1 / sqrt(D)
    rope_base: f32,
    rope_mode: u32,
    B: u32,          // positions per KV block, a power of two
    B_shift: u32,    // log2(B)
    TW: u32,         // block table entries per sequence
    resid_at: u32,   // KV_I8: where the residual keys start in `aux`
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_q: array<f32>;   // attend: q; kv_store: new K
@group(0) @binding(2) var<storage, read> src_v: array<f32>;   // kv_store, attend with STORE_NEW: new V
@group(0) @binding(3) var<storage, read> idx: array<u32>;     // kv_store: slots[2T]; attend: meta[2R]
#if ATTEND_LANES && KV_WIDE
@group(0) @binding(4) var<storage, read> k_lanes: array<vec4<u64>>;
@group(0) @binding(5) var<storage, read> v_lanes: array<vec4<u64>>;
#elif ATTEND_LANES
@group(0) @binding(4) var<storage, read> k_lanes: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> v_lanes: array<vec4<u32>>;
#elif KV_F16 || KV_I8
@group(0) @binding(4) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<u32>;
#else
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> out: array<f32>;   // [R, H, D]
@group(0) @binding(7) var<storage, read_write> part: array<f32>;  // [R, H, splits, D + 2]
#if STORE_NEW
@group(0) @binding(9) var<storage, read> src_k: array<f32>;   // attend with STORE_NEW: new K
#endif
#if KV_I8
// Per (block, KV head), G = B / KB key groups: [flags: G][key scales: G x D][value scales: B];
// from resid_at, per (sequence, KV head): [residual keys: KB x D].
@group(0) @binding(8) var<storage, read_write> aux: array<f32>;
#endif
@group(0) @binding(10) var<storage, read> table: array<u32>;   // [n_seq, TW] block ids

const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const NEG: f32 = -1.0e30;
const KB: u32 = 32u;

var<workgroup> q_sh: array<f32, MAX_D>;
var<workgroup> prob: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

// What workgroup g of a split attention (`attend`, `attend_lanes`) takes: query row r's head h
// (rh = r * H + h) over keys start .. end of its sequence.
struct SplitTask {
    rh: u32,
    seq: u32,
    kvh: u32,
    start: u32,
    end: u32,
}

fn split_task(g: u32) -> SplitTask {
    let split = g % p.splits;
    let rh = g / p.splits;
    let r = rh / p.H;
    let n_keys = idx[2u * r + 1u];
    let start = split * p.split_len;
    return SplitTask(rh, idx[2u * r], (rh % p.H) / (p.H / p.KVH), start,
                     min(start + p.split_len, n_keys));
}

// Element e of the new keys ([T, KVH, D]) as given: bound apart from the queries when the
// attention stores them itself (STORE_NEW), as src_q by kv_store.
fn new_k(e: u32) -> f32 {
#if STORE_NEW
    return src_k[e];
#else
    return src_q[e];
#endif
}

// Element k of the new keys, of a row at `position`: with ROPE turned as it is read, so the
// store needs no RoPE launch before it.
fn new_key(k: u32, position: u32) -> f32 {
#if ROPE
    let d = k % p.D;
    if (d < p.rope_rot) {
        let i = rotary_pair(d, p.rope_rot, p.rope_mode);
        let dims = rotary_dims(i, p.rope_rot, p.rope_mode) + vec2<u32>(k - d);
        let cs = rotary_cs(position, i, p.rope_rot, p.rope_base);
        let v = rotary_turn(vec2<f32>(new_k(dims.x), new_k(dims.y)), cs);
        return select(v.y, v.x, k == dims.x);
    }
#endif
    return new_k(k);
}

fn new_key4(k: u32, position: u32) -> vec4<f32> {
    return vec4<f32>(new_key(k, position), new_key(k + 1u, position), new_key(k + 2u, position),
                     new_key(k + 3u, position));
}

// Row (of D values) of the cache that holds `position` of `seq` for KV head `kvh`.
fn cache_row_index(seq: u32, kvh: u32, position: u32) -> u32 {
    let block = table[seq * p.TW + (position >> p.B_shift)];
    return (block * p.KVH + kvh) * p.B + (position & (p.B - 1u));
}

fn cache_row(seq: u32, kvh: u32, position: u32) -> u32 {
    return cache_row_index(seq, kvh, position) * p.D;
}

#if KV_I8
// Where the scales of `position`'s block begin for KV head `kvh`.
fn aux_block(seq: u32, kvh: u32, position: u32) -> u32 {
    let groups = p.B / KB;
    let block = table[seq * p.TW + (position >> p.B_shift)];
    return (block * p.KVH + kvh) * (groups * (1u + p.D) + p.B);
}

// The flag of `position`'s key group: 1 once its keys are int8.
fn aux_flag(seq: u32, kvh: u32, position: u32) -> u32 {
    return aux_block(seq, kvh, position) + (position & (p.B - 1u)) / KB;
}

// The first of the D key scales of `position`'s key group.
fn aux_kscale(seq: u32, kvh: u32, position: u32) -> u32 {
    return aux_block(seq, kvh, position) + p.B / KB + ((position & (p.B - 1u)) / KB) * p.D;
}

fn aux_vscale(seq: u32, kvh: u32, position: u32) -> u32 {
    return aux_block(seq, kvh, position) + (p.B / KB) * (1u + p.D) + (position & (p.B - 1u));
}

// The first of the D residual keys of `position` (in its sequence's open key group).
fn aux_resid(seq: u32, kvh: u32, position: u32) -> u32 {
    return p.resid_at + ((seq * p.KVH + kvh) * KB + position % KB) * p.D;
}

// Signed byte e of a packed int8 array.
fn i8_at(word: u32, e: u32) -> f32 {
    return f32(extractBits(bitcast<i32>(word), 8u * (e & 3u), 8u));
}

// Four values rounded to int8 (half to even), packed into one word.
fn pack_i8(v: vec4<f32>) -> u32 {
    let q = clamp(round(v), vec4<f32>(-127.0), vec4<f32>(127.0));
    let b = bitcast<vec4<u32>>(vec4<i32>(q)) & vec4<u32>(255u);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

// Row of the new keys that holds `position` of `seq` (the caller knows one exists).
fn new_row(seq: u32, position: u32) -> u32 {
    for (var u = 0u; u < p.R; u++) {
        if (idx[2u * u] == seq && idx[2u * u + 1u] == position) {
            return u;
        }
    }
    return 0u;
}

// Channels c .. c + 3 of the key at position j of a block being completed: positions before
// `first` (the first new one) were written by earlier steps into the residual.
fn block_key(seq: u32, kvh: u32, first: u32, j: u32, c: u32) -> vec4<f32> {
    if (j < first) {
        let r = aux_resid(seq, kvh, j) + c;
        return vec4<f32>(aux[r], aux[r + 1u], aux[r + 2u], aux[r + 3u]);
    }
    return new_key4((new_row(seq, j) * p.KVH + kvh) * p.D + c, j);
}
#endif

#if !ATTEND_LANES
fn load_key(seq: u32, kvh: u32, position: u32, d: u32) -> f32 {
    let e = cache_row(seq, kvh, position) + d;
#if KV_F16
    return unpack2x16float(k_cache[e >> 1u])[e & 1u];
#elif KV_I8
    if (aux[aux_flag(seq, kvh, position)] > 0.5) {
        return i8_at(k_cache[e >> 2u], e) * aux[aux_kscale(seq, kvh, position) + d];
    }
    return aux[aux_resid(seq, kvh, position) + d];
#else
    return k_cache[e];
#endif
}

fn load_value(seq: u32, kvh: u32, position: u32, d: u32) -> f32 {
    let e = cache_row(seq, kvh, position) + d;
#if KV_F16
    return unpack2x16float(v_cache[e >> 1u])[e & 1u];
#elif KV_I8
    return i8_at(v_cache[e >> 2u], e) * aux[aux_vscale(seq, kvh, position)];
#else
    return v_cache[e];
#endif
}

#endif
