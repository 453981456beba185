// What every mat-vec kernel shares (matvec.wgsl for CPU adapters and the lanes layout,
// matvec_gpu.wgsl for GPUs): the parameters, the activation loads (optionally the gated MLP's
// silu(gate) * up, GPT-2's gelu(x), or the RMSNorm or LayerNorm of x, made as they are read),
// whole-block dot products, and the store.

struct Params {
    N: u32,       // rows of this weight part
    K: u32,
    G: u32,       // int8 group size
    groups: u32,  // ceil(N / (ROWS * ROW_TILE))
    ldy: u32,     // columns of the whole product (the matrix's rows; y's row stride unsplit)
    n0: u32,      // first column of y this part writes
    m0: u32,      // first row of x and y this launch takes (BATCH rows from it)
    cut1: u32,    // first column of output 1 (outputs.wgsl)
    cut2: u32,    // first column of output 2
    eps: f32,     // X_RMS, X_LN: the norm's epsilon
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if X_VEC4 && X_U64
alias XItem = vec2<u64>;
#elif X_VEC4
alias XItem = vec4<f32>;
#else
alias XItem = f32;
#endif
@group(0) @binding(1) var<storage, read> x: array<XItem>;
#if X_GLU
@group(0) @binding(3) var<storage, read> x_up: array<XItem>;
#endif
#if HAS_BIAS
@group(1) @binding(3) var<storage, read> bias: array<f32>;
#endif
#if X_RMS || X_LN
// The norm before the projection folded into the read: (x_b - norm_mean[b]) * norm_inv[b] *
// gamma (+ beta with X_LN), the mean 0 for RMSNorm (`norm_prologue` fills both).
#if X_VEC4
@group(0) @binding(6) var<storage, read> x_gamma: array<vec4<f32>>;
#else
@group(0) @binding(6) var<storage, read> x_gamma: array<f32>;
#endif
#if X_LN && X_VEC4
@group(0) @binding(7) var<storage, read> x_beta: array<vec4<f32>>;
#elif X_LN
@group(0) @binding(7) var<storage, read> x_beta: array<f32>;
#endif
var<workgroup> norm_mean: array<f32, BATCH>;
var<workgroup> norm_inv: array<f32, BATCH>;
var<workgroup> norm_partial: array<f32, RMS_WG>;
#endif

#if SHARE_X
var<private> sg_lane: u32;
#endif

// X[b, k .. k + 4] (zeros past K). With X_GLU, X is silu(gate) * up of two bound inputs (x the
// gate, x_up the up projection), the activation of a gated MLP made as it is read; with X_GELU,
// gelu(x) as the elementwise kernel computes it.
fn x_load4(b: u32, k: u32) -> vec4<f32> {
#if X_GLU
    let g = x_quad(b, k);
    return g / (vec4<f32>(1.0) + exp(-g)) * up_quad(b, k);
#elif X_GELU
    let v = x_quad(b, k);
    let u = clamp(0.7978845608 * (v + 0.044715 * v * v * v), vec4<f32>(-15.0), vec4<f32>(15.0));
    return 0.5 * v * (vec4<f32>(1.0) + tanh(u));
#elif X_RMS || X_LN
    let normed = (x_quad(b, k) - norm_mean[b]) * norm_inv[b];
#if X_VEC4 && X_LN
    return normed * x_gamma[k >> 2u] + x_beta[k >> 2u];
#elif X_VEC4
    return normed * x_gamma[k >> 2u];
#else
    // Past K, gamma (and beta) stay 0, so the padding reads as 0.
    var gamma = vec4<f32>(0.0);
    var beta = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            gamma[i] = x_gamma[k + i];
#if X_LN
            beta[i] = x_beta[k + i];
#endif
        }
    }
    return normed * gamma + beta;
#endif
#else
    return x_quad(b, k);
#endif
}

#if X_RMS || X_LN
// Sum of `v` over the RMS_WG invocations of the workgroup, returned to all of them.
fn norm_sum(tid: u32, v: f32) -> f32 {
    norm_partial[tid] = v;
    workgroupBarrier();
    for (var h = RMS_WG / 2u; h > 0u; h >>= 1u) {
        if (tid < h) {
            norm_partial[tid] += norm_partial[tid + h];
        }
        workgroupBarrier();
    }
    let total = norm_partial[0];
    workgroupBarrier();
    return total;
}

