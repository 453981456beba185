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
pub struct Rope<'a> {
    pub heads: usize,
    pub head_dim: usize,
    /// Leading dims of each head that rotate (even, at most `head_dim`; usually all of them).
    pub rot_dims: usize,
    pub base: f32,
    pub layout: RopeLayout,
    /// Per-pair divisors of the angle (`[rot_dims / 2]` f32: Llama 3's frequency scaling, the
    /// GGUF tensor `rope_freqs.weight`), or `None` for plain RoPE.
    pub factors: Option<&'a Tensor>,
}

impl Rope<'_> {
    /// Checks the factors' size; binds them at 11 and names the define that reads them.
    pub(crate) fn factor_binding(&self, kernel: &'static str) -> Result<Option<Binding<'_>>> {
        let Some(f) = self.factors else {
            return Ok(None);
        };
        expect(f, kernel, "rope factors", DType::F32, self.rot_dims / 2)?;
        Ok(Some(Binding::new(11, f)))
    }

    /// The rotary defines of a kernel that applies this RoPE.
    pub(crate) fn defines(&self) -> Defines {
        rotary_defines(self.factors.is_some())
    }
}

/// `ROPE_FACTORS` where the angles are divided by per-pair factors.
pub(crate) fn rotary_defines(factors: bool) -> Defines {
    if factors {
        Defines::new().flag("ROPE_FACTORS")
    } else {
        Defines::new()
    }
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
pub fn rope(rec: &mut Recorder<'_>, x: &Tensor, pos: &Tensor, cfg: &Rope<'_>) -> Result<()> {
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
    let mut bindings = vec![Binding::new(1, x), Binding::new(2, pos)];
    bindings.extend(cfg.factor_binding("rope")?);
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "rope",
        defines: &cfg.defines(),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(pairs, 256)?,
    })?;
    Ok(())
}

/// CPU reference (angles in f64); `factors` as [`Rope::factors`] holds them.
pub fn rope_ref(x: &mut [f32], pos: &[u32], cfg: &Rope, factors: Option<&[f32]>) {
    let half = cfg.rot_dims / 2;
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..cfg.heads {
            let base = (t * cfg.heads + h) * cfg.head_dim;
            for i in 0..half {
                let freq = (cfg.base as f64).powf(-2.0 * i as f64 / cfg.rot_dims as f64)
                    / factors.map_or(1.0, |f| f[i] as f64);
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
        variants: [false, true]
            .map(|f| (rotary_defines(f), vec!["rope"]))
            .to_vec(),
    }
}
