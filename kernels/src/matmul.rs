//! Matrix product for prefill, `Y[M, N] = X[M, K] · W[N, K]ᵀ (+ bias)`: `shaders/matmul.wgsl`.
//! [`linear`] picks this kernel or [`crate::matvec`] by the number of rows.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Context, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::outputs::{OUTPUTS_WGSL, Outputs};
use crate::plan::DevicePlan;
use crate::weights::{WEIGHTS_WGSL, WeightFormat, Weights};
use crate::{Result, ShaderVariants, ensure, expect, matvec};

pub const SHADER: Shader = Shader {
    name: "matmul",
    parts: &[
        WEIGHTS_WGSL,
        OUTPUTS_WGSL,
        include_str!("../../shaders/matmul.wgsl"),
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

/// Rows of `x` (`[M, K]`, f32) times the weights into `y` (`[M, N]`, f32).
pub fn matmul(rec: &mut Recorder<'_>, x: &Tensor, w: &Weights, y: &Tensor) -> Result<()> {
    matmul_store(rec, x, w, y, Store::Write)
}

/// How a matrix kernel stores its product into `y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `y = x · Wᵀ (+ bias)`
    Write,
    /// `y += x · Wᵀ (+ bias)`: a residual add in the same launch.
    Add,
}

impl Store {
    pub(crate) fn apply(self, defines: kiln_runtime::Defines) -> kiln_runtime::Defines {
        match self {
            Store::Write => defines,
            Store::Add => defines.flag("ACCUMULATE"),
        }
    }
}

/// [`matmul`] storing by `store`.
pub fn matmul_store(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    y: &Tensor,
    store: Store,
) -> Result<()> {
    let m = rows_of(x, w, "matmul")?;
    expect(y, "matmul", "y", DType::F32, m * w.n)?;
    matmul_split(rec, x, w, &[y], store)
}

/// [`matmul_store`] for a matrix stacked by rows from the projections whose outputs are `ys`
/// (each `[M, n_i]`, `Σ n_i = N`): one launch writes every output its own columns.
pub fn matmul_split(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    ys: &[&Tensor],
    store: Store,
) -> Result<()> {
    let m = rows_of(x, w, "matmul")?;
    let ys = Outputs::split("matmul", ys, m, w.n)?;
    let mut defines = ys.defines(store.apply(w.defines()));
    if w.has_bias() {
        defines = defines.flag("HAS_BIAS");
    }
    if w.k.is_multiple_of(4) {
        defines = defines.flag("X_VEC4");
    }
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
    crate::outliers::finish(rec, x, w, &ys)
}

/// `Y = X · Wᵀ (+ bias)` with the kernel suited to the row count and device (see
/// [`uses_matvec`]).
pub fn linear(rec: &mut Recorder<'_>, x: &Tensor, w: &Weights, y: &Tensor) -> Result<()> {
    linear_store(rec, x, w, y, Store::Write)
}

/// `Y += X · Wᵀ (+ bias)`, [`linear`] with the residual add fused into its store.
pub fn linear_add(rec: &mut Recorder<'_>, x: &Tensor, w: &Weights, y: &Tensor) -> Result<()> {
    linear_store(rec, x, w, y, Store::Add)
}

/// `Y_i = (rmsnorm(X) ⊙ gamma) · W_iᵀ (+ bias)` into the outputs `ys` of a matrix stacked by
/// rows (one output for a plain one): the RMSNorm before a projection. Where the device plan
/// folds norms ([`DevicePlan::fold_norm`]) and the mat-vec takes the rows, the norm is made as
/// the kernel reads `x` ([`matvec::matvec_rms_split`]); otherwise it is written to `h`
/// (`[M, K]`, f32) by a launch of its own first.
pub fn linear_rms_split(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    (gamma, eps): (&Tensor, f32),
    h: &Tensor,
    w: &Weights,
    ys: &[&Tensor],
) -> Result<()> {
    let ctx = rec.context();
    let rows = rows_of(x, w, "linear")?;
    let layout = matvec::Layout::for_device(ctx);
    let fold = DevicePlan::of(ctx).fold_norm
        && layout.folds_norm()
        && uses_matvec(ctx, rows, w)
        && w.outliers().is_none()
        && w.probe().is_none();
    if fold {
        matvec::matvec_rms_split(rec, x, (gamma, eps), w, ys, layout, Store::Write)
    } else {
        crate::norm::rms_norm(rec, x, gamma, h, eps)?;
        linear_split(rec, h, w, ys, Store::Write)
    }
}

/// `Y (+)= (silu(gate) ⊙ up) · Wᵀ (+ bias)`, a gated MLP's down projection. Through the
/// mat-vec the activation is made as the kernel reads it ([`matvec::matvec_glu_store`]);
/// otherwise (the tiled matmul, or weights with outlier columns or a probe) it is written to
/// `act` (`[M, K]`, f32) first.
pub fn linear_swiglu(
    rec: &mut Recorder<'_>,
    (gate, up): (&Tensor, &Tensor),
    act: &Tensor,
    w: &Weights,
    y: &Tensor,
    store: Store,
) -> Result<()> {
    let rows = rows_of(gate, w, "linear")?;
    if uses_matvec(rec.context(), rows, w) && w.outliers().is_none() && w.probe().is_none() {
        let layout = matvec::Layout::for_device(rec.context());
        matvec::matvec_glu_store(rec, gate, up, w, y, layout, store)
    } else {
        crate::elementwise::swiglu(rec, gate, up, act)?;
        linear_store(rec, act, w, y, store)
    }
}

fn linear_store(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    y: &Tensor,
    store: Store,
) -> Result<()> {
    let m = rows_of(x, w, "linear")?;
    expect(y, "linear", "y", DType::F32, m * w.n)?;
    linear_split(rec, x, w, &[y], store)
}

/// `Y_i (+)= X · W_iᵀ (+ bias)` for a matrix `W` stacked by rows from the `W_i`, whose outputs
/// are `ys` (each `[M, n_i]`, `Σ n_i = N`): projections of one input (q, k and v; gate and up)
/// in one launch, by the kernel [`linear`] would pick.
pub fn linear_split(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    ys: &[&Tensor],
    store: Store,
) -> Result<()> {
    if uses_matvec(rec.context(), rows_of(x, w, "linear")?, w) {
        let layout = matvec::Layout::for_device(rec.context());
        matvec::matvec_split(rec, x, w, ys, layout, store)
    } else {
        matmul_split(rec, x, w, ys, store)
    }
}

/// Whether [`linear`] takes `rows` activation rows of `w` through the mat-vec kernel: up to
/// [`matvec::MAX_BATCH`] rows (decode) on every device, and any number of rows of weights the
/// mat-vec reads by blocks in the CPU plan's layouts, where the tiled matmul's shared-memory
/// tiles and barriers cost more than one pass over the weights per 8 rows
/// (docs/benchmarks/NOTES.md).
pub fn uses_matvec(ctx: &Context, rows: usize, w: &Weights) -> bool {
    let layout = matvec::Layout::for_device(ctx);
    rows <= matvec::MAX_BATCH
        || (matches!(layout, matvec::Layout::Rows | matvec::Layout::RowsShared)
            && matvec::blockwise(w.format, w.k, layout))
}

/// Rows of `x` for weights of width `w.k`.
pub(crate) fn rows_of(x: &Tensor, w: &Weights, kernel: &'static str) -> Result<usize> {
    ensure(
        x.dtype() == DType::F32 && !x.is_empty() && x.len().is_multiple_of(w.k),
        kernel,
        || {
            format!(
                "x must be f32 rows of K = {} values, got {:?}{:?}",
                w.k,
                x.dtype(),
                x.shape()
            )
        },
    )?;
    Ok(x.len() / w.k)
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

pub fn shader_variants() -> ShaderVariants {
    let mut variants = Vec::new();
    for w in WeightFormat::all_defines() {
        for vec4 in [false, true] {
            for bias in [false, true] {
                let mut d: Defines = w.clone();
                if vec4 {
                    d = d.flag("X_VEC4");
                }
                if bias {
                    // A residual add comes with a bias in GPT-2's projections.
                    d = d.flag("HAS_BIAS");
                    variants.push((d.clone().flag("ACCUMULATE"), vec!["matmul"]));
                }
                variants.push((d.clone().flag("SPLIT_Y"), vec!["matmul"]));
                let split3 = d.clone().flag("SPLIT_Y").flag("SPLIT_Y3");
                variants.push((split3, vec!["matmul"]));
                variants.push((d, vec!["matmul"]));
            }
        }
    }
    ShaderVariants {
        shader: SHADER,
        variants,
    }
}
