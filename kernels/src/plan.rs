//! The device plan: every per-adapter choice of kernel, layout and read mode, in one place.
//!
//! A device runs one of two kernel families ([`PlanKind`], resolved once when the context is
//! made: the adapter's own, or forced by `KILN_PLAN` / [`kiln_runtime::DeviceOptions::plan`]).
//! CPU adapters (lavapipe, WARP) run their SIMD lanes as a subgroup and pay per load, so their
//! kernels give each invocation whole rows and share loads round the subgroup. GPUs want
//! neighbouring threads on neighbouring bytes and enough workgroups to fill every compute unit.
//! The plan is derived from the context's kind, features and limits alone, so launchers, weight
//! uploads and the model all see the same choices; nothing else asks what the adapter is.

use std::fmt;

use kiln_runtime::{Context, PlanKind};

/// Query rows from which a CPU adapter attends with [`Attend::Rows`]: fewer rows (decode) take
/// [`Attend::Lanes`], which splits long caches over the device.
const CPU_ROWS_FROM: usize = 16;

/// Rows of weights up to which a fold pays ([`DevicePlan::folds_into`]): on the H200 folding the
/// RMSNorm won at 1,536 and 8,192 rows and lost at the 49,152 of an LM head, where 6,144
/// workgroups each take the norm again.
pub const FOLD_ROWS_MAX: usize = 16_384;

/// Workgroups the GPU plan's prefill matmul aims for ([`DevicePlan::matmul_fill`]): two for each
/// of the H200's 132 units, rounded; not yet measured against other counts.
const MATMUL_FILL: usize = 256;

/// How the mat-vec spreads a matrix's rows over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 256-invocation workgroups with several lanes per row, summed in workgroup memory: on a
    /// GPU neighbouring lanes then read neighbouring weights.
    Lanes,
    /// Each invocation owns 4 rows (2 for Q8_0 and int8 blocks; 8 in decode over lane tiles)
    /// over all of K, with no workgroup memory. For CPU adapters, which run a subgroup as the
    /// lanes of a SIMD register and pay per load: each activation load serves 4 rows, and no
    /// barrier turns the workgroup into coroutines.
    Rows,
    /// [`Layout::Rows`], and for weights read by blocks (GGUF blocks, int8 in whole-block groups)
    /// the lanes of a subgroup load one quad of a block's activations each and pass them round
    /// instead of each loading all 32. Needs subgroups of at least 8 invocations. Where
    /// SHADER_INT64 is granted, weights and activations are read as `u64` components, half the
    /// loads.
    RowsShared,
    /// For GPUs: weights read by blocks go 8 rows to a workgroup, each row's invocations
    /// striding along K over its blocks, so that a step's loads are one contiguous run of the
    /// interleaved order (`shaders/matvec_gpu.wgsl`); other formats as [`Layout::Lanes`].
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

    /// Whether its workgroups cooperate, so that they can fold an RMSNorm into the read.
    pub fn folds_norm(self) -> bool {
        matches!(self, Layout::Lanes | Layout::RowGroups)
    }

    /// Whether the device can run this layout.
    pub fn supported(self, ctx: &Context) -> bool {
        self != Layout::RowsShared || ctx.subgroups_of(8)
    }
}

/// How kernels read f16 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum F16Read {
    /// As `f16` values (SHADER_F16).
    Native,
    /// One half at a time out of packed u32 words (any device, any K).
    Packed,
    /// Four halves at a time as one `vec2<u32>` (K a multiple of 4): for CPU adapters, whose
    /// cost is per loaded component.
    Quads,
}

impl F16Read {
    /// Every read mode.
    pub const ALL: [F16Read; 3] = [F16Read::Native, F16Read::Packed, F16Read::Quads];

    /// Whether the device can read rows of `k` halves this way.
    pub fn supported(self, ctx: &Context, k: usize) -> bool {
        match self {
            Self::Native => ctx.features.f16,
            Self::Packed => true,
            Self::Quads => k.is_multiple_of(4),
        }
    }
}

/// How a block format's quants and scales are ordered on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockOrder {
    /// Quants by groups of 8 rows, block by block, the 8 rows' blocks side by side, and the
    /// scales apart in the same order. A GPU's lanes read a row tile's blocks together.
    Interleaved,
    /// Q4_1 and Q8_0 only: by tiles of 64 rows, lane l of a tile owning rows l + 8j (j < 8), the
    /// rows one invocation of the [`Layout::RowsShared`] mat-vec owns in decode, so that it
    /// reads a block of its rows two rows to a `vec4<u64>` and their 8 scales in one more.
    LaneTiles,
}

