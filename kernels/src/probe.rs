//! The calibration probe (`shaders/probe.wgsl`): the largest |x| per input column of a matrix,
//! kept over every launch, from which an outlier decomposition picks its columns.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect, groups_for};
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "probe",
    parts: &[include_str!("../../shaders/probe.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    k: u32,
    _pad: [u32; 2],
}

/// `probe[c] = max(probe[c], max_m |x[m, c]|)` over the rows of `x` (`[M, K]`).
pub fn column_absmax(rec: &mut Recorder<'_>, x: &Tensor, k: usize, probe: &Tensor) -> Result<()> {
    ensure(
        x.dtype() == DType::F32 && k > 0 && x.len().is_multiple_of(k),
        "column_absmax",
        || format!("x must be f32 rows of {k} values, got {:?}", x.shape()),
    )?;
    expect(probe, "column_absmax", "probe", DType::F32, k)?;
    let params = Params {
        m: (x.len() / k) as u32,
        k: k as u32,
        _pad: [0; 2],
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "column_absmax",
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &[Binding::new(1, x), Binding::new(2, probe)],
        workgroups: groups_for(k, 256)?,
    })?;
    Ok(())
}

/// CPU reference of [`column_absmax`] from a zero probe.
pub fn column_absmax_ref(x: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; k];
    for row in x.chunks(k) {
        for (o, v) in out.iter_mut().zip(row) {
            *o = o.max(v.abs());
        }
    }
    out
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![(Defines::new(), vec!["column_absmax"])],
    }
}
