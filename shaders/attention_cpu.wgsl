// Attention kernels for CPU adapters, over the cache of attention_common.wgsl; split key ranges
// are merged by `combine` (attention.wgsl).

// attend_rows (CPU adapters, prefill): one query row per invocation, 32 rows of one head per
// workgroup, no workgroup memory and no barrier. A CPU adapter runs a subgroup of 8 as SIMD lanes and
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
// subgroup at the end; no workgroup memory and no barrier. A CPU adapter splits every storage load
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
        let row = cache_row_index(task.seq, task.kvh, min(c, end - 1u));
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
