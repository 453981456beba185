//! Kernel-by-kernel profiles of recorded work: where a step's time goes.
//!
//! While a profile is open on a [`Context`] ([`Context::profile_begin`]), every recorder brackets
//! each dispatch with GPU timestamps and, at submit, waits for them and adds the dispatch's time
//! to its kernel variant. Each dispatch then runs in a pass of its own and every submit waits, so
//! profiled work runs slower end to end than the same work unprofiled: read the shares, and
//! compare the sum with an unprofiled timing of the same step. Needs timestamp queries inside
//! encoders ([`crate::GrantedFeatures::timestamps`]).

use crate::device::Context;
use crate::error::{Result, RuntimeError};
use crate::shader::Defines;
use crate::tensor::Readback;

/// Timestamps one recorder can write, [`PER_DISPATCH`] per dispatch. Dispatches past this many
/// are left out of the profile and counted in [`Profile::unmeasured`].
const MARKS: u32 = 4095;

/// Marks around a dispatch: before it, after it, and at once again. The last interval holds
/// nothing but what writing a timestamp costs, which some drivers pay inside the interval
/// before it (lavapipe flushes its context for every timestamp, tens of µs): it is taken off.
const PER_DISPATCH: u32 = 3;

/// One kernel variant's share of the profiled work.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The shader and entry point, `shader:entry`.
    pub kernel: String,
    /// The pipeline variant: its defines, `NAME=value,...`.
    pub variant: String,
    pub launches: usize,
    /// GPU time of all its launches.
    pub seconds: f64,
}

/// Everything measured between [`Context::profile_begin`] and [`Context::profile_end`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// In order of first launch.
    pub kernels: Vec<KernelTime>,
    /// Dispatches that found no timestamp left in their recorder.
    pub unmeasured: usize,
}

impl Profile {
    pub fn seconds(&self) -> f64 {
        self.kernels.iter().map(|k| k.seconds).sum()
    }

    pub fn launches(&self) -> usize {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    fn add(&mut self, kernel: String, variant: String, seconds: f64) {
        match self
            .kernels
            .iter_mut()
            .find(|k| k.kernel == kernel && k.variant == variant)
        {
            Some(k) => {
                k.launches += 1;
                k.seconds += seconds;
            }
            None => self.kernels.push(KernelTime {
                kernel,
                variant,
                launches: 1,
                seconds,
            }),
        }
    }
}

impl Context {
    /// Opens a profile: from now on recorders time each dispatch. An open profile is restarted.
    pub fn profile_begin(&self) -> Result<()> {
        if !self.features.timestamps {
            return Err(RuntimeError::Device(format!(
                "profiling needs timestamp queries inside encoders, which {} does not grant",
                self.info.name
            )));
        }
        *self.profile.lock().unwrap_or_else(|e| e.into_inner()) = Some(Profile::default());
        Ok(())
    }

    /// Closes the profile and returns it (empty when none was open). Recorders made while it
    /// was open and submitted after this add nothing.
    pub fn profile_end(&self) -> Profile {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }

    pub(crate) fn profiling(&self) -> bool {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// One recorder's timestamps: a query set, its resolve and staging buffers, and what each pair
/// of marks brackets.
pub(crate) struct Marks {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: Readback,
    labels: Vec<(String, String)>,
    unmeasured: usize,
}

impl Marks {
    pub(crate) fn new(ctx: &Context) -> Result<Self> {
        let bytes = 8 * MARKS as u64;
        Ok(Self {
            set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kiln profile"),
                ty: wgpu::QueryType::Timestamp,
                count: MARKS,
            }),
            resolve: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            staging: ctx.readback(bytes)?,
            labels: Vec::new(),
            unmeasured: 0,
        })
    }

    /// The index of the mark before a dispatch of `shader:entry` with `defines`, or None when
    /// the set is full.
    pub(crate) fn open(&mut self, shader: &str, entry: &str, defines: &Defines) -> Option<u32> {
        if PER_DISPATCH * (self.labels.len() as u32 + 1) > MARKS {
            self.unmeasured += 1;
            return None;
        }
        self.labels
            .push((format!("{shader}:{entry}"), defines.to_string()));
        Some(PER_DISPATCH * (self.labels.len() as u32 - 1))
    }

    pub(crate) fn set(&self) -> &wgpu::QuerySet {
        &self.set
    }

    /// Records the copy of the marks into staging (before the submit).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = PER_DISPATCH * self.labels.len() as u32;
        if n > 0 {
            encoder.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging.buffer, 0, 8 * n as u64);
        }
    }

    /// Waits for the submitted marks and adds them to the context's open profile.
    pub(crate) fn collect(self, ctx: &Context) -> Result<()> {
        let ticks: Vec<u64> = if self.labels.is_empty() {
            Vec::new()
        } else {
            ctx.map_read(&self.staging, PER_DISPATCH as usize * self.labels.len())?
        };
        let period = ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let mut open = ctx.profile.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(profile) = open.as_mut() {
            for ((kernel, variant), t) in self
                .labels
                .into_iter()
                .zip(ticks.chunks(PER_DISPATCH as usize))
            {
                let run = t[1].saturating_sub(t[0]);
                let mark = t[2].saturating_sub(t[1]);
                profile.add(kernel, variant, run.saturating_sub(mark) as f64 * period);
            }
            profile.unmeasured += self.unmeasured;
        }
        Ok(())
    }
}
