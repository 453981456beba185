// Argmax over each row of logits, one 256-thread workgroup per row, so a greedy step reads back
// 4 bytes per sequence. Ties go to the lowest index; NaN never wins.

struct Params {
    rows: u32,
    V: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = tid; i < p.V; i += 256u) {
        let v = x[row * p.V + i];
        // Strided scan visits indices in increasing order, so '>' keeps the first maximum.
        if (v > bv || (bi == 0xffffffffu && v == bv)) {
            bv = v;
            bi = i;
        }
    }
    best_v[tid] = bv;
    best_i[tid] = bi;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (tid < s) {
            let ov = best_v[tid + s];
            let oi = best_i[tid + s];
            if (ov > best_v[tid] || (ov == best_v[tid] && oi < best_i[tid])) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        out[row] = select(best_i[0], 0u, best_i[0] == 0xffffffffu);
    }
}
