// Numerically stable softmax over rows of any length, one 256-thread workgroup per row:
// y = exp(s - max s) / sum exp(s - max s) with s = x * scale. With `causal`, row r keeps columns
// c <= r + offset and writes 0 past them (offset = number of earlier positions in the KV cache).

struct Params {
    rows: u32,
    L: u32,
    causal: u32,
    offset: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 256>;

fn reduce(tid: u32, v: f32, take_max: bool) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] = select(red[tid] + red[tid + s], max(red[tid], red[tid + s]), take_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.L;
    var limit = p.L;
    if (p.causal != 0u) {
        limit = min(p.L, row + p.offset + 1u);
    }
    var m = -3.0e38;
    for (var i = tid; i < limit; i += 256u) {
        m = max(m, x[base + i] * p.scale);
    }
    m = reduce(tid, m, true);
    var s = 0.0;
    for (var i = tid; i < limit; i += 256u) {
        s += exp(x[base + i] * p.scale - m);
    }
    let inv = 1.0 / reduce(tid, s, false);
    for (var i = tid; i < p.L; i += 256u) {
        var v = 0.0;
        if (i < limit) {
            v = exp(x[base + i] * p.scale - m) * inv;
        }
        y[base + i] = v;
    }
}
