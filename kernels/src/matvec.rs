//! Matrix-vector product for decode, `Y[M, N] = X[M, K] · W[N, K]ᵀ (+ bias)`:
//! `shaders/matvec.wgsl`. Each launch takes up to [`MAX_BATCH`] activation rows and reads every
//! weight once for all of them, so a batch of B ≤ 8 sequences costs one pass over the weights;
//! more rows take one launch per 8.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Context, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::matmul::{Store, rows_of};
use crate::outputs::{OUTPUTS_WGSL, Outputs};
use crate::plan::DevicePlan;
use crate::weights::{BlockOrder, WEIGHTS_WGSL, WeightFormat, Weights};
use crate::{Result, ShaderVariants, ensure, expect};

const COMMON_WGSL: &str = include_str!("../../shaders/matvec_common.wgsl");

/// The CPU-adapter layouts and [`Layout::Lanes`].
pub const SHADER: Shader = Shader {
    name: "matvec",
    parts: &[
        WEIGHTS_WGSL,
        OUTPUTS_WGSL,
        COMMON_WGSL,
        include_str!("../../shaders/matvec.wgsl"),
    ],
};

/// [`Layout::RowGroups`] over weights read by blocks.
pub const SHADER_GPU: Shader = Shader {
    name: "matvec_gpu",
    parts: &[
        WEIGHTS_WGSL,
        OUTPUTS_WGSL,
        COMMON_WGSL,
        include_str!("../../shaders/matvec_gpu.wgsl"),
    ],
};

/// Most activation rows one launch takes (each row count is its own pipeline variant).
pub const MAX_BATCH: usize = 8;

/// How a launch spreads the matrix's rows over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 256-invocation workgroups with several lanes per row, summed in workgroup memory: on a
    /// GPU neighbouring lanes then read neighbouring weights.
    Lanes,
    /// Each invocation owns 4 rows (2 for Q8_0 and int8 blocks; 8 in decode over lane tiles,
    /// `lane_tile_shape`) over all of K, with no workgroup memory. For CPU adapters: lavapipe runs a subgroup as the lanes of a SIMD register and
    /// splits every storage load into one bounds-checked scalar load per lane, so loads are what
    /// costs. Each activation load then serves 4 rows, and no barrier turns the workgroup into
    /// coroutines.
    Rows,
    /// [`Layout::Rows`], and for weights read by blocks (GGUF blocks, int8 in whole-block groups)
    /// the lanes of a subgroup load one quad of a block's activations each and pass them round
    /// (a register broadcast) instead of each loading all 32. Needs subgroups of at least 8
    /// invocations. Where SHADER_INT64 is granted, weights and activations are read as `u64`
    /// components: lavapipe's cost is per lane and component, so that halves the cost of a
    /// block's loads.
    RowsShared,
    /// For GPUs: weights read by blocks go 8 rows to a 64-invocation workgroup, each
    /// invocation striding along K over one row's blocks, so that a step's loads are one
    /// contiguous run of the interleaved order (`shaders/matvec_gpu.wgsl`); other formats as
    /// [`Layout::Lanes`].
    RowGroups,
}

impl Layout {
    /// Every layout (tests and benchmarks run them side by side).
    pub const ALL: [Layout; 4] = [
        Layout::Lanes,
        Layout::Rows,
        Layout::RowsShared,
        Layout::RowGroups,
    ];

    /// The layout of the device's plan ([`DevicePlan::matvec`]).
    pub fn for_device(ctx: &Context) -> Self {
        DevicePlan::of(ctx).matvec
    }

    /// Whether its workgroups can fold an RMSNorm into the read ([`matvec_rms_split`]).
    pub fn folds_norm(self) -> bool {
        matches!(self, Layout::Lanes | Layout::RowGroups)
    }

    /// Whether the device can run this layout.
    pub fn supported(self, ctx: &Context) -> bool {
        self != Layout::RowsShared || ctx.subgroups_of(8)
    }

