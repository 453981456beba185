// The second launch of a matmul split over K (matmul.wgsl, SPLIT_K): Y[m, col0 + n] (+)= the sum
// of the splits' partial sums part[s, m, n], added in split order (+ bias[n]), stored through
// outputs.wgsl as the unsplit matmul stores. A thread per element of the [M, N] product.

struct Params {
    M: u32,
    N: u32,
    splits: u32,
    ldy: u32,       // outputs.wgsl: columns of the whole product
    col0: u32,      // first column of Y this weight part writes
    cut1: u32,      // outputs.wgsl: first column of output 1
    cut2: u32,      // first column of output 2
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
#if HAS_BIAS
@group(1) @binding(3) var<storage, read> bias: array<f32>;
#endif

@compute @workgroup_size(256)
fn matmul_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + tid;
    let size = p.M * p.N;
    if (e >= size) {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        v += part[s * size + e];
    }
    let n = e % p.N;
#if HAS_BIAS
    v += bias[n];
#endif
    y_put(e / p.N, p.col0 + n, v, Y_ADD);
}
