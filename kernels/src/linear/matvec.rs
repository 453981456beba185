//! Matrix-vector product for decode, `Y[M, N] = X[M, K] · W[N, K]ᵀ (+ bias)`: `shaders/matvec.wgsl`
//! for the CPU-adapter layouts and [`Layout::Lanes`], `shaders/matvec_gpu.wgsl` for
//! [`Layout::RowGroups`]. Each launch takes up to [`MAX_BATCH`] activation rows and reads every
//! weight once for all of them; more rows take one launch per 8. The input may be made as it is
//! read ([`Fold`]): a gated MLP's `silu(gate) ⊙ up`, GPT-2's `gelu(x)`, or the RMSNorm or
//! LayerNorm before a projection.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Defines, Dispatch, Recorder, Shader, Tensor};

use super::outputs::{MAX_OUTPUTS, OUTPUTS_WGSL, Outputs, Store, split_defines};
use crate::error::{Result, ensure};
use crate::plan::{BlockOrder, Layout};
use crate::variants::ShaderVariants;
use crate::weights::WEIGHTS_WGSL;
use crate::weights::device::Weights;
use crate::weights::format::{WeightFormat, WeightRead};

const COMMON_WGSL: &str = include_str!("../../../shaders/matvec_common.wgsl");

/// The CPU-adapter layouts and [`Layout::Lanes`].
pub const SHADER: Shader = Shader {
    name: "matvec",
    parts: &[
        WEIGHTS_WGSL,
        OUTPUTS_WGSL,
        COMMON_WGSL,
        include_str!("../../../shaders/matvec.wgsl"),
    ],
};

/// [`Layout::RowGroups`] over weights read by blocks.
pub const SHADER_GPU: Shader = Shader {
    name: "matvec_gpu",
    parts: &[
        WEIGHTS_WGSL,
        OUTPUTS_WGSL,
        COMMON_WGSL,
        include_str!("../../../shaders/matvec_gpu.wgsl"),
    ],
};

/// Most activation rows one launch takes (each row count is its own pipeline variant).
pub const MAX_BATCH: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    /// Rows of this weight part (output columns it writes)
    n: u32,
    k: u32,
    /// int8 group size
    g: u32,
    groups: u32,
    /// Columns of the whole product (all of the matrix's rows; y's row stride when unsplit)
    ldy: u32,
    /// First output column of this part
    n0: u32,
    /// First activation row of this launch
    m0: u32,
    /// First columns of outputs 1 and 2 of a stacked matrix
    cut1: u32,
    cut2: u32,
    /// The folded norm's epsilon (`X_RMS`, `X_LN`)
    eps: f32,
    _pad: [u32; 2],
}

/// What the mat-vec makes of its input `x` as it reads it.
#[derive(Clone, Copy)]
pub(super) enum Fold<'a> {
    /// x as it is.
    None,
    /// silu(x) ⊙ up.
    Glu(&'a Tensor),
    /// rmsnorm(x) ⊙ gamma with this epsilon. Layouts whose workgroups cooperate only
    /// ([`Layout::folds_norm`]): every workgroup first takes the RMS of its activation rows.
    Rms(&'a Tensor, f32),
    /// layernorm(x) ⊙ gamma + beta with this epsilon, as [`Fold::Rms`] takes it.
    Ln(&'a Tensor, &'a Tensor, f32),
    /// gelu(x) (tanh form). Cooperating layouts only, as on the CPU plan's layouts each
    /// invocation would take the tanh of every activation again for its few rows.
    Gelu,
}

impl Fold<'_> {
    fn kind(self) -> FoldKind {
        match self {
            Fold::None => FoldKind::None,
            Fold::Glu(_) => FoldKind::Glu,
            Fold::Rms(..) => FoldKind::Rms,
            Fold::Ln(..) => FoldKind::Ln,
            Fold::Gelu => FoldKind::Gelu,
        }
    }
}

/// The variant's part of a [`Fold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FoldKind {
    None,
    Glu,
    Rms,
    Ln,
    Gelu,
}

impl FoldKind {
    const ALL: [FoldKind; 5] = [
        FoldKind::None,
        FoldKind::Glu,
        FoldKind::Rms,
        FoldKind::Ln,
        FoldKind::Gelu,
    ];

    /// Whether only layouts whose workgroups cooperate take it ([`Layout::folds_norm`]).
    fn cooperative(self) -> bool {
        matches!(self, FoldKind::Rms | FoldKind::Ln | FoldKind::Gelu)
    }

    fn norm(self) -> bool {
        matches!(self, FoldKind::Rms | FoldKind::Ln)
    }
}

/// Everything that selects a mat-vec variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub read: WeightRead,
    pub layout: Layout,
    pub batch: usize,
    pub fold: FoldKind,
    pub store: Store,
    pub outputs: usize,
    pub bias: bool,
    /// The weights are read by whole 32-value blocks with one scale each ([`blockwise`]).
    pub blockwise: bool,
    /// Weights and activations are read as `u64` ([`Layout::RowsShared`] over blocks, where
    /// SHADER_INT64 is granted).
    pub int64: bool,
    /// Invocations per row of [`Layout::RowGroups`] over blocks ([`row_group_lanes`]); 0
    /// elsewhere.
    pub row_lanes: usize,
}