    /// (invocations across rows, lanes per row, rows per invocation) of one workgroup, for
    /// weights read by whole blocks or not.
    fn shape(self, format: WeightFormat, blockwise: bool) -> (usize, usize, usize) {
        let wide = blockwise && matches!(format, WeightFormat::Q8_0 | WeightFormat::Int8 { .. });
        match (self, blockwise) {
            // 32 invocations of 4 rows (2 for Q8_0 and int8 blocks, which take twice the
            // registers; measured on lavapipe, 8 is slower): each activation load serves them all.
            // Blocks in lane tiles take their own shapes (`lane_tile_shape`).
            (Layout::Rows | Layout::RowsShared, _) if wide => (32, 1, 2),
            (Layout::Rows | Layout::RowsShared, _) => (32, 1, 4),
            // A lane takes whole 32-value blocks, so fewer lanes per row: K = 576 is 18 blocks.
            (Layout::Lanes, true) => (32, 8, 1),
            (Layout::Lanes | Layout::RowGroups, false) => (8, 32, 1),
            // 8 rows of 8 invocations each; the launcher widens it (`row_group_lanes`).
            (Layout::RowGroups, true) => (8, 8, 1),
        }
    }
}

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
    /// The folded RMSNorm's epsilon (`X_RMS`)
    eps: f32,
    _pad: [u32; 2],
}

/// `x` (`[M, K]`, f32) times the weights into `y` (`[M, N]`), in the device's [`Layout`].
pub fn matvec(rec: &mut Recorder<'_>, x: &Tensor, w: &Weights, y: &Tensor) -> Result<()> {
    matvec_in(rec, x, w, y, Layout::for_device(rec.context()))
}

/// [`matvec`] in a chosen layout (tests and benchmarks compare both on one device).
pub fn matvec_in(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    y: &Tensor,
    layout: Layout,
) -> Result<()> {
    matvec_store(rec, x, w, y, layout, Store::Write)
}

/// [`matvec_in`] storing by `store` (`y +=` with [`Store::Add`]).
pub fn matvec_store(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    y: &Tensor,
    layout: Layout,
    store: Store,
) -> Result<()> {
    let m = rows_of(x, w, "matvec")?;
    expect(y, "matvec", "y", DType::F32, m * w.n)?;
    matvec_split(rec, x, w, &[y], layout, store)
}

/// [`matvec_store`] for a matrix stacked by rows from the projections whose outputs are `ys`
/// (each `[M, n_i]`, `Σ n_i = N`): one launch writes every output its own columns.
pub fn matvec_split(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    ys: &[&Tensor],
    layout: Layout,
    store: Store,
) -> Result<()> {
    let m = rows_of(x, w, "matvec")?;
    let ys = Outputs::split("matvec", ys, m, w.n)?;
    launches(rec, x, Extra::None, w, &ys, (layout, store), m)?;
    crate::outliers::finish(rec, x, w, &ys)
}

/// `Y (+)= (silu(gate) ⊙ up) · Wᵀ (+ bias)`: a gated MLP's down projection that makes its input
/// as it reads it, with no launch (or tensor) of its own for the activation. The weights may not
/// carry outlier columns or an activation probe, which need that input as a tensor.
pub fn matvec_glu_store(
    rec: &mut Recorder<'_>,
    gate: &Tensor,
    up: &Tensor,
    w: &Weights,
    y: &Tensor,
    layout: Layout,
    store: Store,
) -> Result<()> {
    let m = rows_of(gate, w, "matvec")?;
    expect(up, "matvec", "up", DType::F32, m * w.k)?;
    expect(y, "matvec", "y", DType::F32, m * w.n)?;
    let ys = Outputs::split("matvec", &[y], m, w.n)?;
    launches(rec, gate, Extra::Up(up), w, &ys, (layout, store), m)
}

