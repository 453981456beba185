// Attention over a KV cache, with grouped-query heads (H query heads share KVH key/value heads).
//
// Cache layout: k_cache / v_cache [n_seq][KVH][C][D] (C = capacity in positions), stored as f32;
//   KV_F16: f16 pairs packed in u32; KV_I8: int8 quadruples packed in u32 with f32 scales in `aux`
//   (as KIVI, Liu et al. 2024): values per token (one absmax scale per position), keys per channel
//   (one absmax scale per channel for each block of KB positions). A key block is quantized once
//   all its KB positions are written; until then its keys stay f32 in a residual block in `aux`,
//   and the block's flag says which to read.
//   kv_store: writes new K/V rows [T, KVH, D]; row t goes to sequence slots[2t], position slots[2t + 1].
//             With ROPE it also applies the layer's RoPE at each row's position: to the keys as
//             it reads them, and to the queries (bound as `out`, [T, H, D]) in place.
//   attend:   for query row r ([R, H, D]) of sequence meta[2r] over keys 0 .. meta[2r + 1]
//             (prefill: one row per prompt token, causal through its key count; decode: one row
//             per sequence). The keys are cut into `splits` ranges of `split_len` (flash-decoding):
//             with one split the output is written directly; otherwise each range writes its
//             running max, sum and weighted V to `part`, and `combine` merges them.
// Each 64-thread workgroup handles (row, head, split): thread j scores key c0 + j of a 64-key
// chunk, the chunk is folded into an online softmax, and thread j accumulates dims j, j+64, ...

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
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_q: array<f32>;   // attend: q; kv_store: new K
@group(0) @binding(2) var<storage, read> src_v: array<f32>;   // kv_store: new V
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
#if KV_I8
// Per (sequence, KV head), NB = ceil(C / KB) blocks:
//   [flags: NB][key scales: NB x D][value scales: C][residual keys: KB x D]
@group(0) @binding(8) var<storage, read_write> aux: array<f32>;
#endif

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

// Element k of the new keys ([T, KVH, D]), of a row at `position`: with ROPE turned as it is
// read, so the store needs no RoPE launch before it.
fn new_key(k: u32, position: u32) -> f32 {
#if ROPE
    let d = k % p.D;
    if (d < p.rope_rot) {
        let i = rotary_pair(d, p.rope_rot, p.rope_mode);
        let dims = rotary_dims(i, p.rope_rot, p.rope_mode) + vec2<u32>(k - d);
        let cs = rotary_cs(position, i, p.rope_rot, p.rope_base);
        let v = rotary_turn(vec2<f32>(src_q[dims.x], src_q[dims.y]), cs);
        return select(v.y, v.x, k == dims.x);
    }
#endif
    return src_q[k];
}

fn new_key4(k: u32, position: u32) -> vec4<f32> {
    return vec4<f32>(new_key(k, position), new_key(k + 1u, position), new_key(k + 2u, position),
                     new_key(k + 3u, position));
}

fn cache_row(seq: u32, kvh: u32, position: u32) -> u32 {
    return ((seq * p.KVH + kvh) * p.C + position) * p.D;
}

#if KV_I8
fn n_blocks() -> u32 {
    return (p.C + KB - 1u) / KB;
}

fn aux_base(seq: u32, kvh: u32) -> u32 {
    let nb = n_blocks();
    return (seq * p.KVH + kvh) * (nb + nb * p.D + p.C + KB * p.D);
}

fn aux_kscale(base: u32, block: u32) -> u32 {
    return base + n_blocks() + block * p.D;
}

fn aux_vscale(base: u32) -> u32 {
    return base + n_blocks() * (1u + p.D);
}