/// How the argmax's workgroup scans its row (`crate::argmax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// 256 threads, a value at a time (CPU adapters, where a load costs per lane).
    Scalar,
    /// As many threads as the device allows up to 1024, two `vec4` loads in flight per thread
    /// where the row is a multiple of 4 long: on a GPU one workgroup per row is otherwise bound
    /// by the latency of its loads (51 µs for 49,152 logits on an H200).
    Wide,
}

/// Which kernel attends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attend {
    /// A workgroup per (row, head, key split), its threads taking 64 keys at a time (GPUs).
    Keys,
    /// A query row per invocation, the keys shared round a subgroup (`attend_rows`): prefill
    /// on CPU adapters, where every load is one scalar load per SIMD lane. Needs subgroups of
    /// at least 8 and a head size that is a multiple of 8.
    Rows,
    /// A subgroup of 8 per (row, head, key split), each lane taking every 8th key with its own
    /// online softmax, merged round the subgroup (`attend_lanes`): decode on CPU adapters. Each
    /// lane reads its key rows in the widest items the device has (32 bytes with SHADER_INT64),
    /// and there is no workgroup memory or barrier. Needs subgroups of at least 8, an f32 or
    /// f16 cache, and a head size that is a multiple of the values one item holds (8 or 16).
    Lanes,
}

/// The choices one device makes; see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    pub kind: PlanKind,
    /// How the decode mat-vec spreads rows over invocations.
    pub matvec: Layout,
    /// Whether the mat-vec also takes prefill's rows (8 per pass over the weights) of weights
    /// it reads by blocks, where a CPU adapter pays more for the tiled matmul's shared-memory
    /// tiles and barriers.
    pub matvec_prefill: bool,
    /// Whether the mat-vec reads Q4_1 and Q8_0 as `u64` lane tiles (CPU plan with SHADER_INT64
    /// and subgroups of at least 8).
    pub lane_tiles: bool,
    /// Whether f16 rows are read four halves at a time where K allows (CPU plan).
    pub f16_quads: bool,
    /// Whether SHADER_F16 was granted (f16 rows read as `f16`).
    pub f16_native: bool,
    /// Whether the norm (RMSNorm, LayerNorm) or GELU before a projection is folded into the
    /// mat-vec that reads it (`linear::Input`): on GPUs a launch costs more than every workgroup
    /// taking the norm of the activations itself (kiln-bench times both;
    /// docs/benchmarks/NOTES.md), up to [`FOLD_ROWS_MAX`] rows of weights.
    pub fold_norm: bool,
    /// Launches a long recording (a decode step) submits at a time, so that the GPU starts while
    /// the CPU records the rest; `None`: one submit (CPU adapters run on the recording's cores).
    pub submit_every: Option<usize>,
    /// Whether decode's KV store folds into its attention launch
    /// ([`crate::attention::store_and_attend`]): one launch a layer fewer on GPUs.
    pub store_in_attend: bool,
    /// Workgroups the prefill matmul aims to launch: a product of fewer than half as many output
    /// tiles splits its K into more workgroups and adds the parts in a second launch (the
    /// H200 ran a 32-row prefill's products on a handful of its 132 units, each looping over all
    /// of K). `None`: never split (a CPU adapter's few cores are filled by any product).
    pub matmul_fill: Option<usize>,
    /// Keys per split of a long attention range when few (row, head) pairs would otherwise
    /// leave the device idle.
    pub attention_split: usize,
    /// How the greedy argmax scans the vocabulary.
    pub argmax: Scan,
    /// Whether greedy decode runs steps ahead of the host (`Session::step_ahead`): on a CPU
    /// adapter the device is the cores that record, and lavapipe decoded 10–20% slower so.
    pub run_ahead: bool,
    /// Whether the CPU attention kernels can run (subgroups of at least 8).
    cpu_attention: bool,
    /// Values one [`Attend::Lanes`] load reads per f32 cache row: 16 bytes, 32 with SHADER_INT64.
    lanes_item_bytes: usize,
}

