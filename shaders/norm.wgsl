// Row normalizations over the last dimension, one 256-thread workgroup per row:
//   rms_norm:   y = x / sqrt(mean(x^2) + eps) * gamma                 (Llama)
//   layer_norm: y = (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta   (GPT-2)
// The variance is taken around the mean in a second pass, which keeps it accurate for rows
// with a large mean. With IN_PLACE, rms_norm writes y over x (binding 2 alone; Qwen3's norm of
// each head of q and k): each invocation reads only the values it writes, after the reduction.

struct Params {
    rows: u32,
    D: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if !IN_PLACE
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn x_at(i: u32) -> f32 {
#if IN_PLACE
    return y[i];
#else
    return x[i];
#endif
}
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;

var<workgroup> red: array<f32, 256>;

fn sum_all(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.D;
    var sq = 0.0;
    for (var i = tid; i < p.D; i += 256u) {
        sq += x_at(base + i) * x_at(base + i);
    }
    let inv = inverseSqrt(sum_all(tid, sq) / f32(p.D) + p.eps);
    for (var i = tid; i < p.D; i += 256u) {
        y[base + i] = x_at(base + i) * inv * gamma[i];
    }
}

#if !IN_PLACE
@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.D;
    var s = 0.0;
    for (var i = tid; i < p.D; i += 256u) {
        s += x[base + i];
    }
    let mean = sum_all(tid, s) / f32(p.D);
    var sq = 0.0;
    for (var i = tid; i < p.D; i += 256u) {
        let d = x[base + i] - mean;
        sq += d * d;
    }
    let inv = inverseSqrt(sum_all(tid, sq) / f32(p.D) + p.eps);
    for (var i = tid; i < p.D; i += 256u) {
        y[base + i] = (x[base + i] - mean) * inv * gamma[i] + beta[i];
    }
}
#endif
