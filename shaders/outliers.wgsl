// LLM.int8()-style outlier decomposition (Dettmers et al. 2022): a few input columns of a matrix
// are kept in f32 beside the main (int8) part, which holds zeros there, so the inputs that carry
// large activations meet exact weights.
//   outlier_add: Y[m, r] += sum_j Wo[r, j] * X[m, cols[j]]; runs after the main matrix kernel.

struct Params {
    M: u32,  // rows of X
    N: u32,  // rows of W (columns of Y)
    K: u32,  // columns of X
    C: u32,  // outlier columns
    ldy: u32,   // columns of the whole product (N)
    cut1: u32,  // first column of output 1 (outputs.wgsl)
    cut2: u32,  // first column of output 2
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// y (outputs.wgsl): Y.
@group(1) @binding(0) var<storage, read> cols: array<u32>;
@group(1) @binding(1) var<storage, read> wo: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// One thread per element of Y: the column count is small (a few per thousand), so a plain
// dot product over it is cheap next to the main kernel's pass over W.
@compute @workgroup_size(256)
fn outlier_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.M * p.N) {
        return;
    }
    let m = i / p.N;
    let r = i % p.N;
    var s = 0.0;
    for (var j = 0u; j < p.C; j++) {
        s += wo[r * p.C + j] * x[m * p.K + cols[j]];
    }
    y_put(m, r, s, true);
}
