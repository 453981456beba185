// Rotary position embedding, in place on x[T, H, D] (T rows of H heads of width D), and with
// BOTH also on x2[T, H2, D] in the same launch (a layer's queries and keys).
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
    pairs: u32,   // T * H * rot / 2
    pairs2: u32,  // T * H2 * rot / 2 (with BOTH)
    H2: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
#if BOTH
@group(0) @binding(3) var<storage, read_write> x2: array<f32>;
#endif

// The two elements pair `i` of a tensor of `heads` heads turns, and its cos and sin.
struct Turn {
    i0: u32,
    i1: u32,
    c: f32,
    s: f32,
}

fn turn(i: u32, heads: u32) -> Turn {
    let half_rot = p.rot / 2u;
    let pair = i % half_rot;
    let head = i / half_rot;           // t * heads + h
    let t = head / heads;
    let freq = pow(p.base, -2.0 * f32(pair) / f32(p.rot));
    let angle = f32(pos[t]) * freq;
    let r = angle - 6.2831853 * floor(angle * 0.15915494);
    var i0 = head * p.D + 2u * pair;
    var i1 = i0 + 1u;
    if (p.mode == 1u) {
        i0 = head * p.D + pair;
        i1 = i0 + half_rot;
    }
    return Turn(i0, i1, cos(r), sin(r));
}

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.pairs) {
        let u = turn(i, p.H);
        let x0 = x[u.i0];
        let x1 = x[u.i1];
        x[u.i0] = x0 * u.c - x1 * u.s;
        x[u.i1] = x0 * u.s + x1 * u.c;
    }
#if BOTH
    else if (i < p.pairs + p.pairs2) {
        let u = turn(i - p.pairs, p.H2);
        let x0 = x2[u.i0];
        let x1 = x2[u.i1];
        x2[u.i0] = x0 * u.c - x1 * u.s;
        x2[u.i1] = x0 * u.s + x1 * u.c;
    }
#endif
}
