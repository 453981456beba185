// Streaming kernels that measure the device's memory bandwidth (the roofline's ceiling):
//   stream_copy: y = x, each element read once and written once;
//   stream_read: every element read once, each workgroup's sum written to y[workgroup] so the loads
//         cannot be optimized away.
// Threads stride over the whole grid, so a fixed number of workgroups covers any length.
// With VEC4 the arrays are vec4<f32> (n counts vec4s); otherwise scalars. WIDE (copy only, where
// SHADER_INT64 is granted) moves vec4<u64> items: CPU adapters load and store one lane and one
// component at a time, so there the widest components stream fastest.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

#if WIDE
alias Item = vec4<u64>;
#elif VEC4
alias Item = vec4<f32>;
#else
alias Item = f32;
#endif

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<Item>;
@group(0) @binding(2) var<storage, read_write> y: array<Item>;

var<workgroup> sums: array<Item, 256>;

@compute @workgroup_size(256)
fn stream_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let stride = nwg.x * nwg.y * 256u;
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < p.n; i += stride) {
        y[i] = x[i];
    }
}

@compute @workgroup_size(256)
fn stream_read(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let stride = nwg.x * nwg.y * 256u;
    var v = Item();
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < p.n; i += stride) {
        v += x[i];
    }
    sums[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        y[wid.x + wid.y * nwg.x] = sums[0];
    }
}