impl DevicePlan {
    /// The plan of `ctx`'s device.
    pub fn of(ctx: &Context) -> Self {
        let subgroups8 = ctx.subgroups_of(8);
        match ctx.plan {
            PlanKind::Cpu => Self {
                kind: PlanKind::Cpu,
                matvec: if subgroups8 {
                    Layout::RowsShared
                } else {
                    Layout::Rows
                },
                matvec_prefill: true,
                lane_tiles: subgroups8 && ctx.features.int64,
                f16_quads: true,
                f16_native: ctx.features.f16,
                fold_norm: false,
                submit_every: None,
                store_in_attend: false,
                matmul_fill: None,
                attention_split: 256,
                argmax: Scan::Scalar,
                run_ahead: false,
                cpu_attention: subgroups8,
                lanes_item_bytes: if ctx.features.int64 { 32 } else { 16 },
            },
            PlanKind::Gpu => Self {
                kind: PlanKind::Gpu,
                matvec: Layout::RowGroups,
                matvec_prefill: false,
                lane_tiles: false,
                f16_quads: false,
                f16_native: ctx.features.f16,
                fold_norm: true,
                submit_every: Some(48),
                store_in_attend: true,
                matmul_fill: Some(MATMUL_FILL),
                attention_split: 64,
                argmax: Scan::Wide,
                run_ahead: true,
                cpu_attention: false,
                lanes_item_bytes: if ctx.features.int64 { 32 } else { 16 },
            },
        }
    }

    /// Whether a mat-vec over `rows` rows of weights folds the input's norm or GELU into its
    /// read.
    pub fn folds_into(&self, rows: usize) -> bool {
        self.fold_norm && rows <= FOLD_ROWS_MAX
    }

    /// How the blocks of a format are ordered on the device: lane tiles where the mat-vec reads
    /// them ([`DevicePlan::lane_tiles`]) and the format has them (`tileable`: Q4_1 and Q8_0),
    /// interleaved groups of 8 rows elsewhere.
    pub fn block_order(&self, tileable: bool) -> BlockOrder {
        if self.lane_tiles && tileable {
            BlockOrder::LaneTiles
        } else {
            BlockOrder::Interleaved
        }
    }

    /// How kernels read f16 rows of `k` values.
    pub fn f16_read(&self, k: usize) -> F16Read {
        if self.f16_quads && k.is_multiple_of(4) {
            F16Read::Quads
        } else if self.f16_native {
            F16Read::Native
        } else {
            F16Read::Packed
        }
    }

    /// Which kernel attends `rows` query rows over a cache of heads of `head_dim` values stored
    /// in `value_bytes` each (4, 2, or 1 for int8): on the CPU plan [`Attend::Rows`] for prefill
    /// and [`Attend::Lanes`] for decode where they run, [`Attend::Keys`] otherwise.
    pub fn attend(&self, rows: usize, head_dim: usize, value_bytes: usize) -> Attend {
        let pick = if rows >= CPU_ROWS_FROM {
            Attend::Rows
        } else {
            Attend::Lanes
        };
        if self.kind == PlanKind::Cpu && self.attend_supported(pick, head_dim, value_bytes) {
            pick
        } else {
            Attend::Keys
        }
    }

    /// Whether this device can run `kernel` over a cache as [`DevicePlan::attend`] describes it
    /// (tests pick kernels by hand).
    pub fn attend_supported(&self, kernel: Attend, head_dim: usize, value_bytes: usize) -> bool {
        match kernel {
            Attend::Keys => true,
            Attend::Rows => self.cpu_attention && head_dim.is_multiple_of(8),
            Attend::Lanes => {
                self.cpu_attention
                    && value_bytes > 1
                    && head_dim.is_multiple_of(self.lanes_item_values(value_bytes))
            }
        }
    }

    /// Values of a cache stored in `value_bytes` each that one [`Attend::Lanes`] load reads.
    pub fn lanes_item_values(&self, value_bytes: usize) -> usize {
        self.lanes_item_bytes / value_bytes
    }
}

impl fmt::Display for DevicePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} plan: mat-vec {:?}{}{}, f16 rows {}{}, attention split {} keys{}, argmax {:?}{}{}",
            self.kind,
            self.matvec,
            if self.lane_tiles {
                " (Q4_1/Q8_0 in u64 lane tiles)"
            } else {
                ""
            },
            if self.fold_norm {
                " with RMSNorm folded in"
            } else {
                ""
            },
            if self.f16_quads {
                "by quads"
            } else if self.f16_native {
                "native"
            } else {
                "packed"
            },
            match self.matmul_fill {
                Some(n) => format!(", matmul K split to fill {n} workgroups"),
                None => String::new(),
            },
            self.attention_split,
            if self.store_in_attend {
                " with the KV store folded in"
            } else {
                ""
            },
            self.argmax,
            if self.run_ahead {
                ", greedy decode run ahead"
            } else {
                ""
            },
            match self.submit_every {
                Some(n) => format!(", a submit per {n} launches"),
                None => String::new(),
            }
        )
    }
}
