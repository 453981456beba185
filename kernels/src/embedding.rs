//! Embedding gather, `out[t, :] = W[ids[t], :]` for any weight format: `shaders/embedding.wgsl`.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, DType, Dispatch, Recorder, Shader, Tensor};

use crate::error::{Result, expect, groups_for};
use crate::variants::ShaderVariants;
use crate::weights::WEIGHTS_WGSL;
use crate::weights::device::Weights;
use crate::weights::format::WeightRead;
use crate::weights::host::HostWeights;

pub const SHADER: Shader = Shader {
    name: "embedding",
    parts: &[WEIGHTS_WGSL, include_str!("../../shaders/embedding.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    t: u32,
    /// Rows of this table part
    n: u32,
    k: u32,
    g: u32,
    /// First table row of this part
    row0: u32,
    /// Rows of the whole table
    rows: u32,
    _pad: [u32; 2],
}

/// Gathers the rows named by `ids` (`[T]`, u32) of `table` into `out` (`[T, K]`, f32).
/// Ids at or past the table's rows give zero rows.
pub fn embedding(
    rec: &mut Recorder<'_>,
    ids: &Tensor,
    table: &Weights,
    out: &Tensor,
) -> Result<()> {
    let t = ids.len();
    expect(ids, "embedding", "ids", DType::U32, t)?;
    expect(out, "embedding", "out", DType::F32, t * table.k)?;
    // The main part holds zeros in outlier columns; a gather would return them.
    crate::error::ensure(table.outliers().is_none(), "embedding", || {
        "a table with outlier columns cannot be gathered from".into()
    })?;
    let defines = table.read().defines();
    for part in table.parts() {
        let params = Params {
            t: t as u32,
            n: part.n as u32,
            k: table.k as u32,
            g: table.group(),
            row0: part.row0 as u32,
            rows: table.n as u32,
            _pad: [0; 2],
        };
        let mut bindings = vec![Binding::new(1, ids), Binding::new(2, out)];
        // A bias (binding 3) belongs to the matrix kernels, not to a gather.
        bindings.extend(part.bindings().into_iter().filter(|b| b.binding < 3));
        rec.dispatch(&Dispatch {
            shader: &SHADER,
            entry: "embedding",
            defines: &defines,
            params: bytemuck::bytes_of(&params),
            bindings: &bindings,
            workgroups: groups_for(t, 1)?,
        })?;
    }
    Ok(())
}

/// CPU reference.
pub fn embedding_ref(ids: &[u32], table: &HostWeights) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            if (id as usize) < table.n {
                table.row(id as usize)
            } else {
                vec![0.0; table.k]
            }
        })
        .collect()
}

pub fn shader_variants() -> ShaderVariants {
    // Every weight read; those that differ only in the row width share defines here.
    let mut variants: Vec<_> = WeightRead::all()
        .into_iter()
        .map(|r| (r.defines(), vec!["embedding"]))
        .collect();
    variants.dedup();
    ShaderVariants {
        shader: SHADER,
        variants,
    }
}
