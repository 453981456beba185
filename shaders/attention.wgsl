// Attention over a KV cache, with grouped-query heads (H query heads share KVH key/value heads);
// the cache and its layout are in attention_common.wgsl.
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
//   attend with STORE_NEW (decode): the store folded into the attention, one launch for two.
//             Each query row is the only new row of its sequence, at position meta[2r + 1] - 1,
//             and its new K/V rows are bound beside the queries. Every workgroup reads that key
//             and value from them (turned by ROPE, as does the query, and rounded as the cache
//             stores them) and split 0 of the first head of each KV group writes them to the
//             cache, which no workgroup of the launch reads at that position.

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
    if (tid == 0u) {
        aux[aux_vscale(seq, kvh, position)] = vs;
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
            kmax = max(kmax, abs(block_key(seq, kvh, position, j, c)));
        }
        let ks = select(vec4<f32>(1.0), kmax / 127.0, kmax > vec4<f32>(0.0));
        for (var j = b0; j < hi; j++) {
            let e = cache_row(seq, kvh, j) + c;
            k_cache[e >> 2u] = pack_i8(block_key(seq, kvh, position, j, c) / ks);
        }
        let sc = aux_kscale(seq, kvh, b0) + c;
        aux[sc] = ks.x;
        aux[sc + 1u] = ks.y;
        aux[sc + 2u] = ks.z;
        aux[sc + 3u] = ks.w;
        if (tid == 0u) {
            aux[aux_flag(seq, kvh, b0)] = 1.0;
        }
    } else {
        // Still open: the new keys wait in the residual.
        for (var j = position; j < hi; j++) {
            let r = aux_resid(seq, kvh, j) + c;
            let k = new_key4((new_row(seq, j) * p.KVH + kvh) * p.D + c, j);
            aux[r] = k.x;
            aux[r + 1u] = k.y;
            aux[r + 2u] = k.z;
            aux[r + 3u] = k.w;
        }
        if (tid == 0u) {
            aux[aux_flag(seq, kvh, b0)] = 0.0;
        }
    }
#else
    for (var d = tid; d < p.D; d += WG) {
        k_cache[dst + d] = new_key(src + d, position);
        v_cache[dst + d] = src_v[src + d];
    }
#endif
}

#if STORE_NEW
// The position of the workgroup's new key (none without STORE_NEW).
var<private> newest: u32 = 0xffffffffu;

// The new key and value as the cache holds them (f16 pairs packed in words with KV_F16), read
// back as load_key and load_value read the cache.
#if KV_F16
var<workgroup> k_new_sh: array<u32, 128>;
var<workgroup> v_new_sh: array<u32, 128>;

fn keep_new(tid: u32, src: u32, position: u32) {
    for (var d = 2u * tid; d < p.D; d += 2u * WG) {
        let k2 = vec2<f32>(new_key(src + d, position), new_key(src + d + 1u, position));
        k_new_sh[d >> 1u] = pack2x16float(k2);
        v_new_sh[d >> 1u] = pack2x16float(vec2<f32>(src_v[src + d], src_v[src + d + 1u]));
    }
}

fn new_key_at(d: u32) -> f32 {
    return unpack2x16float(k_new_sh[d >> 1u])[d & 1u];
}

fn new_value_at(d: u32) -> f32 {
    return unpack2x16float(v_new_sh[d >> 1u])[d & 1u];
}
#else
var<workgroup> k_new_sh: array<f32, MAX_D>;
var<workgroup> v_new_sh: array<f32, MAX_D>;

fn keep_new(tid: u32, src: u32, position: u32) {
    for (var d = tid; d < p.D; d += WG) {
        k_new_sh[d] = new_key(src + d, position);
        v_new_sh[d] = src_v[src + d];
    }
}

fn new_key_at(d: u32) -> f32 {
    return k_new_sh[d];
}

fn new_value_at(d: u32) -> f32 {
    return v_new_sh[d];
}
#endif

