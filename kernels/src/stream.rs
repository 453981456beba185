//! Streaming copy and read kernels, the bandwidth ceiling benchmarks compare every other kernel
//! against: `shaders/stream.wgsl`.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, ensure, expect};
use crate::variants::ShaderVariants;

pub const SHADER: Shader = Shader {
    name: "stream",
    parts: &[include_str!("../../shaders/stream.wgsl")],
};

/// Workgroups of a streaming launch: enough threads to fill a large GPU, each then strides over
/// the rest.
pub const MAX_GROUPS: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// Launch shape for `len` f32 values: (defines, items, workgroups); vec4 items when `len` allows.
fn shape(len: usize) -> Result<(Defines, usize, usize)> {
    ensure(len > 0 && len <= u32::MAX as usize, "stream", || {
        format!("{len} values: need 1 to 2^32 - 1")
    })?;
    let (defines, items) = if len.is_multiple_of(4) {
        (Defines::new().flag("VEC4"), len / 4)
    } else {
        (Defines::new(), len)
    };
    Ok((defines, items, items.div_ceil(256).min(MAX_GROUPS)))
}

/// `y = x` for f32 tensors of the same length, in the widest items the device reads: 32 bytes
/// (four u64) where SHADER_INT64 is granted and the length allows.
pub fn copy(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    expect(x, "stream copy", "x", DType::F32, x.len())?;
    expect(y, "stream copy", "y", DType::F32, x.len())?;
    let (mut defines, mut n, mut groups) = shape(x.len())?;
    if rec.context().features.int64 && x.len().is_multiple_of(8) {
        defines = Defines::new().flag("WIDE");
        n = x.len() / 8;
        groups = n.div_ceil(256).min(MAX_GROUPS);
    }
    launch(rec, "stream_copy", &defines, n, groups, x, y)
}

/// Reads every value of `x` once; `partial` (f32, [`read_partials`] values) receives sums whose
/// total is the sum of `x`.
pub fn read(rec: &mut Recorder<'_>, x: &Tensor, partial: &Tensor) -> Result<()> {
    expect(x, "stream read", "x", DType::F32, x.len())?;
    let (defines, n, groups) = shape(x.len())?;
    expect(
        partial,
        "stream read",
        "partial",
        DType::F32,
        read_partials(x.len()),
    )?;
    launch(rec, "stream_read", &defines, n, groups, x, partial)
}

/// Length of the `partial` tensor [`read`] writes for `len` values.
pub fn read_partials(len: usize) -> usize {
    let lanes = if len.is_multiple_of(4) { 4 } else { 1 };
    (len / lanes).div_ceil(256).clamp(1, MAX_GROUPS) * lanes
}

fn launch(
    rec: &mut Recorder<'_>,
    entry: &'static str,
    defines: &Defines,
    n: usize,
    groups: usize,
    x: &Tensor,
    y: &Tensor,
) -> Result<()> {
    let params = Params {
        n: n as u32,
        _pad: [0; 3],
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry,
        defines,
        params: bytemuck::bytes_of(&params),
        bindings: &[Binding::new(1, x), Binding::new(2, y)],
        workgroups: groups as u32,
    })?;
    Ok(())
}

/// CPU reference of [`read`]: the sum of `x` in f64.
pub fn read_ref(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![
            (Defines::new(), vec!["stream_copy", "stream_read"]),
            (
                Defines::new().flag("VEC4"),
                vec!["stream_copy", "stream_read"],
            ),
            (Defines::new().flag("WIDE"), vec!["stream_copy"]),
        ],
    }
}
