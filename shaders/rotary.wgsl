// Rotary position embedding (RoFormer, Su et al. 2021), shared by rope.wgsl and attention.wgsl's
// kv_store: pair i of the first `rot` dims of a head turns by angle position * base^(-2i / rot).
//   mode 0 (interleaved, GGUF llama / GPT-J): dims (2i, 2i + 1)
//   mode 1 (half split, Hugging Face / NeoX):  dims (i, i + rot / 2)

//   ROPE_FACTORS: pair i's angle divided by rope_factors[i] (Llama 3's frequency scaling, the
//   GGUF tensor rope_freqs.weight; binding 11 of the kernel that includes this file).

#if ROPE_FACTORS
@group(0) @binding(11) var<storage, read> rope_factors: array<f32>;
#endif

// (cos, sin) of pair i's angle at `position`. The angle is reduced to [0, 2pi) first: GPUs only
// promise sin and cos near zero.
fn rotary_cs(position: u32, i: u32, rot: u32, base: f32) -> vec2<f32> {
#if ROPE_FACTORS
    let angle = f32(position) * pow(base, -2.0 * f32(i) / f32(rot)) / rope_factors[i];
#else
    let angle = f32(position) * pow(base, -2.0 * f32(i) / f32(rot));
#endif
    let r = angle - 6.2831853 * floor(angle * 0.15915494);
    return vec2<f32>(cos(r), sin(r));
}

// The two dims pair i turns.
fn rotary_dims(i: u32, rot: u32, mode: u32) -> vec2<u32> {
    if (mode == 1u) {
        return vec2<u32>(i, i + rot / 2u);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// The pair dim d (< rot) belongs to.
fn rotary_pair(d: u32, rot: u32, mode: u32) -> u32 {
    if (mode == 1u) {
        return d % (rot / 2u);
    }
    return d / 2u;
}

// (x0, x1), the values at a pair's two dims, turned by (cos, sin).
fn rotary_turn(x: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x.x * cs.x - x.y * cs.y, x.x * cs.y + x.y * cs.x);
}