fn aux_resid(base: u32, position: u32) -> u32 {
    return aux_vscale(base) + p.C + (position % KB) * p.D;
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
fn block_key(seq: u32, kvh: u32, base: u32, first: u32, j: u32, c: u32) -> vec4<f32> {
    if (j < first) {
        let r = aux_resid(base, j) + c;
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
    let base = aux_base(seq, kvh);
    let block = position / KB;
    if (aux[base + block] > 0.5) {
        return i8_at(k_cache[e >> 2u], e) * aux[aux_kscale(base, block) + d];
    }
    return aux[aux_resid(base, position) + d];
#else
    return k_cache[e];
#endif
}

fn load_value(seq: u32, kvh: u32, position: u32, d: u32) -> f32 {
    let e = cache_row(seq, kvh, position) + d;
#if KV_F16
    return unpack2x16float(v_cache[e >> 1u])[e & 1u];
#elif KV_I8
    return i8_at(v_cache[e >> 2u], e) * aux[aux_vscale(aux_base(seq, kvh)) + position];
#else
    return v_cache[e];
#endif
}

@compute @workgroup_size(64)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;   // t * KVH + kvh
    if (g >= p.R * p.KVH) {
        return;
    }
    let t = g / p.KVH;
    let kvh = g % p.KVH;
    let seq = idx[2u * t];
    let position = idx[2u * t + 1u];
    let dst = cache_row(seq, kvh, position);
    let src = g * p.D;
#if ROPE
    // The queries of row t's heads that share KV head kvh, turned in place.
    let group = p.H / p.KVH;
    let half_rot = p.rope_rot / 2u;
    for (var i = tid; i < group * half_rot; i += WG) {
        let pair = i % half_rot;
        let head = (t * p.H + kvh * group + i / half_rot) * p.D;
        let dims = rotary_dims(pair, p.rope_rot, p.rope_mode) + vec2<u32>(head);
        let cs = rotary_cs(position, pair, p.rope_rot, p.rope_base);
        let v = rotary_turn(vec2<f32>(out[dims.x], out[dims.y]), cs);
        out[dims.x] = v.x;
        out[dims.y] = v.y;
    }
#endif
#if KV_F16
    for (var d = 2u * tid; d < p.D; d += 2u * WG) {
        let k2 = vec2<f32>(new_key(src + d, position), new_key(src + d + 1u, position));
        k_cache[(dst + d) >> 1u] = pack2x16float(k2);
        v_cache[(dst + d) >> 1u] = pack2x16float(vec2<f32>(src_v[src + d], src_v[src + d + 1u]));
    }
#elif KV_I8
    // Values: one absmax scale per position.
    var amax = 0.0;
    for (var d = tid; d < p.D; d += WG) {
        amax = max(amax, abs(src_v[src + d]));
    }
    amax = reduce(tid, amax, true);
    let vs = select(1.0, amax / 127.0, amax > 0.0);
    let base = aux_base(seq, kvh);
    if (tid == 0u) {
        aux[aux_vscale(base) + position] = vs;
    }
    let c = 4u * tid;   // this thread's four channels
    if (c < p.D) {
        let v4 = vec4<f32>(src_v[src + c], src_v[src + c + 1u], src_v[src + c + 2u], src_v[src + c + 3u]);
        v_cache[(dst + c) >> 2u] = pack_i8(v4 / vs);
    }

    // Keys: the first new row of its sequence within its block handles the whole block.
    let block = position / KB;
    let b0 = block * KB;
    var hi = position + 1u;
    for (var u = 0u; u < p.R; u++) {
        if (idx[2u * u] == seq) {
            let other = idx[2u * u + 1u];
            if (other + 1u == position && position > b0) {
                return;   // an earlier new row of this block handles it
            }
            if (other >= position && other / KB == block) {
                hi = max(hi, other + 1u);
            }
        }
    }
    if (c >= p.D) {
        return;
    }
    if (hi == b0 + KB) {
        // The block is complete: per-channel absmax over its rows, then int8 with those scales.
        var kmax = vec4<f32>(0.0);
        for (var j = b0; j < hi; j++) {
            kmax = max(kmax, abs(block_key(seq, kvh, base, position, j, c)));
        }
        let ks = select(vec4<f32>(1.0), kmax / 127.0, kmax > vec4<f32>(0.0));
        for (var j = b0; j < hi; j++) {
            let e = cache_row(seq, kvh, j) + c;
            k_cache[e >> 2u] = pack_i8(block_key(seq, kvh, base, position, j, c) / ks);
        }
        let sc = aux_kscale(base, block) + c;
        aux[sc] = ks.x;
        aux[sc + 1u] = ks.y;
        aux[sc + 2u] = ks.z;
        aux[sc + 3u] = ks.w;
        if (tid == 0u) {
            aux[base + block] = 1.0;
        }
    } else {
        // Still open: the new keys wait in the residual.
        for (var j = position; j < hi; j++) {
            let r = aux_resid(base, j) + c;
            let k = new_key4((new_row(seq, j) * p.KVH + kvh) * p.D + c, j);
            aux[r] = k.x;
            aux[r + 1u] = k.y;
            aux[r + 2u] = k.z;
            aux[r + 3u] = k.w;
        }
        if (tid == 0u) {
            aux[base + block] = 0.0;
        }
    }
#else
    for (var d = tid; d < p.D; d += WG) {
        k_cache[dst + d] = new_key(src + d, position);
        v_cache[dst + d] = src_v[src + d];
    }
#endif
}

// q_sh . key: four dimensions a step with their loads independent of each other, so a GPU has
// four in flight per thread instead of waiting on each.
fn key_score(seq: u32, kvh: u32, key: u32) -> f32 {
    var s = vec4<f32>(0.0);
    var d = 0u;
    for (; d + 4u <= p.D; d += 4u) {
        let k = vec4<f32>(load_key(seq, kvh, key, d), load_key(seq, kvh, key, d + 1u),
                          load_key(seq, kvh, key, d + 2u), load_key(seq, kvh, key, d + 3u));
        s += vec4<f32>(q_sh[d], q_sh[d + 1u], q_sh[d + 2u], q_sh[d + 3u]) * k;
    }
    for (; d < p.D; d++) {
        s.x += q_sh[d] * load_key(seq, kvh, key, d);
    }
    return s.x + s.y + s.z + s.w;
}

// sum over keys c0 .. c0 + count of prob[j] * V[key][d], four keys a step (as `key_score`).
fn weighted_values(seq: u32, kvh: u32, c0: u32, count: u32, d: u32) -> f32 {
    var a = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= count; j += 4u) {
        let v = vec4<f32>(load_value(seq, kvh, c0 + j, d), load_value(seq, kvh, c0 + j + 1u, d),
                          load_value(seq, kvh, c0 + j + 2u, d),
                          load_value(seq, kvh, c0 + j + 3u, d));
        a += vec4<f32>(prob[j], prob[j + 1u], prob[j + 2u], prob[j + 3u]) * v;
    }
    for (; j < count; j++) {
        a.x += prob[j] * load_value(seq, kvh, c0 + j, d);
    }
    return a.x + a.y + a.z + a.w;
}

