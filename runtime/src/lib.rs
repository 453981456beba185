//! Kiln runtime: everything between a kernel launcher and wgpu.
//!
//! - [`device`]: the [`Context`] every launch goes through; adapter selection (backend, name
//!   filter, software fallback), real limits, the optional features that were granted, and the
//!   kernel family the device runs ([`PlanKind`]).
//! - [`tensor`]: typed storage buffers with upload / download.
//! - [`shader`]: WGSL sources and the small `#if` preprocessor that makes variants.
//! - [`pipeline`]: the pipeline cache keyed by shader, variant and entry point, and the driver's
//!   compiled pipelines on disk between runs (`disk_cache`).
//! - [`recorder`]: the one place that records bind groups and dispatches, many per submit.
//! - [`timing`]: GPU time of recorded work for benchmarks (timestamp queries, or submit + wait).
//! - [`profile`]: kernel-by-kernel GPU time of everything recorded while a profile is open.
//!
//! A kernel crate describes *what* to run (a [`Dispatch`]); this crate decides *how*.

mod adapter;
pub mod bind_cache;
pub mod device;
mod disk_cache;
pub mod error;
mod layout;
pub mod pipeline;
pub mod profile;
pub mod recorder;
pub mod shader;
pub mod tensor;
pub mod testing;
pub mod timing;

pub use bind_cache::BindGroupCache;
pub use device::{Context, DeviceOptions, GrantedFeatures, PlanKind};
pub use disk_cache::cache_dir;
pub use error::{Result, RuntimeError};
pub use pipeline::PipelineKey;
pub use profile::{KernelTime, Profile};
pub use recorder::{Binding, Dispatch, Recorder};
pub use shader::{Defines, Shader};
pub use tensor::{DType, Readback, Submitted, Tensor};
pub use timing::{Clock, Stopwatch, Timings};
pub use wgpu;
