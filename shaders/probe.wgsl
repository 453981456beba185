// The calibration probe of an LLM.int8()-style decomposition (Dettmers et al. 2022): the largest
// |x| each input column of a matrix sees, over every row of every launch while calibrating.
//   column_absmax: probe[c] = max(probe[c], max_m |X[m, c]|)

struct Params {
    M: u32,  // rows of X
    K: u32,  // columns of X
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> probe: array<f32>;

// One thread per column: rows are few (a calibration chunk), columns a model's width.
@compute @workgroup_size(256)
fn column_absmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (c >= p.K) {
        return;
    }
    var v = probe[c];
    for (var m = 0u; m < p.M; m++) {
        v = max(v, abs(x[m * p.K + c]));
    }
    probe[c] = v;
}
