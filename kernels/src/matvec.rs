//! Matrix-vector product for decode, `Y[B, N] = X[B, K] · W[N, K]ᵀ (+ bias)` for up to
//! [`MAX_BATCH`] activation rows: `shaders/matvec.wgsl`. Each weight is read once per call and used
//! for every row, so a batch of B sequences costs one pass over the weights.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Dispatch, Recorder, Shader, Tensor};

use crate::matmul::rows_of;
use crate::weights::{WEIGHTS_WGSL, Weights};
use crate::{Result, ShaderVariants, ensure, expect};

pub const SHADER: Shader = Shader {
    name: "matvec",
    parts: &[WEIGHTS_WGSL, include_str!("../../shaders/matvec.wgsl")],
};

/// Most activation rows one launch takes (each row count is its own pipeline variant).
pub const MAX_BATCH: usize = 8;
/// Output rows per workgroup: value-wise, and block-wise (GGUF block formats, one lane per block).
const ROWS: usize = 8;
const BLOCK_ROWS: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    /// Rows of this weight part (output columns it writes)
    n: u32,
    k: u32,
    /// int8 group size
    g: u32,
    groups: u32,
    /// Row stride of y (all of the matrix's rows)
    ldy: u32,
    /// First output column of this part
    n0: u32,
    _pad: [u32; 2],
}

/// `x` (`[B, K]`, f32, B ≤ [`MAX_BATCH`]) times the weights into `y` (`[B, N]`).
pub fn matvec(rec: &mut Recorder<'_>, x: &Tensor, w: &Weights, y: &Tensor) -> Result<()> {
    let b = rows_of(x, w, "matvec")?;
    ensure(b <= MAX_BATCH, "matvec", || {
        format!("{b} rows exceed the batch limit {MAX_BATCH}; use matmul")
    })?;
    expect(y, "matvec", "y", DType::F32, b * w.n)?;
    let mut defines = w.defines().set("BATCH", b as u32);
    if w.has_bias() {
        defines = defines.flag("HAS_BIAS");
    }
    if w.k.is_multiple_of(4) {
        defines = defines.flag("X_VEC4");
    }
    let blockwise = w.format.block_bytes().is_some();
    if blockwise {
        defines = defines.flag("BLOCKWISE");
    }
    let rows = if blockwise { BLOCK_ROWS } else { ROWS };
    for part in w.parts() {
        let groups = part.n.div_ceil(rows);
        let params = Params {
            n: part.n as u32,
            k: w.k as u32,
            g: w.group(),
            groups: groups as u32,
            ldy: w.n as u32,
            n0: part.row0 as u32,
            _pad: [0; 2],
        };
        let mut bindings = vec![Binding::new(1, x), Binding::new(2, y)];
        bindings.extend(part.bindings());
        rec.dispatch(&Dispatch {
            shader: &SHADER,
            entry: "matvec",
            defines: &defines,
            params: bytemuck::bytes_of(&params),
            bindings: &bindings,
            workgroups: groups as u32,
        })?;
    }
    crate::outliers::finish(rec, x, w, y)
}

pub fn shader_variants() -> ShaderVariants {
    let mut variants = Vec::new();
    for w in crate::weights::WeightFormat::all_defines() {
        for batch in 1..=MAX_BATCH as u32 {
            for vec4 in [false, true] {
                let mut d = w.clone().set("BATCH", batch);
                if vec4 {
                    d = d.flag("X_VEC4");
                }
                if ["W_Q8_0", "W_Q4_0", "W_Q4_1"].iter().any(|f| w.get(f) != 0) {
                    d = d.flag("BLOCKWISE");
                }
                variants.push((d.clone(), vec!["matvec"]));
                variants.push((d.flag("HAS_BIAS"), vec!["matvec"]));
            }
        }
    }
    ShaderVariants {
        shader: SHADER,
        variants,
    }
}
