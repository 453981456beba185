//! `Y = X · Wᵀ (+ bias)` for every weight format, through one entry: [`linear`] takes the input
//! ([`Input`]: rows, or rows it makes first, a gated MLP's product, GPT-2's GELU or a normed
//! residual), the
//! weights and where the product goes ([`Output`]: written or added, to one output or cut over
//! the outputs of a stacked matrix), and picks the kernel itself ([`Kernel::pick`]): the tiled
//! matmul for prefill, the mat-vec for decode. Outlier columns and the output cutting are its
//! private parts.

mod matmul;
mod matvec;
mod outliers;
mod outputs;

use kiln_runtime::{Context, DType, Recorder, Tensor};

pub use self::matmul::{MAX_SPLITS, TILE, matmul_ref};
use self::matvec::Fold;
pub use self::matvec::MAX_BATCH;
use self::outputs::Outputs;
pub use self::outputs::{MAX_OUTPUTS, Store, split_ref};
use crate::elementwise::{gelu, swiglu};
use crate::error::{Result, ensure, expect};
use crate::norm::{layer_norm, rms_norm};
use crate::plan::DevicePlan;
pub use crate::plan::Layout;
use crate::variants::ShaderVariants;
use crate::weights::device::Weights;

/// What a product's rows are.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Activation rows, `[M, K]` f32.
    Rows(&'a Tensor),
    /// `silu(gate) ⊙ up` (each `[M, K]`): a gated MLP's down projection. The mat-vec makes it as
    /// it reads; otherwise it is written to `act` (`[M, K]`) first.
    SwiGlu {
        gate: &'a Tensor,
        up: &'a Tensor,
        act: &'a Tensor,
    },
    /// `rmsnorm(x) ⊙ gamma` (`x` `[M, K]`, `gamma` `[K]`): the norm before a projection. Folded
    /// into the mat-vec where the device plan does that; otherwise written to `normed` first.
    RmsNorm {
        x: &'a Tensor,
        gamma: &'a Tensor,
        eps: f32,
        normed: &'a Tensor,
    },
    /// `layernorm(x) ⊙ gamma + beta` (`gamma`, `beta` `[K]`), as [`Input::RmsNorm`].
    LayerNorm {
        x: &'a Tensor,
        gamma: &'a Tensor,
        beta: &'a Tensor,
        eps: f32,
        normed: &'a Tensor,
    },
    /// `gelu(x)` (tanh form, `[M, K]`): GPT-2's MLP activation before its down projection.
    /// Folded into the mat-vec where the plan folds norms; otherwise written to `act` first.
    Gelu { x: &'a Tensor, act: &'a Tensor },
}