/// `Y (+)= (rmsnorm(X) ⊙ gamma) · Wᵀ (+ bias)` into the outputs `ys` of a stacked matrix (one
/// output for a plain one): the RMSNorm before a projection folded into the mat-vec. Every
/// workgroup first takes the RMS of the activation rows (K values each, cheap beside the
/// weights), so the norm has no launch or tensor of its own. Layouts whose workgroups cooperate
/// ([`Layout::Lanes`], [`Layout::RowGroups`]) only; the weights may not carry outlier columns
/// or an activation probe, which need the normed input as a tensor.
#[allow(clippy::too_many_arguments)]
pub fn matvec_rms_split(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    (gamma, eps): (&Tensor, f32),
    w: &Weights,
    ys: &[&Tensor],
    layout: Layout,
    store: Store,
) -> Result<()> {
    let m = rows_of(x, w, "matvec")?;
    expect(gamma, "matvec", "gamma", DType::F32, w.k)?;
    ensure(layout.folds_norm(), "matvec", || {
        format!("layout {layout:?} cannot fold a norm into its read")
    })?;
    let ys = Outputs::split("matvec", ys, m, w.n)?;
    launches(rec, x, Extra::Rms(gamma, eps), w, &ys, (layout, store), m)
}

/// Every launch of `m` activation rows, [`MAX_BATCH`] at a time. An input made as it is read
/// cannot feed weights with outlier columns or an activation probe, which need it as a tensor.
fn launches(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    input: Extra<'_>,
    w: &Weights,
    ys: &Outputs<'_>,
    how: (Layout, Store),
    m: usize,
) -> Result<()> {
    let layout = how.0;
    ensure(layout.supported(rec.context()), "matvec", || {
        format!("layout {layout:?} needs subgroups of at least 8 invocations")
    })?;
    ensure(
        matches!(input, Extra::None) || w.outliers().is_none() && w.probe().is_none(),
        "matvec",
        || "an input made as it is read cannot feed weights with outlier columns or a probe".into(),
    )?;
    for m0 in (0..m).step_by(MAX_BATCH) {
        launch(rec, x, input, w, ys, how, m0..m.min(m0 + MAX_BATCH))?;
    }
    Ok(())
}

