// Rotary position embedding, in place on x[T, H, D] (T rows of H heads of width D).
// Pair i of the first `rot` dims of each head turns by angle pos[t] * base^(-2i / rot):
//   mode 0 (interleaved, GGUF llama / GPT-J): dims (2i, 2i + 1)
//   mode 1 (half split, Hugging Face / NeoX):  dims (i, i + rot / 2)
// The angle is reduced to [0, 2pi) before sin/cos, whose accuracy GPUs only promise near zero.

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
    let t = head / p.H;
    let freq = pow(p.base, -2.0 * f32(pair) / f32(p.rot));
    let angle = f32(pos[t]) * freq;
    let r = angle - 6.2831853 * floor(angle * 0.15915494);
    let c = cos(r);
    let s = sin(r);
    var i0 = head * p.D + 2u * pair;
    var i1 = i0 + 1u;
    if (p.mode == 1u) {
        i0 = head * p.D + pair;
        i1 = i0 + half_rot;
    }
    let x0 = x[i0];
    let x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x0 * s + x1 * c;
}