impl<'a> Input<'a> {
    /// The tensor whose rows the product reads or makes its input from (`[M, K]`).
    pub fn source(&self) -> &'a Tensor {
        match *self {
            Input::Rows(x) => x,
            Input::SwiGlu { gate, .. } => gate,
            Input::RmsNorm { x, .. } | Input::LayerNorm { x, .. } | Input::Gelu { x, .. } => x,
        }
    }

    /// Rows of the input for weights of width `k`, after checking every tensor's size.
    fn rows(&self, k: usize) -> Result<usize> {
        let x = self.source();
        ensure(
            x.dtype() == DType::F32 && !x.is_empty() && x.len().is_multiple_of(k),
            "linear",
            || {
                format!(
                    "x must be f32 rows of K = {k} values, got {:?}{:?}",
                    x.dtype(),
                    x.shape()
                )
            },
        )?;
        let m = x.len() / k;
        match *self {
            Input::Rows(_) => {}
            Input::SwiGlu { up, act, .. } => {
                expect(up, "linear", "up", DType::F32, m * k)?;
                expect(act, "linear", "act", DType::F32, m * k)?;
            }
            Input::RmsNorm { gamma, normed, .. } => {
                expect(gamma, "linear", "gamma", DType::F32, k)?;
                expect(normed, "linear", "normed", DType::F32, m * k)?;
            }
            Input::LayerNorm {
                gamma,
                beta,
                normed,
                ..
            } => {
                expect(gamma, "linear", "gamma", DType::F32, k)?;
                expect(beta, "linear", "beta", DType::F32, k)?;
                expect(normed, "linear", "normed", DType::F32, m * k)?;
            }
            Input::Gelu { act, .. } => expect(act, "linear", "act", DType::F32, m * k)?,
        }
        Ok(m)
    }

    /// Records what makes the input as a tensor (nothing for [`Input::Rows`]) and returns it:
    /// for kernels that cannot make it as they read, and for callers that need it (a probe).
    pub fn make(&self, rec: &mut Recorder<'_>) -> Result<&'a Tensor> {
        match *self {
            Input::Rows(x) => Ok(x),
            Input::SwiGlu { gate, up, act } => {
                swiglu(rec, gate, up, act)?;
                Ok(act)
            }
            Input::RmsNorm {
                x,
                gamma,
                eps,
                normed,
            } => {
                rms_norm(rec, x, gamma, normed, eps)?;
                Ok(normed)
            }
            Input::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                normed,
            } => {
                layer_norm(rec, x, gamma, beta, normed, eps)?;
                Ok(normed)
            }
            Input::Gelu { x, act } => {
                gelu(rec, x, act)?;
                Ok(act)
            }
        }
    }
}

/// Where a product goes: `ys` (each `[M, n_i]`, `Σ n_i = N`) are the outputs of a matrix
/// stacked by rows from the projections of one input (q, k and v; gate and up), one output for
/// a plain matrix.
#[derive(Clone)]
pub struct Output<'a> {
    ys: Vec<&'a Tensor>,
    store: Store,
}

impl<'a> Output<'a> {
    /// `y = X · Wᵀ (+ bias)`
    pub fn write(y: &'a Tensor) -> Self {
        Self::split(&[y], Store::Write)
    }

    /// `y += X · Wᵀ (+ bias)`: a residual add in the same launch.
    pub fn add(y: &'a Tensor) -> Self {
        Self::split(&[y], Store::Add)
    }

    /// The outputs `ys` of a stacked matrix (1 to [`MAX_OUTPUTS`]), each stored by `store`.
    pub fn split(ys: &[&'a Tensor], store: Store) -> Self {
        Self {
            ys: ys.to_vec(),
            store,
        }
    }
}

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The tiled matmul; a made input is written to its tensor first. K is split where the
    /// plan says ([`DevicePlan::matmul_fill`]).
    Matmul,
    /// The tiled matmul with K in this many splits (1: never split; at most
    /// [`MAX_SPLITS`], and no split shorter than 64): tests and benchmarks.
    MatmulSplitK(usize),
    /// The mat-vec in `layout`. A gated MLP's input is made as it reads, and a norm or GELU
    /// where `fold_norm` and the layout can ([`Layout::folds_norm`]).
    Matvec { layout: Layout, fold_norm: bool },
}

impl Kernel {
    /// The kernel [`linear`] runs for `rows` rows of `w` on this device: the mat-vec for up to
    /// [`MAX_BATCH`] rows (decode), and for any number where the plan takes prefill through the
    /// mat-vec ([`DevicePlan::matvec_prefill`]) and it reads `w` by blocks; else the matmul.
    /// The mat-vec folds its input where the plan does at `w`'s rows ([`DevicePlan::folds_into`]).
    pub fn pick(ctx: &Context, rows: usize, w: &Weights) -> Kernel {
        let plan = DevicePlan::of(ctx);
        let layout = plan.matvec;
        let prefill = plan.matvec_prefill && matvec::blockwise(w.format, w.k, layout);
        if rows <= MAX_BATCH || prefill {
            Kernel::Matvec {
                layout,
                fold_norm: plan.folds_into(w.n),
            }
        } else {
            Kernel::Matmul
        }
    }
}

