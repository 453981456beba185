// Argmax over each row of logits, one workgroup of WG threads per row, so a greedy step reads
// back 4 bytes per sequence. Ties go to the lowest index; NaN never wins. With VEC4 (rows a
// multiple of 4 long) each thread loads two vec4 per iteration before comparing, so a single
// workgroup on a GPU keeps enough reads in flight; the scalar loop is for CPU adapters.

struct Params {
    rows: u32,
    V: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const NONE: u32 = 0xffffffffu;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<private> bv: f32 = -3.4e38;
var<private> bi: u32 = NONE;

// Values reach each thread in increasing index order, so '>' keeps the first maximum.
fn take(v: f32, i: u32) {
    if (v > bv || (bi == NONE && v == bv)) {
        bv = v;
        bi = i;
    }
}

fn take4(q: vec4<f32>, i: u32) {
    take(q.x, i);
    take(q.y, i + 1u);
    take(q.z, i + 2u);
    take(q.w, i + 3u);
}

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
#if VEC4
    let quads = p.V / 4u;
    let base = row * quads;
    var j = tid;
    for (; j + WG < quads; j += 2u * WG) {
        let a = x[base + j];
        let b = x[base + j + WG];
        take4(a, 4u * j);
        take4(b, 4u * (j + WG));
    }
    if (j < quads) {
        take4(x[base + j], 4u * j);
    }
#else
    for (var i = tid; i < p.V; i += WG) {
        take(x[row * p.V + i], i);
    }
#endif
    best_v[tid] = bv;
    best_i[tid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
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
        out[row] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}
