// Matrix-vector product for decode: Y[b, N] = X[b, K] * W[N, K]^T (+ bias[N]) for BATCH rows of X.
// A matrix split into row parts (over the binding limit) is one launch per part, each writing
// columns n0 .. n0 + N of Y.
//
// Decode is bound by reading W once, so each weight value is loaded once and used for all BATCH
// activation rows (a skinny matmul). A 256-thread workgroup owns 8 output rows, 32 lanes per row
// striding over K four values at a time; lanes are summed through workgroup memory.
// With BLOCKWISE (GGUF block formats) it owns 32 rows, 8 lanes per row, and each lane takes whole
// 32-value blocks: the block's scale is decoded once and folded in after the sums,
// d * sum(q x) + m * sum(x), instead of dequantizing every value.

struct Params {
    N: u32,       // rows of this weight part
    K: u32,
    G: u32,       // int8 group size
    groups: u32,  // ceil(N / ROWS)
    ldy: u32,     // row stride of y: the whole matrix's rows
    n0: u32,      // first column of y this part writes
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if X_VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#if HAS_BIAS
@group(1) @binding(3) var<storage, read> bias: array<f32>;
#endif

#if BLOCKWISE
const ROWS: u32 = 32u;
const LANES: u32 = 8u;
#else
const ROWS: u32 = 8u;
const LANES: u32 = 32u;
#endif

var<workgroup> partial: array<f32, ROWS * LANES * BATCH>;

fn x_load4(b: u32, k: u32) -> vec4<f32> {
#if X_VEC4
    return x[(b * p.K + k) >> 2u];
#else
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            v[i] = x[b * p.K + k + i];
        }
    }
    return v;
#endif
}

@compute @workgroup_size(256)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.groups) {
        return;
    }
    let row = tid / LANES;
    let lane = tid % LANES;
    let n = group * ROWS + row;
    var acc: array<f32, BATCH>;
    if (n < p.N) {
#if BLOCKWISE
        for (var blk = lane; blk < (p.K >> 5u); blk += LANES) {
            var qx: array<f32, BATCH>;
            var sx: array<f32, BATCH>;
            for (var i = 0u; i < 4u; i++) {
                let q = w_block_quads(n, blk, p.K, i);
                let k = blk * 32u + 4u * i;
                for (var b = 0u; b < BATCH; b++) {
                    let lo = x_load4(b, k);
                    let hi = x_load4(b, k + 16u);
                    qx[b] += dot(q.lo, lo) + dot(q.hi, hi);
                    sx[b] += dot(lo + hi, vec4<f32>(1.0));
                }
            }
            let dm = w_block_dm(n, blk, p.K);
            for (var b = 0u; b < BATCH; b++) {
                acc[b] += dm.x * qx[b] + dm.y * sx[b];
            }
        }
#else
        for (var k = lane * 4u; k < p.K; k += LANES * 4u) {
            let wv = w_load4(n, k, p.K, p.G);
            for (var b = 0u; b < BATCH; b++) {
                acc[b] += dot(x_load4(b, k), wv);
            }
        }
#endif
    }
    for (var b = 0u; b < BATCH; b++) {
        partial[(b * ROWS + row) * LANES + lane] = acc[b];
    }
    workgroupBarrier();
    if (tid < ROWS * BATCH) {
        let r = tid % ROWS;
        let b = tid / ROWS;
        let out_n = group * ROWS + r;
        if (out_n < p.N) {
            var s = 0.0;
            for (var i = 0u; i < LANES; i++) {
                s += partial[(b * ROWS + r) * LANES + i];
            }
#if HAS_BIAS
            s += bias[out_n];
#endif
            y[b * p.ldy + p.n0 + out_n] = s;
        }
    }
}