/// Splits of K [`Kernel::Matmul`] takes for `rows` rows of `w` on this device (1: unsplit).
pub fn matmul_splits(ctx: &Context, rows: usize, w: &Weights) -> usize {
    matmul::splits(&DevicePlan::of(ctx), rows, w)
}

/// `Y (+)= input · Wᵀ (+ bias)` into `out`, by the kernel [`Kernel::pick`] chooses.
pub fn linear(
    rec: &mut Recorder<'_>,
    input: Input<'_>,
    w: &Weights,
    out: Output<'_>,
) -> Result<()> {
    let rows = input.rows(w.k)?;
    let kernel = Kernel::pick(rec.context(), rows, w);
    linear_by(rec, input, w, out, kernel)
}

/// [`linear`] by a chosen kernel: tests and benchmarks compare kernels on one device.
pub fn linear_by(
    rec: &mut Recorder<'_>,
    input: Input<'_>,
    w: &Weights,
    out: Output<'_>,
    kernel: Kernel,
) -> Result<()> {
    let m = input.rows(w.k)?;
    let ys = Outputs::split("linear", &out.ys, m, w.n)?;
    // An input made as it is read cannot feed the outlier columns, which read it again.
    let plain = w.outliers().is_none();
    let fold = match (kernel, input) {
        (Kernel::Matvec { .. }, Input::SwiGlu { gate, up, .. }) if plain => {
            Some((gate, Fold::Glu(up)))
        }
        (Kernel::Matvec { layout, fold_norm }, Input::RmsNorm { x, gamma, eps, .. })
            if plain && fold_norm && layout.folds_norm() =>
        {
            Some((x, Fold::Rms(gamma, eps)))
        }
        (
            Kernel::Matvec { layout, fold_norm },
            Input::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                ..
            },
        ) if plain && fold_norm && layout.folds_norm() && bindings_fit(rec, w, &ys, 2) => {
            Some((x, Fold::Ln(gamma, beta, eps)))
        }
        (Kernel::Matvec { layout, fold_norm }, Input::Gelu { x, .. })
            if plain && fold_norm && layout.folds_norm() =>
        {
            Some((x, Fold::Gelu))
        }
        _ => None,
    };
    let (x, fold) = match fold {
        Some(folded) => folded,
        None => (input.make(rec)?, Fold::None),
    };
    match kernel {
        Kernel::Matmul => matmul::record(rec, x, w, &ys, out.store, m, None)?,
        Kernel::MatmulSplitK(splits) => matmul::record(rec, x, w, &ys, out.store, m, Some(splits))?,
        Kernel::Matvec { layout, .. } => {
            matvec::record(rec, x, fold, w, &ys, (layout, out.store), m)?
        }
    }
    if let Some(o) = w.outliers() {
        outliers::record(rec, x, (m, w.n, w.k), o, &ys)?;
    }
    Ok(())
}

/// Whether a mat-vec of `w` into `ys` with `extra` more input bindings stays within the device's
/// storage buffers per shader stage (a LayerNorm's gamma and beta beside a stacked q, k, v with
/// bias and scales take 9, over WebGPU's default of 8).
fn bindings_fit(rec: &Recorder<'_>, w: &Weights, ys: &Outputs<'_>, extra: usize) -> bool {
    let weights = w.parts().first().map_or(1, |p| p.bindings().len());
    let total = 1 + ys.count() + extra + weights;
    total as u32 <= rec.context().limits.max_storage_buffers_per_shader_stage
}

/// The shader families of the linear kernels and every variant each can launch.
pub fn shader_variants() -> Vec<ShaderVariants> {
    let mut all = matmul::shader_variants();
    all.push(outliers::shader_variants());
    all.extend(matvec::shader_variants());
    all
}