// Element e of the queries ([R, H, D]) turned by ROPE to `position`, as kv_store turns them.
fn new_query(e: u32, position: u32) -> f32 {
#if ROPE
    let d = e % p.D;
    if (d < p.rope_rot) {
        let i = rotary_pair(d, p.rope_rot, p.rope_mode);
        let dims = rotary_dims(i, p.rope_rot, p.rope_mode) + vec2<u32>(e - d);
        let cs = rotary_cs(position, i, p.rope_rot, p.rope_base);
        let v = rotary_turn(vec2<f32>(src_q[dims.x], src_q[dims.y]), cs);
        return select(v.y, v.x, e == dims.x);
    }
#endif
    return src_q[e];
}

// Writes new row `src` of K/V ([R, KVH, D]) at `position`, as kv_store does.
fn store_new(tid: u32, src: u32, seq: u32, kvh: u32, position: u32) {
    let dst = cache_row(seq, kvh, position);
#if KV_F16
    for (var d = 2u * tid; d < p.D; d += 2u * WG) {
        let k2 = vec2<f32>(new_key(src + d, position), new_key(src + d + 1u, position));
        k_cache[(dst + d) >> 1u] = pack2x16float(k2);
        v_cache[(dst + d) >> 1u] = pack2x16float(vec2<f32>(src_v[src + d], src_v[src + d + 1u]));
    }
#else
    for (var d = tid; d < p.D; d += WG) {
        k_cache[dst + d] = new_key(src + d, position);
        v_cache[dst + d] = src_v[src + d];
    }
#endif
}
#endif

// Dim d of the key at `position`: the new key's from workgroup memory with STORE_NEW.
fn key_at(seq: u32, kvh: u32, position: u32, d: u32) -> f32 {
#if STORE_NEW
    if (position == newest) {
        return new_key_at(d);
    }
#endif
    return load_key(seq, kvh, position, d);
}

fn value_at(seq: u32, kvh: u32, position: u32, d: u32) -> f32 {
#if STORE_NEW
    if (position == newest) {
        return new_value_at(d);
    }
#endif
    return load_value(seq, kvh, position, d);
}

// q_sh . key: four dimensions a step with their loads independent of each other, so a GPU has
// four in flight per thread instead of waiting on each.
fn key_score(seq: u32, kvh: u32, key: u32) -> f32 {
    var s = vec4<f32>(0.0);
    var d = 0u;
    for (; d + 4u <= p.D; d += 4u) {
        let k = vec4<f32>(key_at(seq, kvh, key, d), key_at(seq, kvh, key, d + 1u),
                          key_at(seq, kvh, key, d + 2u), key_at(seq, kvh, key, d + 3u));
        s += vec4<f32>(q_sh[d], q_sh[d + 1u], q_sh[d + 2u], q_sh[d + 3u]) * k;
    }
    for (; d < p.D; d++) {
        s.x += q_sh[d] * key_at(seq, kvh, key, d);
    }
    return s.x + s.y + s.z + s.w;
}

// sum over keys c0 .. c0 + count of prob[j] * V[key][d], four keys a step (as `key_score`).
fn weighted_values(seq: u32, kvh: u32, c0: u32, count: u32, d: u32) -> f32 {
    var a = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 4u <= count; j += 4u) {
        let v = vec4<f32>(value_at(seq, kvh, c0 + j, d), value_at(seq, kvh, c0 + j + 1u, d),
                          value_at(seq, kvh, c0 + j + 2u, d),
                          value_at(seq, kvh, c0 + j + 3u, d));
        a += vec4<f32>(prob[j], prob[j + 1u], prob[j + 2u], prob[j + 3u]) * v;
    }
    for (; j < count; j++) {
        a.x += prob[j] * value_at(seq, kvh, c0 + j, d);
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

#if STORE_NEW
    let r = rh / p.H;
    newest = idx[2u * r + 1u] - 1u;
    let src = (r * p.KVH + kvh) * p.D;
    for (var d = tid; d < p.D; d += WG) {
        q_sh[d] = new_query(rh * p.D + d, newest) * p.scale;
    }
    keep_new(tid, src, newest);
    if (g % p.splits == 0u && (rh % p.H) % (p.H / p.KVH) == 0u) {
        store_new(tid, src, seq, kvh, newest);
    }
#else
    for (var d = tid; d < p.D; d += WG) {
        q_sh[d] = src_q[rh * p.D + d] * p.scale;
    }
#endif
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