fn reduce(tid: u32, v: f32, take_max: bool) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] = select(red[tid] + red[tid + s], max(red[tid], red[tid + s]), take_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.R * p.H * p.splits) {
        return;
    }
    let task = split_task(g);
    let rh = task.rh;
    let seq = task.seq;
    let kvh = task.kvh;
    let start = task.start;
    let end = task.end;

    for (var d = tid; d < p.D; d += WG) {
        q_sh[d] = src_q[rh * p.D + d] * p.scale;
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);   // dims tid, tid + 64, tid + 128, tid + 192
    for (var c0 = start; c0 < end; c0 += WG) {
        let key = c0 + tid;
        var score = NEG;
        if (key < end) {
            score = key_score(seq, kvh, key);
        }
        let m_new = max(m, reduce(tid, score, true));
        var pj = 0.0;
        if (key < end) {
            pj = exp(score - m_new);
        }
        prob[tid] = pj;
        let alpha = exp(m - m_new);
        l = l * alpha + reduce(tid, pj, false);
        acc *= alpha;
        m = m_new;
        let count = min(WG, end - c0);
        for (var i = 0u; i < 4u; i++) {
            let d = tid + i * WG;
            if (d < p.D) {
                acc[i] += weighted_values(seq, kvh, c0, count, d);
            }
        }
        workgroupBarrier();
    }

    if (p.splits == 1u) {
        let inv = select(0.0, 1.0 / l, l > 0.0);
        for (var i = 0u; i < 4u; i++) {
            let d = tid + i * WG;
            if (d < p.D) {
                out[rh * p.D + d] = acc[i] * inv;
            }
        }
    } else {
        let dst = g * (p.D + 2u);
        if (tid == 0u) {
            part[dst] = m;
            part[dst + 1u] = l;
        }
        for (var i = 0u; i < 4u; i++) {
            let d = tid + i * WG;
            if (d < p.D) {
                part[dst + 2u + d] = acc[i];
            }
        }
    }
}

