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

use crate::attention::{Attend, KvCache, KvFormat};
use crate::matvec::Layout;
use crate::weights::{BlockOrder, F16Read, WeightFormat};

/// Query rows from which a CPU adapter attends with [`Attend::Rows`]: fewer rows (decode) take
/// [`Attend::Lanes`], which splits long caches over the device.
const CPU_ROWS_FROM: usize = 16;

/// The choices one device makes; see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    pub kind: PlanKind,
    /// How the decode mat-vec spreads rows over invocations.
    pub matvec: Layout,
    /// Whether the mat-vec reads Q4_1 and Q8_0 as `u64` lane tiles (CPU plan with SHADER_INT64
    /// and subgroups of at least 8).
    pub lane_tiles: bool,
    /// Whether f16 rows are read four halves at a time where K allows (CPU plan).
    pub f16_quads: bool,
    /// Whether SHADER_F16 was granted (f16 rows read as `f16`).
    pub f16_native: bool,
    /// Whether the RMSNorm before a projection is folded into the mat-vec that reads it
    /// (`matmul::linear_rms_split`): on GPUs a launch costs more than every workgroup taking
    /// the RMS of the activations itself (kiln-bench times both; docs/benchmarks/NOTES.md).
    pub fold_norm: bool,
    /// Launches a long recording (a decode step) submits at a time, so that the GPU starts while
    /// the CPU records the rest; `None`: one submit (CPU adapters run on the recording's cores).
    pub submit_every: Option<usize>,
    /// Keys per split of a long attention range when few (row, head) pairs would otherwise
    /// leave the device idle.
    pub attention_split: usize,
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
                lane_tiles: subgroups8 && ctx.features.int64,
                f16_quads: true,
                f16_native: ctx.features.f16,
                fold_norm: false,
                submit_every: None,
                attention_split: 256,
                cpu_attention: subgroups8,
                lanes_item_bytes: if ctx.features.int64 { 32 } else { 16 },
            },
            PlanKind::Gpu => Self {
                kind: PlanKind::Gpu,
                matvec: Layout::RowGroups,
                lane_tiles: false,
                f16_quads: false,
                f16_native: ctx.features.f16,
                fold_norm: true,
                submit_every: Some(48),
                attention_split: 64,
                cpu_attention: false,
                lanes_item_bytes: if ctx.features.int64 { 32 } else { 16 },
            },
        }
    }

    /// How a block format's quants and scales are ordered on the device: lane tiles where the
    /// mat-vec reads them ([`DevicePlan::lane_tiles`]), interleaved groups of 8 rows elsewhere.
    pub fn block_order(&self, format: WeightFormat) -> BlockOrder {
        if self.lane_tiles && matches!(format, WeightFormat::Q4_1 | WeightFormat::Q8_0) {
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

    /// Which kernel attends `rows` query rows over `cache`: on the CPU plan [`Attend::Rows`] for
    /// prefill and [`Attend::Lanes`] for decode where they run, [`Attend::Keys`] otherwise.
    pub fn attend(&self, cache: &KvCache, rows: usize) -> Attend {
        let pick = if rows >= CPU_ROWS_FROM {
            Attend::Rows
        } else {
            Attend::Lanes
        };
        if self.kind == PlanKind::Cpu && self.attend_supported(pick, cache) {
            pick
        } else {
            Attend::Keys
        }
    }

    /// Whether this device can run `kernel` over `cache` (tests pick kernels by hand).
    pub fn attend_supported(&self, kernel: Attend, cache: &KvCache) -> bool {
        let d = cache.shape.head_dim;
        match kernel {
            Attend::Keys => true,
            Attend::Rows => self.cpu_attention && d.is_multiple_of(8),
            Attend::Lanes => {
                self.cpu_attention
                    && cache.format != KvFormat::Int8
                    && d.is_multiple_of(self.lanes_item_values(cache.format))
            }
        }
    }

    /// Values of the cache one [`Attend::Lanes`] load reads.
    pub fn lanes_item_values(&self, format: KvFormat) -> usize {
        self.lanes_item_bytes / if format == KvFormat::F16 { 2 } else { 4 }
    }
}

impl fmt::Display for DevicePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} plan: mat-vec {:?}{}{}, f16 rows {}, attention split {} keys{}",
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
            self.attention_split,
            match self.submit_every {
                Some(n) => format!(", a submit per {n} launches"),
                None => String::new(),
            }
        )
    }
}