impl Variant {
    /// Q4_1 and Q8_0 in lane tiles read as `u64`: 8 lanes, each owning its 8 rows of a 64-row
    /// tile in decode, and half of them with several rows, whose blocks serve every row.
    fn lane_tiles(self) -> bool {
        self.int64 && self.read.order == BlockOrder::LaneTiles
    }

    /// (invocations across rows, lanes per row, rows per invocation) of one workgroup.
    fn shape(self) -> (usize, usize, usize) {
        let wide = self.blockwise
            && matches!(
                self.read.format,
                WeightFormat::Q8_0 | WeightFormat::Int8 { .. }
            );
        match (self.layout, self.blockwise) {
            // 8 rows for a single activation row; 8 rows' sums for each of 8 rows would not fit
            // in registers.
            (Layout::RowsShared, true) if self.lane_tiles() && self.batch == 1 => (8, 1, 8),
            (Layout::RowsShared, true) if self.lane_tiles() => (8, 1, 4),
            // Each activation load serves every row an invocation owns; Q8_0 and int8 blocks
            // take twice the registers of Q4 ones.
            (Layout::Rows | Layout::RowsShared, _) if wide => (32, 1, 2),
            (Layout::Rows | Layout::RowsShared, _) => (32, 1, 4),
            // A lane takes whole 32-value blocks, so fewer lanes per row: K = 576 is 18 blocks.
            (Layout::Lanes, true) => (32, 8, 1),
            (Layout::Lanes | Layout::RowGroups, false) => (8, 32, 1),
            (Layout::RowGroups, true) => (8, self.row_lanes, 1),
        }
    }

    /// The shader and entry point.
    fn kernel(self) -> (&'static Shader, &'static str) {
        if self.layout == Layout::RowGroups && self.blockwise {
            (&SHADER_GPU, "matvec_gpu")
        } else {
            (&SHADER, "matvec")
        }
    }

    /// The variant's defines: the one place they are made.
    pub fn defines(self) -> Defines {
        let mut d =
            split_defines(self.read.defines(), self.outputs).set("BATCH", self.batch as u32);
        let mut flag = |on: bool, name: &'static str| {
            if on {
                d = std::mem::take(&mut d).flag(name);
            }
        };
        flag(self.store == Store::Add, "ACCUMULATE");
        flag(self.fold == FoldKind::Glu, "X_GLU");
        flag(self.fold == FoldKind::Rms, "X_RMS");
        flag(self.fold == FoldKind::Ln, "X_LN");
        flag(self.fold == FoldKind::Gelu, "X_GELU");
        flag(self.bias, "HAS_BIAS");
        flag(self.read.vec4, "X_VEC4");
        flag(self.blockwise, "BLOCKWISE");
        flag(self.lane_tiles() && self.batch == 1, "LANE_TILE_DOT");
        flag(self.lane_tiles() && self.batch > 1, "LANE_TILE_BATCH");
        let rowwise = matches!(self.layout, Layout::Rows | Layout::RowsShared);
        flag(rowwise, "ROWWISE");
        let shared = self.layout == Layout::RowsShared && self.blockwise;
        flag(shared, "SHARE_X");
        flag(self.int64, "W_U64");
        flag(self.int64 && self.read.vec4, "X_U64");
        let (rows, lanes, tile) = self.shape();
        d = d
            .set("ROWS", rows as u32)
            .set("LANES", lanes as u32)
            .set("ROW_TILE", tile as u32);
        if self.fold.norm() {
            d = d.set("RMS_WG", (rows * lanes) as u32);
        }
        d
    }

    /// Whether a launch can ask for this variant.
    fn valid(self) -> bool {
        let format = self.read.format;
        let blockwise_ok = match format {
            // By blocks when K is a multiple of 32 (so of 4) outside the Lanes layout.
            WeightFormat::Int8 { .. } => {
                !self.blockwise || (self.layout != Layout::Lanes && self.read.vec4)
            }
            _ => self.blockwise == format.split_blocks(),
        };
        let int64_ok = !self.int64 || (self.layout == Layout::RowsShared && self.blockwise);
        let lanes_ok = if self.layout == Layout::RowGroups && self.blockwise {
            [8, 16, 32].contains(&self.row_lanes)
        } else {
            self.row_lanes == 0
        };
        let fold_ok = !self.fold.cooperative() || self.layout.folds_norm();
        blockwise_ok && int64_ok && lanes_ok && fold_ok
    }

    /// Every variant a launch can ask for.
    pub fn all() -> Vec<Variant> {
        let mut all = Vec::new();
        for read in WeightRead::all() {
            for layout in Layout::ALL {
                for (blockwise, int64, row_lanes) in [false, true]
                    .into_iter()
                    .flat_map(|b| [false, true].map(|i| (b, i)))
                    .flat_map(|(b, i)| [0, 8, 16, 32].map(|l| (b, i, l)))
                {
                    for (batch, fold) in (1..=MAX_BATCH).flat_map(|b| FoldKind::ALL.map(|f| (b, f)))
                    {
                        for outputs in 1..=MAX_OUTPUTS {
                            for (store, bias) in [Store::Write, Store::Add]
                                .into_iter()
                                .flat_map(|s| [false, true].map(|b| (s, b)))
                            {
                                let v = Variant {
                                    read,
                                    layout,
                                    batch,
                                    fold,
                                    store,
                                    outputs,
                                    bias,
                                    blockwise,
                                    int64,
                                    row_lanes,
                                };
                                if v.valid() {
                                    all.push(v);
                                }
                            }
                        }
                    }
                }
            }
        }
        all
    }
}

