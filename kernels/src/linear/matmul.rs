//! Tiled matrix product for prefill, `Y[M, N] = X[M, K] · W[N, K]ᵀ (+ bias)`:
//! `shaders/matmul.wgsl`, a workgroup per [`TILE`]² tile of Y. A product of too few tiles to
//! fill the device ([`DevicePlan::matmul_fill`]) splits K over more workgroups, which write
//! partial sums to the recording's scratch ([`Recorder::scratch`]: never shared with a
//! recording on another thread), and `shaders/matmul_reduce.wgsl` adds them up.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Defines, Dispatch, Recorder, Shader, Tensor};

use super::outputs::{MAX_OUTPUTS, OUTPUTS_WGSL, Outputs, Store, split_defines};
use crate::error::Result;
use crate::plan::DevicePlan;
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

pub const REDUCE: Shader = Shader {
    name: "matmul_reduce",
    parts: &[
        OUTPUTS_WGSL,
        include_str!("../../../shaders/matmul_reduce.wgsl"),
    ],
};

/// Output tile edge (rows and columns of Y per workgroup).
pub const TILE: usize = 64;
/// K values per slice of the tile loop; a split takes a whole number of slices.
const SLICE: usize = 16;
/// The fewest K values a split takes (four slices): shorter ones cost more in partial sums
/// than they gain in workgroups.
const SPLIT_MIN_K: usize = 64;
/// The most splits of one product.
pub const MAX_SPLITS: usize = 16;
/// Threads per workgroup of the reduce.
const REDUCE_WG: usize = 256;

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
    /// K values per split (K unsplit)
    k_split: u32,
    splits: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    m: u32,
    n: u32,
    splits: u32,
    ldy: u32,
    n0: u32,
    cut1: u32,
    cut2: u32,
    _pad: u32,
}

/// K values per split of a product of `tiles` output tiles over `k`: `k` itself (one split)
/// unless `splits` asks for more, or, where it is `None`, unless the plan's fill target is more
/// than twice the tiles. Whole slices, at least [`SPLIT_MIN_K`], at most [`MAX_SPLITS`].
pub(crate) fn split_len(plan: &DevicePlan, tiles: usize, k: usize, splits: Option<usize>) -> usize {
    let want = match (splits, plan.matmul_fill) {
        (Some(s), _) => s,
        (None, Some(fill)) if fill >= 2 * tiles => fill / tiles,
        _ => 1,
    };
    let most = k.div_ceil(SPLIT_MIN_K).clamp(1, MAX_SPLITS);
    let splits = want.clamp(1, most);
    if splits == 1 {
        return k;
    }
    k.div_ceil(splits).next_multiple_of(SLICE)
}

/// Everything that selects a matmul variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub read: WeightRead,
    pub bias: bool,
    pub store: Store,
    pub outputs: usize,
}

/// A split matmul's launches: the partial products (by weight read) and the reduce (by bias,
/// store and outputs, as [`Variant`]).
fn partial_defines(read: WeightRead) -> Defines {
    let d = read.defines().flag("SPLIT_K");
    if read.vec4 { d.flag("X_VEC4") } else { d }
}

fn reduce_defines(bias: bool, store: Store, outputs: usize) -> Defines {
    let mut d = split_defines(Defines::new(), outputs);
    if store == Store::Add {
        d = d.flag("ACCUMULATE");
    }
    if bias {
        d = d.flag("HAS_BIAS");
    }
    d
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

/// The `m` rows of `x` times `w` into `ys`, one launch per weight part (two where K is split:
/// `splits` forces a count, `None` leaves it to the plan).
pub(super) fn record(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    ys: &Outputs<'_>,
    store: Store,
    m: usize,
    splits: Option<usize>,
) -> Result<()> {
    let plan = DevicePlan::of(rec.context());
    let variant = Variant {
        read: w.read(),
        bias: w.has_bias(),
        store,
        outputs: ys.count(),
    };
    let (cut1, cut2) = ys.cuts();
    for part in w.parts() {
        let tiles_n = part.n.div_ceil(TILE);
        let tiles = m.div_ceil(TILE) * tiles_n;
        let k_split = split_len(&plan, tiles, w.k, splits);
        let parts = w.k.div_ceil(k_split);
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
            k_split: k_split as u32,
            splits: parts as u32,
        };
        let weights = part.bindings();
        if parts == 1 {
            let mut bindings = vec![Binding::new(1, x)];
            bindings.extend(ys.bindings());
            bindings.extend(weights);
            rec.dispatch(&Dispatch {
                shader: &SHADER,
                entry: "matmul",
                defines: &variant.defines(),
                params: bytemuck::bytes_of(&params),
                bindings: &bindings,
                workgroups: tiles as u32,
            })?;
            continue;
        }
        let scratch = rec.scratch(parts * m * part.n)?;
        // The partial products bind no bias (binding 3 of group 1); the reduce adds it.
        let mut bindings = vec![Binding::new(1, x), Binding::new(3, &scratch)];
        bindings.extend(weights.iter().filter(|b| !is_bias(b)).copied());
        rec.dispatch(&Dispatch {
            shader: &SHADER,
            entry: "matmul",
            defines: &partial_defines(variant.read),
            params: bytemuck::bytes_of(&params),
            bindings: &bindings,
            workgroups: (tiles * parts) as u32,
        })?;
        let reduce = ReduceParams {
            m: m as u32,
            n: part.n as u32,
            splits: parts as u32,
            ldy: w.n as u32,
            n0: part.row0 as u32,
            cut1,
            cut2,
            _pad: 0,
        };
        let mut bindings = vec![Binding::new(1, &scratch)];
        bindings.extend(ys.bindings());
        bindings.extend(weights.iter().filter(|b| is_bias(b)).copied());
        rec.dispatch(&Dispatch {
            shader: &REDUCE,
            entry: "matmul_reduce",
            defines: &reduce_defines(variant.bias, store, variant.outputs),
            params: bytemuck::bytes_of(&reduce),
            bindings: &bindings,
            workgroups: (m * part.n).div_ceil(REDUCE_WG) as u32,
        })?;
    }
    Ok(())
}

/// Splits of K the matmul takes for `m` rows of `w` on this plan (per weight part: the first's).
pub(super) fn splits(plan: &DevicePlan, m: usize, w: &Weights) -> usize {
    let n = w.parts().first().map_or(w.n, |p| p.n);
    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    w.k.div_ceil(split_len(plan, tiles, w.k, None))
}

/// Whether a weight binding is the bias (group 1, binding 3; `Weights` binds it there).
fn is_bias(b: &Binding<'_>) -> bool {
    b.group == 1 && b.binding == 3
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

pub(super) fn shader_variants() -> Vec<ShaderVariants> {
    let mut matmul: Vec<(Defines, Vec<&'static str>)> = Variant::all()
        .into_iter()
        .map(|v| (v.defines(), vec!["matmul"]))
        .collect();
    matmul.extend(
        WeightRead::all()
            .into_iter()
            .map(|read| (partial_defines(read), vec!["matmul"])),
    );
    let mut reduce = Vec::new();
    for outputs in 1..=MAX_OUTPUTS {
        for store in [Store::Write, Store::Add] {
            for bias in [false, true] {
                reduce.push((reduce_defines(bias, store, outputs), vec!["matmul_reduce"]));
            }
        }
    }
    vec![
        ShaderVariants {
            shader: SHADER,
            variants: matmul,
        },
        ShaderVariants {
            shader: REDUCE,
            variants: reduce,
        },
    ]
}
