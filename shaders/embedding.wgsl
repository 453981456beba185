// Embedding gather: out[t, :] = W[ids[t], :], dequantizing any weight format (weights.wgsl).
// Ids past the table's rows produce zeros; callers validate ids before they get here.
// A table split into row parts (over the binding limit) is one launch per part: each writes the
// tokens whose ids fall in its rows, and the first part also writes the zeros.

struct Params {
    T: u32,     // tokens
    N: u32,     // rows of this table part
    K: u32,     // embedding width
    G: u32,     // int8 group size
    row0: u32,  // first table row of this part
    rows: u32,  // rows of the whole table (vocabulary)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.T) {
        return;
    }
    let id = ids[t];
    let mine = id >= p.row0 && id - p.row0 < p.N;
    if (!mine && !(id >= p.rows && p.row0 == 0u)) {
        return;
    }
    for (var k = tid * 4u; k < p.K; k += 256u) {
        var v = vec4<f32>(0.0);
        if (mine) {
            v = w_load4(id - p.row0, k, p.K, p.G);
        }
        for (var i = 0u; i < 4u; i++) {
            if (k + i < p.K) {
                out[t * p.K + k + i] = v[i];
            }
        }
    }
}
