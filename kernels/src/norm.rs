//! Row normalizations, `shaders/norm.wgsl`: RMSNorm (Llama) and LayerNorm (GPT-2).

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect, groups_for};
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "norm",
    parts: &[include_str!("../../shaders/norm.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

/// One launch of `entry`; `x` is `None` in place (over `y`).
fn launch(
    rec: &mut Recorder<'_>,
    entry: &'static str,
    x: Option<&Tensor>,
    gamma: &Tensor,
    beta: Option<&Tensor>,
    y: &Tensor,
    eps: f32,
) -> Result<()> {
    let in_place = x.is_none();
    let x = x.unwrap_or(y);
    let d = gamma.len();
    ensure(
        d > 0 && x.len().is_multiple_of(d) && x.dtype() == DType::F32,
        entry,
        || {
            format!(
                "x must be f32 rows of {d} values, got {:?}{:?}",
                x.dtype(),
                x.shape()
            )
        },
    )?;
    expect(gamma, entry, "gamma", DType::F32, d)?;
    expect(y, entry, "y", DType::F32, x.len())?;
    let rows = x.len() / d;
    let mut bindings = vec![Binding::new(2, y), Binding::new(3, gamma)];
    if !in_place {
        bindings.push(Binding::new(1, x));
    }
    if let Some(beta) = beta {
        expect(beta, entry, "beta", DType::F32, d)?;
        bindings.push(Binding::new(4, beta));
    }
    let params = Params {
        rows: rows as u32,
        d: d as u32,
        eps,
        _pad: 0,
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry,
        defines: &defines(in_place),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(rows, 1)?,
    })?;
    Ok(())
}

/// `y = x / sqrt(mean(x²) + eps) · gamma` over rows of `gamma.len()` values.
pub fn rms_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    y: &Tensor,
    eps: f32,
) -> Result<()> {
    launch(rec, "rms_norm", Some(x), gamma, None, y, eps)
}

/// [`rms_norm`] over `x` in place.
pub fn rms_norm_in_place(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    eps: f32,
) -> Result<()> {
    launch(rec, "rms_norm", None, gamma, None, x, eps)
}

fn defines(in_place: bool) -> Defines {
    if in_place {
        Defines::new().flag("IN_PLACE")
    } else {
        Defines::new()
    }
}

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta` over rows of `gamma.len()` values.
pub fn layer_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    eps: f32,
) -> Result<()> {
    launch(rec, "layer_norm", Some(x), gamma, Some(beta), y, eps)
}

/// CPU reference for [`rms_norm`] (f64 statistics).
pub fn rms_norm_ref(x: &[f32], gamma: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(gamma.len())
        .flat_map(|row| {
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / row.len() as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            row.iter()
                .zip(gamma)
                .map(move |(&v, &g)| (v as f64 * inv * g as f64) as f32)
        })
        .collect()
}

/// CPU reference for [`layer_norm`] (f64 statistics).
pub fn layer_norm_ref(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(gamma.len())
        .flat_map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + eps as f64).sqrt();
            row.iter()
                .zip(gamma.iter().zip(beta))
                .map(move |(&v, (&g, &b))| ((v as f64 - mean) * inv * g as f64 + b as f64) as f32)
        })
        .collect()
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![
            (defines(false), vec!["rms_norm", "layer_norm"]),
            (defines(true), vec!["rms_norm"]),
        ],
    }
}
