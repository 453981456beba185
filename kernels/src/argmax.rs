//! Argmax over rows of logits on the GPU, so greedy decoding reads back 4 bytes per sequence:
//! `shaders/argmax.wgsl`.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect, groups_for};
use crate::plan::DevicePlan;
pub use crate::plan::Scan;
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "argmax",
    parts: &[include_str!("../../shaders/argmax.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    v: u32,
    _pad: [u32; 2],
}

/// Index of the largest value of each row of `len` values of `x` into `out` (`[rows]`, u32).
/// Ties go to the lowest index. The scan is the device plan's.
pub fn argmax(rec: &mut Recorder<'_>, x: &Tensor, len: usize, out: &Tensor) -> Result<()> {
    let scan = DevicePlan::of(rec.context()).argmax;
    argmax_with(rec, x, len, out, scan)
}

/// [`argmax`] with the scan chosen by the caller (tests and benchmarks run both).
pub fn argmax_with(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    len: usize,
    out: &Tensor,
    scan: Scan,
) -> Result<()> {
    ensure(
        len > 0 && x.len().is_multiple_of(len) && x.dtype() == DType::F32,
        "argmax",
        || {
            format!(
                "x must be f32 rows of {len} values, got {:?}{:?}",
                x.dtype(),
                x.shape()
            )
        },
    )?;
    let rows = x.len() / len;
    expect(out, "argmax", "out", DType::U32, rows)?;
    let params = Params {
        rows: rows as u32,
        v: len as u32,
        _pad: [0; 2],
    };
    let limits = &rec.context().limits;
    let (threads, vec4) = match scan {
        Scan::Scalar => (256, false),
        Scan::Wide => {
            let most = limits
                .max_compute_invocations_per_workgroup
                .min(limits.max_compute_workgroup_size_x);
            (if most >= 1024 { 1024 } else { 256 }, len.is_multiple_of(4))
        }
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "argmax",
        defines: &defines(threads, vec4),
        params: bytemuck::bytes_of(&params),
        bindings: &[Binding::new(1, x), Binding::new(2, out)],
        workgroups: groups_for(rows, 1)?,
    })?;
    Ok(())
}

/// CPU reference: first index of the maximum of each row.
pub fn argmax_ref(x: &[f32], len: usize) -> Vec<u32> {
    x.chunks(len)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

fn defines(threads: u32, vec4: bool) -> Defines {
    let d = Defines::new().set("WG", threads);
    if vec4 { d.flag("VEC4") } else { d }
}

pub fn shader_variants() -> ShaderVariants {
    let variants = [(256, false), (256, true), (1024, false), (1024, true)];
    ShaderVariants {
        shader: SHADER,
        variants: variants
            .into_iter()
            .map(|(t, v)| (defines(t, v), vec!["argmax"]))
            .collect(),
    }
}