/// What the mat-vec makes of its input `x` as it reads it.
#[derive(Clone, Copy)]
enum Extra<'a> {
    /// x as it is.
    None,
    /// silu(x) ⊙ up.
    Up(&'a Tensor),
    /// rmsnorm(x) ⊙ gamma with this epsilon.
    Rms(&'a Tensor, f32),
}

/// Activation rows `x_rows` (one pass over the weights) of the input `x` made by `input`.
fn launch(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    input: Extra<'_>,
    w: &Weights,
    ys: &Outputs<'_>,
    (layout, store): (Layout, Store),
    x_rows: std::ops::Range<usize>,
) -> Result<()> {
    let (m0, batch) = (x_rows.start, x_rows.len());
    let mut defines = ys
        .defines(store.apply(w.defines()))
        .set("BATCH", batch as u32);
    match input {
        Extra::None => {}
        Extra::Up(_) => defines = defines.flag("X_GLU"),
        Extra::Rms(..) => defines = defines.flag("X_RMS"),
    }
    if w.has_bias() {
        defines = defines.flag("HAS_BIAS");
    }
    if w.k.is_multiple_of(4) {
        defines = defines.flag("X_VEC4");
    }
    let blockwise = blockwise(w.format, w.k, layout);
    if blockwise {
        defines = defines.flag("BLOCKWISE");
    }
    let int64 = rec.context().features.int64;
    let lane_tiles =
        layout == Layout::RowsShared && int64 && w.block_order() == BlockOrder::LaneTiles;
    let row_groups = layout == Layout::RowGroups && blockwise;
    let (rows, lanes, tile) = if lane_tiles {
        let (flag, shape) = lane_tile_shape(batch);
        defines = defines.flag(flag);
        shape
    } else if row_groups {
        (8, row_group_lanes(w.k), 1)
    } else {
        layout.shape(w.format, blockwise)
    };
    defines = defines
        .set("ROWS", rows as u32)
        .set("LANES", lanes as u32)
        .set("ROW_TILE", tile as u32);
    if let Extra::Rms(..) = input {
        defines = defines.set("RMS_WG", (rows * lanes) as u32);
    }
    if matches!(layout, Layout::Rows | Layout::RowsShared) {
        defines = defines.flag("ROWWISE");
    }
    if layout == Layout::RowsShared && blockwise {
        defines = defines.flag("SHARE_X");
        if int64 {
            defines = defines.flag("W_U64");
            if w.k.is_multiple_of(4) {
                defines = defines.flag("X_U64");
            }
        }
    }
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
            eps: match input {
                Extra::Rms(_, eps) => eps,
                _ => 0.0,
            },
            _pad: [0; 2],
        };
        let mut bindings = vec![Binding::new(1, x)];
        bindings.extend(ys.bindings());
        match input {
            Extra::None => {}
            Extra::Up(up) => bindings.push(Binding::new(3, up)),
            Extra::Rms(gamma, _) => bindings.push(Binding::new(6, gamma)),
        }
        bindings.extend(part.bindings());
        let (shader, entry) = if row_groups {
            (&SHADER_GPU, "matvec_gpu")
        } else {
            (&SHADER, "matvec")
        };
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

/// The path and workgroup shape (as [`Layout::shape`]) for blocks in lane tiles
/// ([`BlockOrder::LaneTiles`]) read as `u64` by `batch` activation rows: 8 lanes, each owning
/// its 8 rows of a 64-row tile in decode, and half of them with several rows, whose blocks serve
/// every row (8 rows' sums for each of 8 activation rows would not fit in registers).
fn lane_tile_shape(batch: usize) -> (&'static str, (usize, usize, usize)) {
    if batch == 1 {
        ("LANE_TILE_DOT", (8, 1, 8))
    } else {
        ("LANE_TILE_BATCH", (8, 1, 4))
    }
}

/// Whether the mat-vec reads `format` by whole 32-value blocks with one scale each in `layout`:
/// the GGUF block formats, and outside [`Layout::Lanes`] int8 rows whose groups are whole
/// blocks.
pub(crate) fn blockwise(format: WeightFormat, k: usize, layout: Layout) -> bool {
    match format {
        WeightFormat::Int8 { group, .. } => {
            layout != Layout::Lanes && k.is_multiple_of(32) && group.is_multiple_of(32)
        }
        _ => format.block_bytes().is_some(),
    }
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
                // Formats with the same shapes stand for each other here.
                let int8 = WeightFormat::Int8 {
                    group: 64,
                    zero_point: false,
                };
                let format = [
                    ("W_Q8_0", WeightFormat::Q8_0),
                    ("W_Q4_0", WeightFormat::Q4_0),
                    ("W_Q4_1", WeightFormat::Q4_1),
                    ("W_I8", int8),
                ]
                .into_iter()
                .find(|(flag, _)| w.get(flag) != 0)
                .map_or(WeightFormat::F32, |(_, f)| f);
                // int8 both ways: by blocks (K a multiple of 32) and not.
                let int8_by_rows = (format == int8).then(|| (false, d.clone()));
                let blockwise = blockwise(format, 64, Layout::Rows);
                if blockwise {
                    d = d.flag("BLOCKWISE");
                }
                for (blockwise, d) in std::iter::once((blockwise, d)).chain(int8_by_rows) {
                    for layout in [Layout::Lanes, Layout::Rows, Layout::RowsShared] {
                        if layout == Layout::RowsShared && !blockwise
                            || layout == Layout::Lanes && format == int8 && blockwise
                        {
                            continue;
                        }
                        let (rows, lanes, tile) = layout.shape(format, blockwise);
                        let mut d = d
                            .clone()
                            .set("ROWS", rows as u32)
                            .set("LANES", lanes as u32)
                            .set("ROW_TILE", tile as u32);
                        if layout != Layout::Lanes {
                            d = d.flag("ROWWISE");
                        }
                        if layout == Layout::RowsShared {
                            d = d.flag("SHARE_X");
                            let mut wide = d.clone().flag("W_U64");
                            if vec4 {
                                wide = wide.flag("X_U64");
                            }
                            variants.push((wide.clone().flag("X_GLU"), vec!["matvec"]));
                            let split3 = wide.clone().flag("SPLIT_Y").flag("SPLIT_Y3");
                            variants.push((split3, vec!["matvec"]));
                            variants.push((wide, vec!["matvec"]));
                        }
                        variants.push((d.clone(), vec!["matvec"]));
                        variants.push((d.clone().flag("SPLIT_Y"), vec!["matvec"]));
                        let split3 = d.clone().flag("SPLIT_Y").flag("SPLIT_Y3");
                        variants.push((split3.clone().flag("HAS_BIAS"), vec!["matvec"]));
                        variants.push((split3, vec!["matvec"]));
                        variants.push((d.clone().flag("ACCUMULATE"), vec!["matvec"]));
                        variants.push((d.clone().flag("X_GLU").flag("ACCUMULATE"), vec!["matvec"]));
                        variants.push((d.flag("HAS_BIAS"), vec!["matvec"]));
                    }
                }
            }
        }
    }
    // Lane tiles read as u64 (their other reads are among the formats above).
    let lane_cases = (1..=MAX_BATCH).flat_map(|b| [("W_Q4_1", b), ("W_Q8_0", b)]);
    for (format, batch) in lane_cases {
        let (flag, (rows, lanes, tile)) = lane_tile_shape(batch);
        let d = Defines::new()
            .flag(format)
            .flag("W_LANE_TILES")
            .flag("W_U64")
            .flag("X_U64")
            .flag("X_VEC4")
            .flag("BLOCKWISE")
            .flag("ROWWISE")
            .flag("SHARE_X")
            .flag(flag)
            .set("BATCH", batch as u32)
            .set("ROWS", rows as u32)
            .set("LANES", lanes as u32)
            .set("ROW_TILE", tile as u32);
        variants.push((d.clone().flag("X_GLU").flag("ACCUMULATE"), vec!["matvec"]));
        variants.push((d.clone().flag("SPLIT_Y").flag("SPLIT_Y3"), vec!["matvec"]));
        variants.push((d, vec!["matvec"]));
    }
    ShaderVariants {
        shader: SHADER,
        variants,
    }
}