// Each activation row's mean (X_LN; 0 for RMSNorm) and 1 / sqrt(mean((x_b - mean)^2) + eps),
// into norm_mean and norm_inv, in two passes as the norm kernels take them; tid is the local
// index of every invocation, all of which call this before reading x. The padding past K
// (non-vec4 rows) reads as 0 and is left out of the sums.
fn norm_prologue(tid: u32) {
    for (var b = 0u; b < BATCH; b++) {
        var mean = 0.0;
#if X_LN
        var s = 0.0;
        for (var k = 4u * tid; k < p.K; k += 4u * RMS_WG) {
            s += dot(x_quad(b, k), vec4<f32>(1.0));
        }
        mean = norm_sum(tid, s) / f32(p.K);
#endif
        var sq = 0.0;
        for (var k = 4u * tid; k < p.K; k += 4u * RMS_WG) {
            let valid = vec4<f32>(vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(p.K));
            let d = (x_quad(b, k) - mean) * valid;
            sq += dot(d, d);
        }
        let inv = inverseSqrt(norm_sum(tid, sq) / f32(p.K) + p.eps);
        if (tid == 0u) {
            norm_mean[b] = mean;
            norm_inv[b] = inv;
        }
    }
    workgroupBarrier();
}
#endif

fn x_quad(b: u32, k: u32) -> vec4<f32> {
#if X_VEC4 && X_U64
    return bitcast<vec4<f32>>(split64(x[((p.m0 + b) * p.K + k) >> 2u]));
#elif X_VEC4
    return x[((p.m0 + b) * p.K + k) >> 2u];
#else
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            v[i] = x[(p.m0 + b) * p.K + k + i];
        }
    }
    return v;
#endif
}

#if X_GLU
// x_quad over x_up: WGSL cannot hand a storage buffer to a function.
fn up_quad(b: u32, k: u32) -> vec4<f32> {
#if X_VEC4 && X_U64
    return bitcast<vec4<f32>>(split64(x_up[((p.m0 + b) * p.K + k) >> 2u]));
#elif X_VEC4
    return x_up[((p.m0 + b) * p.K + k) >> 2u];
#else
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            v[i] = x_up[(p.m0 + b) * p.K + k + i];
        }
    }
    return v;
#endif
}
#endif

#if BLOCKWISE
// The 32 activations of row b from k as 8 quads. With SHARE_X (CPU adapters with subgroups of
// at least 8) each lane loads one quad and the subgroup passes them round: a broadcast is a
// register move, where every lane loading all 32 is 32 loads per lane.
fn block_x(b: u32, k: u32) -> array<vec4<f32>, 8> {
#if SHARE_X
    let mine = x_load4(b, k + 4u * (sg_lane & 7u));
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u),
        subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
#else
    return array<vec4<f32>, 8>(
        x_load4(b, k), x_load4(b, k + 4u), x_load4(b, k + 8u), x_load4(b, k + 12u),
        x_load4(b, k + 16u), x_load4(b, k + 20u), x_load4(b, k + 24u), x_load4(b, k + 28u));
#endif
}

// sum(x) over one block's activations.
fn block_sum(xs: array<vec4<f32>, 8>) -> f32 {
    return dot(xs[0] + xs[1] + xs[2] + xs[3] + xs[4] + xs[5] + xs[6] + xs[7], vec4<f32>(1.0));
}

// sum(v x) over one block: quads i and 4 + i of the activations meet word i's nibbles (Q4) or
// words i and 4 + i (Q8_0, int8).
fn block_qx(wb: Block, xs: array<vec4<f32>, 8>) -> f32 {
    let q0 = w_block_quads(wb, 0u);
    let q1 = w_block_quads(wb, 1u);
    let q2 = w_block_quads(wb, 2u);
    let q3 = w_block_quads(wb, 3u);
    return dot(q0.lo, xs[0]) + dot(q1.lo, xs[1]) + dot(q2.lo, xs[2]) + dot(q3.lo, xs[3])
         + dot(q0.hi, xs[4]) + dot(q1.hi, xs[5]) + dot(q2.hi, xs[6]) + dot(q3.hi, xs[7]);
}
#endif

// y = v (+ bias), or with ACCUMULATE y += v (+ bias): a residual add without a launch of its own.
fn store(b: u32, n: u32, v: f32) {
    var out = v;
#if HAS_BIAS
    out += bias[n];
#endif
    y_put(p.m0 + b, p.n0 + n, out, Y_ADD);
}

