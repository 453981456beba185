//! Tiled matrix product for prefill, `Y[M, N] = X[M, K] · W[N, K]ᵀ (+ bias)`:
//! `shaders/matmul.wgsl`, a workgroup per [`TILE`]² tile of Y.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Defines, Dispatch, Recorder, Shader, Tensor};

use super::outputs::{MAX_OUTPUTS, OUTPUTS_WGSL, Outputs, Store, split_defines};
use crate::error::Result;
use crate::variants::ShaderVariants;
use crate::weights::WEIGHTS_WGSL;
use crate::weights::device::Weights;
use crate::weights::format::WeightRead;

pub const SHADER: Shader = Shader {
    name: "matmul",
    parts: &[
        WEIGHTS_WGSL,
        OUTPUTS_WGSL,
        include_str!("../../../shaders/matmul.wgsl"),
    ],
};

/// Output tile edge (rows and columns of Y per workgroup).
pub const TILE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    /// int8 group size
    g: u32,
    tiles_n: u32,
    tiles: u32,
    /// Columns of the whole product (all of the matrix's rows; y's row stride when unsplit)
    ldy: u32,
    /// First output column of this weight part
    n0: u32,
    /// First columns of outputs 1 and 2 of a stacked matrix
    cut1: u32,
    cut2: u32,
    _pad: [u32; 2],
}

/// Everything that selects a matmul variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub read: WeightRead,
    pub bias: bool,
    pub store: Store,
    pub outputs: usize,
}

impl Variant {
    /// The variant's defines: the one place they are made.
    pub fn defines(self) -> Defines {
        let mut d = split_defines(self.read.defines(), self.outputs);
        if self.store == Store::Add {
            d = d.flag("ACCUMULATE");
        }
        if self.bias {
            d = d.flag("HAS_BIAS");
        }
        if self.read.vec4 {
            d = d.flag("X_VEC4");
        }
        d
    }

    /// Every variant a launch can ask for.
    pub fn all() -> Vec<Variant> {
        let mut all = Vec::new();
        for read in WeightRead::all() {
            for outputs in 1..=MAX_OUTPUTS {
                for store in [Store::Write, Store::Add] {
                    for bias in [false, true] {
                        all.push(Variant {
                            read,
                            bias,
                            store,
                            outputs,
                        });
                    }
                }
            }
        }
        all
    }
}

/// The `m` rows of `x` times `w` into `ys`, one launch per weight part.
pub(super) fn record(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    ys: &Outputs<'_>,
    store: Store,
    m: usize,
) -> Result<()> {
    let variant = Variant {
        read: w.read(),
        bias: w.has_bias(),
        store,
        outputs: ys.count(),
    };
    let defines = variant.defines();
    let (cut1, cut2) = ys.cuts();
    for part in w.parts() {
        let tiles_n = part.n.div_ceil(TILE);
        let tiles = m.div_ceil(TILE) * tiles_n;
        let params = Params {
            m: m as u32,
            n: part.n as u32,
            k: w.k as u32,
            g: w.group(),
            tiles_n: tiles_n as u32,
            tiles: tiles as u32,
            ldy: w.n as u32,
            n0: part.row0 as u32,
            cut1,
            cut2,
            _pad: [0; 2],
        };
        let mut bindings = vec![Binding::new(1, x)];
        bindings.extend(ys.bindings());
        bindings.extend(part.bindings());
        rec.dispatch(&Dispatch {
            shader: &SHADER,
            entry: "matmul",
            defines: &defines,
            params: bytemuck::bytes_of(&params),
            bindings: &bindings,
            workgroups: tiles as u32,
        })?;
    }
    Ok(())
}

/// CPU reference: `y[i, j] = Σ_k x[i, k] · w[j, k] (+ bias[j])`, accumulated in f64.
pub fn matmul_ref(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for c in 0..k {
                s += x[i * k + c] as f64 * w[j * k + c] as f64;
            }
            y[i * n + j] = s as f32;
        }
    }
    y
}

pub(super) fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: Variant::all()
            .into_iter()
            .map(|v| (v.defines(), vec!["matmul"]))
            .collect(),
    }
}
