//! Kernel-by-kernel profiles of recorded work: where a step's time goes.
//!
//! While a profile is open on a [`Context`] ([`Context::profile_begin`]), every recorder made
//! from it writes three GPU timestamps for each dispatch: before it, after it, and at once
//! again. The last interval holds only what writing a timestamp costs, which some drivers pay
//! inside the interval before it (lavapipe flushes its context for each, tens of µs), and is
//! taken off. At submit the recorder waits for its timestamps and adds each dispatch's time to
//! its kernel variant. The timestamps go inside the compute pass where the device grants
//! TIMESTAMP_QUERY_INSIDE_PASSES (Vulkan, DX12); elsewhere each dispatch runs in a pass of its
//! own. Profiled work runs slower end to end than the same work unprofiled: read the shares,
//! and compare the sum with an unprofiled timing of the same step. Needs timestamp queries
//! inside encoders ([`crate::GrantedFeatures::timestamps`]).
//!
//! A recorder is timed if a profile was open when it was made, and adds to the profile open
//! when it is submitted, if any: one made before [`Context::profile_begin`] is not timed, one
//! dropped without a submit adds nothing, and one submitted after [`Context::profile_end`] adds
//! nothing (or to the next profile, if one was opened since). [`Context::time`] records
//! unprofiled. A recorder whose timestamps cannot be read back counts its dispatches in
//! [`Profile::unmeasured`] rather than failing its submit.
//!
//! [`Context`]: crate::Context
//! [`Context::profile_begin`]: crate::Context::profile_begin
//! [`Context::profile_end`]: crate::Context::profile_end
//! [`Context::time`]: crate::Context::time

use std::sync::Mutex;

use crate::error::DeviceError;
use crate::shader::Defines;
use crate::tensor::Readback;

/// Timestamps in one query set: [`PER_DISPATCH`] per dispatch, within wgpu's 4096 per set.
const MARKS: u32 = 4095;

/// Query sets one recorder may use (a 512-token prefill of SmolLM2 is about 8000 launches).
/// Dispatches past them are left out of the profile and counted in [`Profile::unmeasured`].
const SETS: usize = 64;

/// Marks around a dispatch: before it, after it, and at once again (see the module doc).
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

impl KernelTime {
    pub fn new(kernel: &str, variant: &str, launches: usize, seconds: f64) -> Self {
        Self {
            kernel: kernel.into(),
            variant: variant.into(),
            launches,
            seconds,
        }
    }
}

/// Everything measured between [`Context::profile_begin`](crate::Context::profile_begin) and
/// [`Context::profile_end`](crate::Context::profile_end).
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

/// A device's profiling state: the open profile, if any, and the query sets of submitted
/// profiled recordings, kept for the next ones.
#[derive(Default)]
pub(crate) struct Profiler {
    open: Mutex<Option<Profile>>,
    sets: Mutex<Vec<QuerySet>>,
}

impl Profiler {
    /// Opens a profile (restarting an open one).
    pub(crate) fn begin(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(Profile::default());
    }

    /// Closes the profile and returns it (empty when none was open).
    pub(crate) fn end(&self) -> Profile {
        self.sets.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// Whether a profile is open.
    pub(crate) fn profiling(&self) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// One recorder's timestamps: query sets with their resolve and staging buffers, made as
/// dispatches need them, and what each dispatch's marks bracket.
pub(crate) struct Marks {
    sets: Vec<QuerySet>,
    labels: Vec<(String, String)>,
    unmeasured: usize,
}

/// Where a dispatch's marks go: query set `set`, from index `index`.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    pub(crate) set: usize,
    pub(crate) index: u32,
}

pub(crate) struct QuerySet {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: Readback,
    /// Dispatches marked in this set.
    dispatches: u32,
}

impl Marks {
    pub(crate) fn new() -> Self {
        Self {
            sets: Vec::new(),
            labels: Vec::new(),
            unmeasured: 0,
        }
    }

    /// Where to write the marks of a dispatch of `shader:entry` with `defines`, or None when
    /// every set is full.
    pub(crate) fn open(
        &mut self,
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        profiler: &Profiler,
        shader: &str,
        entry: &str,
        defines: &Defines,
    ) -> Option<Mark> {
        let full = |q: &QuerySet| PER_DISPATCH * (q.dispatches + 1) > MARKS;
        if self.sets.last().is_none_or(full) {
            let Some(q) = (self.sets.len() < SETS)
                .then(|| QuerySet::take(device, limits, profiler))
                .flatten()
            else {
                self.unmeasured += 1;
                return None;
            };
            self.sets.push(q);
        }
        let set = self.sets.len() - 1;
        let q = &mut self.sets[set];
        let index = PER_DISPATCH * q.dispatches;
        q.dispatches += 1;
        self.labels
            .push((format!("{shader}:{entry}"), defines.to_string()));
        Some(Mark { set, index })
    }

    pub(crate) fn set(&self, set: usize) -> &wgpu::QuerySet {
        &self.sets[set].set
    }

    /// Records the copy of the marks into staging (before the submit).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        for q in &self.sets {
            let n = PER_DISPATCH * q.dispatches;
            encoder.resolve_query_set(&q.set, 0..n, &q.resolve, 0);
            encoder.copy_buffer_to_buffer(&q.resolve, 0, &q.staging.buffer, 0, 8 * n as u64);
        }
    }

    /// Waits for the marks submitted to `device` and adds them to `profiler`'s open profile; the
    /// query sets go back to `profiler` for the next recorder.
    pub(crate) fn collect(
        mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        device_error: &DeviceError,
        profiler: &Profiler,
    ) {
        let mut ticks: Vec<u64> = Vec::with_capacity(PER_DISPATCH as usize * self.labels.len());
        for q in &self.sets {
            let len = (PER_DISPATCH * q.dispatches) as usize;
            match q.staging.map_read::<u64>(device, device_error, len, None) {
                Ok(t) => ticks.extend(t),
                Err(e) => {
                    log::warn!("kiln profile: timestamps not read back: {e}");
                    if let Some(profile) = profiler
                        .open
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        profile.unmeasured += self.labels.len() + self.unmeasured;
                    }
                    return;
                }
            }
        }
        let mut pool = profiler.sets.lock().unwrap_or_else(|e| e.into_inner());
        pool.extend(self.sets.drain(..).map(|mut q| {
            q.dispatches = 0;
            q
        }));
        drop(pool);
        let period = queue.get_timestamp_period() as f64 * 1e-9;
        let mut open = profiler.open.lock().unwrap_or_else(|e| e.into_inner());
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
    }
}

impl QuerySet {
    /// A set from `profiler`'s pool, or a new one on `device` (None if its staging buffer cannot
    /// be made).
    fn take(device: &wgpu::Device, limits: &wgpu::Limits, profiler: &Profiler) -> Option<Self> {
        let pooled = profiler
            .sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        if pooled.is_some() {
            return pooled;
        }
        let bytes = 8 * MARKS as u64;
        Some(Self {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kiln profile"),
                ty: wgpu::QueryType::Timestamp,
                count: MARKS,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            staging: Readback::new(device, limits, bytes).ok()?,
            dispatches: 0,
        })
    }
}
