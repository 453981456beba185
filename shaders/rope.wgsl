// Rotary position embedding, in place on x[T, H, D] (T rows of H heads of width D); row t turns
// by position pos[t]. The pairs, angles and modes are rotary.wgsl's. (Llama folds its RoPE into
// the KV store instead: attention.wgsl's kv_store with ROPE.)

struct Params {
    T: u32,
    H: u32,
    D: u32,
    rot: u32,
    base: f32,
    mode: u32,
    pairs: u32,  // T * H * rot / 2
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.pairs) {
        return;
    }
    let half_rot = p.rot / 2u;
    let pair = i % half_rot;
    let head = i / half_rot;           // t * H + h
    let at = rotary_dims(pair, p.rot, p.mode) + vec2<u32>(head * p.D);
    let cs = rotary_cs(pos[head / p.H], pair, p.rot, p.base);
    let v = rotary_turn(vec2<f32>(x[at.x], x[at.y]), cs);
    x[at.x] = v.x;
    x[at.y] = v.y;
}