/// Every launch of the `m` rows of input `x` (made by `fold`) times `w` into `ys`, in `layout`,
/// [`MAX_BATCH`] rows at a time.
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    fold: Fold<'_>,
    w: &Weights,
    ys: &Outputs<'_>,
    (layout, store): (Layout, Store),
    m: usize,
) -> Result<()> {
    ensure(layout.supported(rec.context()), "matvec", || {
        format!("layout {layout:?} needs subgroups of at least 8 invocations")
    })?;
    ensure(
        !fold.kind().cooperative() || layout.folds_norm(),
        "matvec",
        || format!("layout {layout:?} cannot fold a norm or GELU into its read"),
    )?;
    let blockwise = blockwise(w.format, w.k, layout);
    let int64 = rec.context().features.int64 && layout == Layout::RowsShared && blockwise;
    for m0 in (0..m).step_by(MAX_BATCH) {
        let variant = Variant {
            read: w.read(),
            layout,
            batch: MAX_BATCH.min(m - m0),
            fold: fold.kind(),
            store,
            outputs: ys.count(),
            bias: w.has_bias(),
            blockwise,
            int64,
            row_lanes: if layout == Layout::RowGroups && blockwise {
                row_group_lanes(w.k)
            } else {
                0
            },
        };
        launch(rec, x, fold, w, ys, variant, m0)?;
    }
    Ok(())
}

/// One pass over the weights for activation rows `m0 .. m0 + variant.batch`.
fn launch(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    fold: Fold<'_>,
    w: &Weights,
    ys: &Outputs<'_>,
    variant: Variant,
    m0: usize,
) -> Result<()> {
    let defines = variant.defines();
    let (shader, entry) = variant.kernel();
    let (rows, _, tile) = variant.shape();
    let (cut1, cut2) = ys.cuts();
    for part in w.parts() {
        let groups = part.n.div_ceil(rows * tile);
        let params = Params {
            n: part.n as u32,
            k: w.k as u32,
            g: w.group(),
            groups: groups as u32,
            ldy: w.n as u32,
            n0: part.row0 as u32,
            m0: m0 as u32,
            cut1,
            cut2,
            eps: match fold {
                Fold::Rms(_, eps) | Fold::Ln(_, _, eps) => eps,
                _ => 0.0,
            },
            _pad: [0; 2],
        };
        let mut bindings = vec![Binding::new(1, x)];
        bindings.extend(ys.bindings());
        match fold {
            Fold::None | Fold::Gelu => {}
            Fold::Glu(up) => bindings.push(Binding::new(3, up)),
            Fold::Rms(gamma, _) => bindings.push(Binding::new(6, gamma)),
            Fold::Ln(gamma, beta, _) => {
                bindings.extend([Binding::new(6, gamma), Binding::new(7, beta)])
            }
        }
        bindings.extend(part.bindings());
        rec.dispatch(&Dispatch {
            shader,
            entry,
            defines: &defines,
            params: bytemuck::bytes_of(&params),
            bindings: &bindings,
            workgroups: groups as u32,
        })?;
    }
    Ok(())
}

/// Invocations per row of [`Layout::RowGroups`] over rows of `k` values: a power of two from 8
/// to 32, so that each takes one or two of the row's blocks (K = 576 is 18 blocks: 32 lanes).
fn row_group_lanes(k: usize) -> usize {
    (k / 32).next_power_of_two().clamp(8, 32)
}

/// Whether the mat-vec reads `format` by whole 32-value blocks with one scale each in `layout`:
/// the GGUF block formats, and outside [`Layout::Lanes`] int8 rows whose groups are whole
/// blocks.
pub(super) fn blockwise(format: WeightFormat, k: usize, layout: Layout) -> bool {
    match format {
        WeightFormat::Int8 { group, .. } => {
            layout != Layout::Lanes && k.is_multiple_of(32) && group.is_multiple_of(32)
        }
        _ => format.split_blocks(),
    }
}

pub(super) fn shader_variants() -> Vec<ShaderVariants> {
    let (mut cpu, mut gpu) = (Vec::new(), Vec::new());
    for v in Variant::all() {
        let (shader, entry) = v.kernel();
        let list = if shader.name == SHADER_GPU.name {
            &mut gpu
        } else {
            &mut cpu
        };
        list.push((v.defines(), vec![entry]));
    }
    vec![
        ShaderVariants {
            shader: SHADER,
            variants: cpu,
        },
        ShaderVariants {
            shader: SHADER_GPU,
            variants: gpu,
        },
    ]
}