#endif

// attend_rows (CPU adapters, prefill): one query row per invocation, 32 rows of one head per
// workgroup, no workgroup memory and no barrier. lavapipe runs a subgroup of 8 as SIMD lanes and
// splits every storage load into one scalar load per lane, so the 8 lanes of a subgroup take
// each key together: lane l loads dims l * D/8 .. (l + 1) * D/8 and the subgroup broadcasts
// them, D/8 loads per lane and key instead of D. That needs one sequence across the subgroup
// (prefill rows); otherwise every lane loads whole keys itself. Each lane keeps its own online
// softmax; lanes whose row has fewer keys mask the rest of the subgroup's span. HEAD_DIM is the
// head size: with it fixed, the loops over dimensions unroll and the query and accumulator stay
// in registers (docs/benchmarks/NOTES.md).
#if ATTEND_ROWS
const ROWS_WG: u32 = 32u;

@compute @workgroup_size(32)
fn attend_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32,
               @builtin(subgroup_invocation_id) lane: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.H * ((p.R + ROWS_WG - 1u) / ROWS_WG)) {
        return;
    }
    let h = g % p.H;
    let row = (g / p.H) * ROWS_WG + tid;
    // Rows past R repeat the last one (every lane stays active) and store nothing.
    let r = min(row, p.R - 1u);
    let seq = idx[2u * r];
    let n_keys = idx[2u * r + 1u];
    let kvh = h / (p.H / p.KVH);
    let rh = r * p.H + h;
    let per = HEAD_DIM / 8u;
    let l8 = lane & 7u;

    var q: array<f32, HEAD_DIM>;
    for (var d = 0u; d < HEAD_DIM; d++) {
        q[d] = src_q[rh * p.D + d] * p.scale;
    }
    let span = subgroupMax(n_keys);
    let one_seq = subgroupAll(seq == subgroupBroadcast(seq, 0u));

    var m = NEG;
    var l = 0.0;
    var acc: array<f32, HEAD_DIM>;
    for (var c = 0u; c < span; c++) {
        // Keys past this row's count (up to the subgroup's span) are read but weigh nothing.
        let live = c < n_keys;
        let key = min(c, n_keys - 1u);
        var s = 0.0;
        if (one_seq) {
            for (var e = 0u; e < per; e++) {
                let kd = load_key(seq, kvh, c, l8 * per + e);
                s += q[e] * subgroupBroadcast(kd, 0u) + q[per + e] * subgroupBroadcast(kd, 1u)
                   + q[2u * per + e] * subgroupBroadcast(kd, 2u)
                   + q[3u * per + e] * subgroupBroadcast(kd, 3u)
                   + q[4u * per + e] * subgroupBroadcast(kd, 4u)
                   + q[5u * per + e] * subgroupBroadcast(kd, 5u)
                   + q[6u * per + e] * subgroupBroadcast(kd, 6u)
                   + q[7u * per + e] * subgroupBroadcast(kd, 7u);
            }
        } else {
            for (var d = 0u; d < HEAD_DIM; d++) {
                s += q[d] * load_key(seq, kvh, key, d);
            }
        }
        let score = select(NEG, s, live);
        let m_new = max(m, score);
        let alpha = exp(m - m_new);
        let pj = select(0.0, exp(score - m_new), live);
        l = l * alpha + pj;
        m = m_new;
        // The running maximum rarely moves once a few keys are in: rescale only when it did.
        if (subgroupAny(alpha != 1.0)) {
            for (var d = 0u; d < HEAD_DIM; d++) {
                acc[d] *= alpha;
            }
        }
        if (one_seq) {
            for (var e = 0u; e < per; e++) {
                let vd = load_value(seq, kvh, c, l8 * per + e);
                acc[e] += pj * subgroupBroadcast(vd, 0u);
                acc[per + e] += pj * subgroupBroadcast(vd, 1u);
                acc[2u * per + e] += pj * subgroupBroadcast(vd, 2u);
                acc[3u * per + e] += pj * subgroupBroadcast(vd, 3u);
                acc[4u * per + e] += pj * subgroupBroadcast(vd, 4u);
                acc[5u * per + e] += pj * subgroupBroadcast(vd, 5u);
                acc[6u * per + e] += pj * subgroupBroadcast(vd, 6u);
                acc[7u * per + e] += pj * subgroupBroadcast(vd, 7u);
            }
        } else {
            for (var d = 0u; d < HEAD_DIM; d++) {
                acc[d] += pj * load_value(seq, kvh, key, d);
            }
        }
    }
    if (row < p.R) {
        let inv = select(0.0, 1.0 / l, l > 0.0);
        for (var d = 0u; d < HEAD_DIM; d++) {
            out[rh * p.D + d] = acc[d] * inv;
        }
    }
}
#endif

