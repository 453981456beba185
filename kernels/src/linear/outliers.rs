//! The outlier columns' share of a product (`shaders/outliers.wgsl`): after the main pass over a
//! matrix whose input columns `cols` are kept in f32 ([`Outliers`]), `Y[m, r] += Σ_j Wo[r, j] ·
//! X[m, cols[j]]`.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Dispatch, Recorder, Shader, Tensor};

use super::outputs::{MAX_OUTPUTS, OUTPUTS_WGSL, Outputs, split_defines};
use crate::error::{Result, groups_for};
use crate::variants::ShaderVariants;
use crate::weights::outliers::Outliers;

pub const SHADER: Shader = Shader {
    name: "outliers",
    parts: &[OUTPUTS_WGSL, include_str!("../../../shaders/outliers.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    c: u32,
    /// Columns of the whole product (`n`)
    ldy: u32,
    /// First columns of outputs 1 and 2 of a stacked matrix
    cut1: u32,
    cut2: u32,
    _pad: u32,
}

/// Adds the share of `o`, the outlier columns of an `[n, k]` matrix, to the product of the `m`
/// rows of `x` in `ys`.
pub(super) fn record(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    (m, n, k): (usize, usize, usize),
    o: &Outliers,
    ys: &Outputs<'_>,
) -> Result<()> {
    let (cut1, cut2) = ys.cuts();
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        c: o.columns().len() as u32,
        ldy: n as u32,
        cut1,
        cut2,
        _pad: 0,
    };
    let mut bindings = vec![
        Binding::new(1, x),
        Binding::weight(0, &o.cols_t),
        Binding::weight(1, &o.values),
    ];
    bindings.extend(ys.bindings());
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "outlier_add",
        defines: &split_defines(Default::default(), ys.count()),
        params: bytemuck::bytes_of(&params),
        bindings: &bindings,
        workgroups: groups_for(m * n, 256)?,
    })?;
    Ok(())
}

pub(super) fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: (1..=MAX_OUTPUTS)
            .map(|outputs| {
                (
                    split_defines(Default::default(), outputs),
                    vec!["outlier_add"],
                )
            })
            .collect(),
    }
}
