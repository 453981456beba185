//! Numerically stable row softmax with optional causal mask and scale: `shaders/softmax.wgsl`.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect, groups_for};
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "softmax",
    parts: &[include_str!("../../shaders/softmax.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    causal: u32,
    offset: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// Optional causal mask: row `r` keeps columns `c <= r + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Causal {
    pub offset: usize,
}

/// Softmax of `scale · x` over rows of `len` values into `y`.
pub fn softmax(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    len: usize,
    scale: f32,
    causal: Option<Causal>,
) -> Result<()> {
    ensure(
        len > 0 && x.len().is_multiple_of(len) && x.dtype() == DType::F32,
        "softmax",
        || {
            format!(
                "x must be f32 rows of {len} values, got {:?}{:?}",
                x.dtype(),
                x.shape()
            )
        },
    )?;
    expect(y, "softmax", "y", DType::F32, x.len())?;
    let rows = x.len() / len;
    let params = Params {
        rows: rows as u32,
        len: len as u32,
        causal: causal.is_some() as u32,
        offset: causal.map_or(0, |c| c.offset as u32),
        scale,
        _pad: [0; 3],
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "softmax",
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &[Binding::new(1, x), Binding::new(2, y)],
        workgroups: groups_for(rows, 1)?,
    })?;
    Ok(())
}

/// CPU reference (f64).
pub fn softmax_ref(x: &[f32], len: usize, scale: f32, causal: Option<Causal>) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(len).enumerate() {
        let limit = causal.map_or(len, |c| (r + c.offset + 1).min(len));
        let s: Vec<f64> = row[..limit]
            .iter()
            .map(|&v| v as f64 * scale as f64)
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = s.iter().map(|v| (v - m).exp()).sum();
        out.extend(s.iter().map(|v| ((v - m).exp() / sum) as f32));
        out.extend(std::iter::repeat_n(0.0, len - limit));
    }
    out
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![(Defines::new(), vec!["softmax"])],
    }
}