// attend_lanes (CPU adapters, decode): a workgroup of one subgroup of 8 per (row, head, split),
// lane l taking keys start + l, start + l + 8, ... with its own online softmax, merged round the
// subgroup at the end; no workgroup memory and no barrier. lavapipe splits every storage load
// into a loop over the SIMD lanes, one component at a time, so each lane reads its key and value
// rows in the widest items there are: vec4<u64> with KV_WIDE (SHADER_INT64), else vec4<u32>.
// HEAD_DIM is the head size, a multiple of the floats one item holds.
#if ATTEND_LANES
#if KV_WIDE
alias KvItem = vec4<u64>;
const WORDS: u32 = 2u;   // vec4<u32> per item
#else
alias KvItem = vec4<u32>;
const WORDS: u32 = 1u;
#endif
#if KV_F16
const QUADS_PER_WORDS: u32 = 2u;   // quads of values per vec4<u32>
#else
const QUADS_PER_WORDS: u32 = 1u;
#endif
const QUADS: u32 = HEAD_DIM / 4u;
const ITEMS: u32 = QUADS / (WORDS * QUADS_PER_WORDS);
const LANES: u32 = 8u;

fn item_words(v: KvItem) -> array<vec4<u32>, WORDS> {
#if KV_WIDE
    let lo = vec4<u32>(v & vec4<u64>(0xfffffffflu));
    let hi = vec4<u32>(v >> vec4<u32>(32u));
    return array<vec4<u32>, 2>(vec4<u32>(lo.x, hi.x, lo.y, hi.y), vec4<u32>(lo.z, hi.z, lo.w, hi.w));
#else
    return array<vec4<u32>, 1>(v);
#endif
}

fn words_quads(w: vec4<u32>) -> array<vec4<f32>, QUADS_PER_WORDS> {
#if KV_F16
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                               vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
#else
    return array<vec4<f32>, 1>(bitcast<vec4<f32>>(w));
#endif
}

// Cache row `row` (HEAD_DIM values) of the keys, or of the values, as quads.
fn kv_row(row: u32, key: bool) -> array<vec4<f32>, QUADS> {
    var out: array<vec4<f32>, QUADS>;
    for (var i = 0u; i < ITEMS; i++) {
        var item: KvItem;
        if (key) {
            item = k_lanes[row * ITEMS + i];
        } else {
            item = v_lanes[row * ITEMS + i];
        }
        let words = item_words(item);
        for (var a = 0u; a < WORDS; a++) {
            let quads = words_quads(words[a]);
            for (var b = 0u; b < QUADS_PER_WORDS; b++) {
                out[(i * WORDS + a) * QUADS_PER_WORDS + b] = quads[b];
            }
        }
    }
    return out;
}

