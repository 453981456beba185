//! Elementwise activations and residual adds: `shaders/elementwise.wgsl`.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, expect, groups_for};
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "elementwise",
    parts: &[include_str!("../../shaders/elementwise.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

fn launch(
    rec: &mut Recorder<'_>,
    entry: &'static str,
    a: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    let n = a.len();
    expect(a, entry, "a", DType::F32, n)?;
    expect(y, entry, "y", DType::F32, n)?;
    let mut bindings = vec![Binding::new(1, a), Binding::new(3, y)];
    if let Some(b) = b {
        expect(b, entry, "b", DType::F32, n)?;
        bindings.push(Binding::new(2, b));
    }
    let params = Params {
        n: n as u32,
        _pad: [0; 3],
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry,
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(n, 256)?,
    })?;
    Ok(())
}

/// `y = gelu(x)`, tanh approximation (GPT-2).
pub fn gelu(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    launch(rec, "gelu", x, None, y)
}

/// `y = x · sigmoid(x)`.
pub fn silu(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    launch(rec, "silu", x, None, y)
}

/// `y = silu(gate) · up` (the Llama MLP).
pub fn swiglu(rec: &mut Recorder<'_>, gate: &Tensor, up: &Tensor, y: &Tensor) -> Result<()> {
    launch(rec, "swiglu", gate, Some(up), y)
}

/// `y = a + b`.
pub fn add(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<()> {
    launch(rec, "add", a, Some(b), y)
}

/// `y += a` (residual stream update in place).
pub fn accumulate(rec: &mut Recorder<'_>, y: &Tensor, a: &Tensor) -> Result<()> {
    launch(rec, "accumulate", a, None, y)
}

/// CPU reference of GELU (tanh form), in f64.
pub fn gelu_ref(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()))
        as f32
}

/// CPU reference of SiLU, in f64.
pub fn silu_ref(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![(
            Defines::new(),
            vec!["gelu", "silu", "swiglu", "add", "accumulate"],
        )],
    }
}
