//! Rotary position embedding in place on `[T, H, D]`: `shaders/rope.wgsl`
//! (RoFormer, Su et al. 2021, <https://arxiv.org/abs/2104.09864>).

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect, groups_for};
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "rope",
    parts: &[ROTARY_WGSL, include_str!("../../shaders/rope.wgsl")],
};

/// The rotary math (`shaders/rotary.wgsl`), shared with the KV store that folds RoPE in
/// ([`crate::attention::kv_store_rope`]).
pub const ROTARY_WGSL: &str = include_str!("../../shaders/rotary.wgsl");

/// Which dims form a rotating pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dims (2i, 2i + 1): GGUF llama (whose Q/K rows llama.cpp permutes for it) and GPT-J.
    Interleaved,
    /// Dims (i, i + rot/2): Hugging Face Llama and GPT-NeoX.
    HalfSplit,
}

/// Shape and frequency settings.
#[derive(Clone, Copy, Debug)]
pub struct Rope {
    pub heads: usize,
    pub head_dim: usize,
    /// Leading dims of each head that rotate (even, at most `head_dim`; usually all of them).
    pub rot_dims: usize,
    pub base: f32,
    pub layout: RopeLayout,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    t: u32,
    h: u32,
    d: u32,
    rot: u32,
    base: f32,
    mode: u32,
    pairs: u32,
    _pad: u32,
}

/// Rotates `x` (`[T, heads, head_dim]`, f32) in place; `pos` (`[T]`, u32) gives each row's position.
pub fn rope(rec: &mut Recorder<'_>, x: &Tensor, pos: &Tensor, cfg: &Rope) -> Result<()> {
    let t = pos.len();
    ensure(
        cfg.rot_dims.is_multiple_of(2) && cfg.rot_dims > 0 && cfg.rot_dims <= cfg.head_dim,
        "rope",
        || {
            format!(
                "rot_dims {} must be even, positive and at most head_dim {}",
                cfg.rot_dims, cfg.head_dim
            )
        },
    )?;
    expect(pos, "rope", "pos", DType::U32, t)?;
    expect(x, "rope", "x", DType::F32, t * cfg.heads * cfg.head_dim)?;
    let pairs = t * cfg.heads * cfg.rot_dims / 2;
    let params = Params {
        t: t as u32,
        h: cfg.heads as u32,
        d: cfg.head_dim as u32,
        rot: cfg.rot_dims as u32,
        base: cfg.base,
        mode: matches!(cfg.layout, RopeLayout::HalfSplit) as u32,
        pairs: pairs as u32,
        _pad: 0,
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "rope",
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &[Binding::new(1, x), Binding::new(2, pos)],
        workgroups: groups_for(pairs, 256)?,
    })?;
    Ok(())
}

/// CPU reference (angles in f64).
pub fn rope_ref(x: &mut [f32], pos: &[u32], cfg: &Rope) {
    let half = cfg.rot_dims / 2;
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..cfg.heads {
            let base = (t * cfg.heads + h) * cfg.head_dim;
            for i in 0..half {
                let freq = (cfg.base as f64).powf(-2.0 * i as f64 / cfg.rot_dims as f64);
                let (s, c) = (p as f64 * freq).sin_cos();
                let (a, b) = match cfg.layout {
                    RopeLayout::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    RopeLayout::HalfSplit => (base + i, base + i + half),
                };
                let (x0, x1) = (x[a] as f64, x[b] as f64);
                x[a] = (x0 * c - x1 * s) as f32;
                x[b] = (x0 * s + x1 * c) as f32;
            }
        }
    }
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![(Defines::new(), vec!["rope"])],
    }
}