@compute @workgroup_size(8)
fn attend_lanes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(subgroup_invocation_id) lane: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.R * p.H * p.splits) {
        return;
    }
    let task = split_task(g);
    let rh = task.rh;
    let start = task.start;
    let end = task.end;
    let first_row = (task.seq * p.KVH + task.kvh) * p.C;

    var q: array<vec4<f32>, QUADS>;
    for (var i = 0u; i < QUADS; i++) {
        let d = rh * HEAD_DIM + 4u * i;
        q[i] = vec4<f32>(src_q[d], src_q[d + 1u], src_q[d + 2u], src_q[d + 3u]) * p.scale;
    }
    var m = NEG;
    var l = 0.0;
    var acc: array<vec4<f32>, QUADS>;
    // Every lane runs every step (uniform control flow for the subgroup operations); a lane
    // past the range rereads the last key and gives it no weight.
    for (var c0 = start; c0 < end; c0 += LANES) {
        let c = c0 + lane;
        let live = c < end;
        let row = first_row + min(c, end - 1u);
        let k = kv_row(row, true);
        var dot4 = vec4<f32>(0.0);
        for (var i = 0u; i < QUADS; i++) {
            dot4 += q[i] * k[i];
        }
        let score = select(NEG, (dot4.x + dot4.y) + (dot4.z + dot4.w), live);
        let m_new = max(m, score);
        let alpha = exp(m - m_new);
        let pj = select(0.0, exp(score - m_new), live);
        l = l * alpha + pj;
        m = m_new;
        // The running maximum rarely moves once a few keys are in: rescale only when it did.
        if (subgroupAny(alpha != 1.0)) {
            for (var i = 0u; i < QUADS; i++) {
                acc[i] *= alpha;
            }
        }
        let v = kv_row(row, false);
        for (var i = 0u; i < QUADS; i++) {
            acc[i] += pj * v[i];
        }
    }

    // Merge the lanes' softmaxes: rescale each to the largest maximum and sum.
    let m_all = subgroupMax(m);
    let f = exp(m - m_all);
    let l_all = subgroupAdd(l * f);
    for (var i = 0u; i < QUADS; i++) {
        acc[i] = subgroupAdd(acc[i] * f);
    }
    if (lane != 0u) {
        return;
    }
    if (p.splits == 1u) {
        let inv = select(0.0, 1.0 / l_all, l_all > 0.0);
        for (var i = 0u; i < QUADS; i++) {
            let o = acc[i] * inv;
            let d = rh * HEAD_DIM + 4u * i;
            out[d] = o.x;
            out[d + 1u] = o.y;
            out[d + 2u] = o.z;
            out[d + 3u] = o.w;
        }
    } else {
        let dst = g * (HEAD_DIM + 2u);
        part[dst] = m_all;
        part[dst + 1u] = l_all;
        for (var i = 0u; i < QUADS; i++) {
            let d = dst + 2u + 4u * i;
            part[d] = acc[i].x;
            part[d + 1u] = acc[i].y;
            part[d + 2u] = acc[i].z;
            part[d + 3u] = acc[i].w;
        }
    }
}
#endif

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let rh = wid.x + wid.y * nwg.x;
    if (rh >= p.R * p.H) {
        return;
    }
    let stride = p.D + 2u;
    let first = rh * p.splits * stride;
    var m = NEG;
    for (var s = 0u; s < p.splits; s++) {
        m = max(m, part[first + s * stride]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        l += part[first + s * stride + 1u] * exp(part[first + s * stride] - m);
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var d = tid; d < p.D; d += WG) {
        var o = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            o += part[first + s * stride + 2u + d] * exp(part[first + s * stride] - m);
        }
        out[rh * p.D + d] = o * inv;
    }
}