/// [`Layout::RowGroups`] over every format read by blocks, batch, input and store.
pub fn gpu_shader_variants() -> ShaderVariants {
    let int8 = |zero_point| WeightFormat::Int8 {
        group: 64,
        zero_point,
    };
    let formats = [
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        int8(false),
        int8(true),
    ];
    let mut variants = Vec::new();
    for format in formats {
        let mut w = Defines::new().flag(format.flag());
        if matches!(
            format,
            WeightFormat::Int8 {
                zero_point: true,
                ..
            }
        ) {
            w = w.flag("W_ZP");
        }
        for (batch, lanes) in (1..=MAX_BATCH as u32).flat_map(|b| [8, 16, 32].map(|l| (b, l))) {
            for vec4 in [false, true] {
                let mut d = w
                    .clone()
                    .flag("BLOCKWISE")
                    .set("BATCH", batch)
                    .set("ROWS", 8)
                    .set("LANES", lanes)
                    .set("ROW_TILE", 1);
                if vec4 {
                    d = d.flag("X_VEC4");
                }
                let split = d.clone().flag("SPLIT_Y");
                let split3 = split.clone().flag("SPLIT_Y3");
                let add = d.clone().flag("ACCUMULATE");
                let split3_rms = split3.clone().flag("X_RMS").set("RMS_WG", 8 * lanes);
                for v in [
                    d.clone(),
                    d.clone().flag("HAS_BIAS"),
                    split,
                    split3.clone(),
                    split3.flag("HAS_BIAS"),
                    add.clone(),
                    add.clone().flag("HAS_BIAS"),
                    add.flag("X_GLU"),
                    d.clone().flag("X_GLU"),
                    d.clone().flag("X_RMS").set("RMS_WG", 8 * lanes),
                    split3_rms.clone(),
                ] {
                    variants.push((v, vec!["matvec_gpu"]));
                }
            }
        }
    }
    ShaderVariants {
        shader: SHADER_GPU,
        variants,
    }
}
