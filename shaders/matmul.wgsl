// Matrix product for prefill: Y[M, N] = X[M, K] * W[N, K]^T (+ bias[N]), f32 accumulation.
//
// Tiled: a 256-thread workgroup computes a 64 x 64 tile of Y, staging 16 x 64 slices of X and W
// in workgroup memory; each thread holds a 4 x 4 register block. The next slice is loaded into
// registers while the current one is multiplied, so a workgroup waits on memory once per slice. X is read as vec4 when X_VEC4
// (K % 4 == 0); W is read through `w_load4` (weights.wgsl), so every weight format shares this
// kernel and packed formats are dequantized while the tile is staged. A matrix split into row
// parts (over the binding limit) is one launch per part, each writing its columns of Y (or a
// stacked matrix's columns to several outputs, outputs.wgsl). With ACCUMULATE the product is
// added to Y (Y += ...), a residual add fused into the store.
//
// SPLIT_K: too few tiles to fill a GPU. Workgroup g takes tile g % tiles over the K range
// k_split * (g / tiles) .. + k_split and writes its partial sums to `part` ([splits, M, N]);
// matmul_reduce.wgsl adds them up, in split order, and stores as above.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    G: u32,         // int8 group size (values per scale)
    tiles_n: u32,   // ceil(N / 64)
    tiles: u32,     // ceil(M / 64) * tiles_n
    ldy: u32,       // columns of the whole product (the matrix's rows; Y's row stride unsplit)
    col0: u32,      // first column of Y this weight part writes
    cut1: u32,      // first column of output 1 (outputs.wgsl)
    cut2: u32,      // first column of output 2
    k_split: u32,   // K values per split (a multiple of TK; K unsplit)
    splits: u32,    // splits of K (1 unsplit)
}

@group(0) @binding(0) var<uniform> p: Params;
#if X_VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
#if SPLIT_K
@group(0) @binding(3) var<storage, read_write> part: array<f32>;
#elif HAS_BIAS
@group(1) @binding(3) var<storage, read> bias: array<f32>;
#endif

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// Stored k-major so the 4 x 4 block reads four neighbours along M or N. Scalar elements: a
// store to one component of a shared vec4 may become a read-modify-write of the whole vector,
// which races with the three threads writing its other components (lavapipe did).
var<workgroup> xs: array<f32, 1024>; // [TK][TM]
var<workgroup> ws: array<f32, 1024>; // [TK][TN]

fn x_load4(m: u32, k: u32) -> vec4<f32> {
    if (m >= p.M) {
        return vec4<f32>(0.0);
    }
#if X_VEC4
    if (k >= p.K) {
        return vec4<f32>(0.0);
    }
    return x[(m * p.K + k) >> 2u];
#else
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            v[i] = x[m * p.K + k + i];
        }
    }
    return v;
#endif
}

// Four weights of row n from column k (zeros past the matrix).
fn w_fetch(n: u32, k: u32) -> vec4<f32> {
    if (n < p.N && k < p.K) {
        return w_load4(n, k, p.K, p.G);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(256)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let tile = g % p.tiles;
    let split = g / p.tiles;
    if (split >= p.splits) {
        return;
    }
    let m0 = (tile / p.tiles_n) * TM;
    let n0 = (tile % p.tiles_n) * TN;
    let k_lo = split * p.k_split;
    let k_hi = min(p.K, k_lo + p.k_split);
    let tx = tid % 16u; // 4 columns (N) each
    let ty = tid / 16u; // 4 rows (M) each
    // Staging: thread tid loads row tid / 4 of the slice, k offset (tid % 4) * 4.
    let lr = tid / 4u;
    let lk = (tid % 4u) * 4u;

    var acc: array<vec4<f32>, 4>;
    var xv = x_load4(m0 + lr, k_lo + lk);
    var wv = w_fetch(n0 + lr, k_lo + lk);
    for (var k0 = k_lo; k0 < k_hi; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            xs[(lk + i) * TM + lr] = xv[i];
            ws[(lk + i) * TN + lr] = wv[i];
        }
        workgroupBarrier();
        // The next slice is in flight while this one is multiplied (past k_hi it is unused).
        xv = x_load4(m0 + lr, k0 + TK + lk);
        wv = w_fetch(n0 + lr, k0 + TK + lk);
        for (var kk = 0u; kk < TK; kk++) {
            let a = vec4<f32>(xs[kk * TM + ty * 4u], xs[kk * TM + ty * 4u + 1u],
                              xs[kk * TM + ty * 4u + 2u], xs[kk * TM + ty * 4u + 3u]);
            let b = vec4<f32>(ws[kk * TN + tx * 4u], ws[kk * TN + tx * 4u + 1u],
                              ws[kk * TN + tx * 4u + 2u], ws[kk * TN + tx * 4u + 3u]);
            acc[0] += a[0] * b;
            acc[1] += a[1] * b;
            acc[2] += a[2] * b;
            acc[3] += a[3] * b;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let m = m0 + ty * 4u + i;
        if (m >= p.M) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx * 4u + j;
            if (n < p.N) {
                var v = acc[i][j];
#if SPLIT_K
                part[(split * p.M + m) * p.N + n] = v;
#else
#if HAS_BIAS
                v += bias[n];
#endif
                y_put(m, p.col0 + n, v, Y_ADD);
#endif
            }
        }
    }
}
