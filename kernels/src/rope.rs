//! Rotary position embedding in place on `[T, H, D]` (or on queries and keys in one launch):
//! `shaders/rope.wgsl`
//! (RoFormer, Su et al. 2021, https://arxiv.org/abs/2104.09864).

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::{Result, ShaderVariants, ensure, expect, groups_for};

pub const SHADER: Shader = Shader {
    name: "rope",
    parts: &[include_str!("../../shaders/rope.wgsl")],
};

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
    /// Pairs of x, `t * h * rot / 2`
    pairs: u32,
    /// Pairs of the second tensor
    pairs2: u32,
    /// Heads of the second tensor
    h2: u32,
    _pad: [u32; 3],
}

/// Rotates `x` (`[T, heads, head_dim]`, f32) in place; `pos` (`[T]`, u32) gives each row's position.
pub fn rope(rec: &mut Recorder<'_>, x: &Tensor, pos: &Tensor, cfg: &Rope) -> Result<()> {
    launch(rec, x, None, pos, cfg)
}

/// [`rope`] on a layer's queries `q` (`cfg.heads` heads) and keys `k` (`k_heads` heads, the
/// same head size and frequencies) in one launch.
pub fn rope_qk(
    rec: &mut Recorder<'_>,
    (q, k): (&Tensor, &Tensor),
    pos: &Tensor,
    cfg: &Rope,
    k_heads: usize,
) -> Result<()> {
    launch(rec, q, Some((k, k_heads)), pos, cfg)
}

fn launch(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    second: Option<(&Tensor, usize)>,
    pos: &Tensor,
    cfg: &Rope,
) -> Result<()> {
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
    let (mut bindings, mut defines) = (
        vec![Binding::new(1, x), Binding::new(2, pos)],
        Defines::new(),
    );
    let (mut pairs2, mut h2) = (0, 0);
    if let Some((x2, heads)) = second {
        expect(x2, "rope", "k", DType::F32, t * heads * cfg.head_dim)?;
        bindings.push(Binding::new(3, x2));
        defines = defines.flag("BOTH");
        (pairs2, h2) = (t * heads * cfg.rot_dims / 2, heads);
    }
    let params = Params {
        t: t as u32,
        h: cfg.heads as u32,
        d: cfg.head_dim as u32,
        rot: cfg.rot_dims as u32,
        base: cfg.base,
        mode: matches!(cfg.layout, RopeLayout::HalfSplit) as u32,
        pairs: pairs as u32,
        pairs2: pairs2 as u32,
        h2: h2 as u32,
        _pad: [0; 3],
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "rope",
        defines: &defines,
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(pairs + pairs2, 256)?,
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
        variants: vec![
            (Defines::new(), vec!["rope"]),
            (Defines::new().flag("BOTH"), vec!["rope"]),
        ],
    }
}
