// Attention over a KV cache, with grouped-query heads (H query heads share KVH key/value heads).
//
// Cache layout: k_cache / v_cache [n_seq][KVH][C][D] (C = capacity in positions).
//   kv_store: writes new K/V rows [T, KVH, D]; row t goes to sequence slots[2t], position slots[2t + 1].
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
    _pad3: u32,
    scale: f32,      // softmax scale, usually 1 / sqrt(D)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_q: array<f32>;   // attend: q; kv_store: new K
@group(0) @binding(2) var<storage, read> src_v: array<f32>;   // kv_store: new V
@group(0) @binding(3) var<storage, read> idx: array<u32>;     // kv_store: slots[2T]; attend: meta[2R]
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;   // [R, H, D]
@group(0) @binding(7) var<storage, read_write> part: array<f32>;  // [R, H, splits, D + 2]

const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const NEG: f32 = -1.0e30;

var<workgroup> q_sh: array<f32, MAX_D>;
var<workgroup> prob: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn cache_row(seq: u32, kvh: u32, position: u32) -> u32 {
    return ((seq * p.KVH + kvh) * p.C + position) * p.D;
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
    let dst = cache_row(idx[2u * t], kvh, idx[2u * t + 1u]);
    for (var d = tid; d < p.D; d += WG) {
        k_cache[dst + d] = src_q[g * p.D + d];
        v_cache[dst + d] = src_v[g * p.D + d];
    }
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
    let split = g % p.splits;
    let rh = g / p.splits;           // r * H + h
    let h = rh % p.H;
    let r = rh / p.H;
    let seq = idx[2u * r];
    let n_keys = idx[2u * r + 1u];
    let kvh = h / (p.H / p.KVH);
    let start = split * p.split_len;
    let end = min(start + p.split_len, n_keys);

    for (var d = tid; d < p.D; d += WG) {
        q_sh[d] = src_q[rh * p.D + d] * p.scale;
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);   // dims tid, tid + 64, tid + 128, tid + 192
    let base = cache_row(seq, kvh, 0u);
    for (var c0 = start; c0 < end; c0 += WG) {
        let key = c0 + tid;
        var score = NEG;
        if (key < end) {
            score = 0.0;
            let row = base + key * p.D;
            for (var d = 0u; d < p.D; d++) {
                score += q_sh[d] * k_cache[row + d];
            }
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
        for (var j = 0u; j < count; j++) {
            let row = base + (c0 + j) * p.D;
            let pr = prob[j];
            for (var i = 0u; i < 4u; i++) {
                let d = tid + i * WG;
                if (d < p.D) {
                    acc[i] += pr * v_cache[row + d];
                }
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
