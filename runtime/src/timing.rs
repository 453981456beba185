//! Timing recorded GPU work, for benchmarks. Where the device grants timestamp queries inside
//! command encoders, two timestamps bracket the work in its own command buffer and the GPU's
//! clock measures it; otherwise the wall time of submit + wait stands in, which also counts
//! submission and driver overhead, and every report says which clock it used.

use std::time::Instant;

use crate::device::Context;
use crate::error::{Result, RuntimeError};
use crate::recorder::Recorder;
use crate::tensor::Readback;

/// How a [`Timings`] was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries written before and after the work.
    Timestamps,
    /// Host wall time from recording to the end of a wait on the device.
    SubmitWait,
}

impl Clock {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Timestamps => "gpu-timestamps",
            Clock::SubmitWait => "submit-wait",
        }
    }
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Seconds taken by repeated runs of the same work.
#[derive(Clone, Debug)]
pub struct Timings {
    pub clock: Clock,
    pub seconds: Vec<f64>,
}

impl Timings {
    /// The median run (the upper middle one of an even count).
    pub fn median(&self) -> f64 {
        let mut v = self.seconds.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// The fastest run.
    pub fn min(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Times recorded work on one device; keep one for many measurements.
pub struct Stopwatch {
    /// Two timestamps, their resolve buffer and staging, where timestamps are granted.
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, Readback)>,
    period_ns: f64,
}

impl Stopwatch {
    pub fn clock(&self) -> Clock {
        if self.queries.is_some() {
            Clock::Timestamps
        } else {
            Clock::SubmitWait
        }
    }

    /// Seconds the work `record` records takes, in its own submit, waited for.
    pub fn measure<E: From<RuntimeError>>(
        &self,
        ctx: &Context,
        record: impl FnOnce(&mut Recorder<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<f64, E> {
        let started = Instant::now();
        let mut rec = ctx.recorder_unprofiled();
        if let Some((set, _, _)) = &self.queries {
            rec.write_timestamp(set, 0)?;
        }
        record(&mut rec)?;
        Ok(match &self.queries {
            Some((set, resolve, staging)) => {
                rec.write_timestamp(set, 1)?;
                rec.resolve_timestamps(set, resolve, staging)?;
                rec.submit()?;
                let ticks = ctx.map_read::<u64>(staging, 2)?;
                ticks[1].saturating_sub(ticks[0]) as f64 * self.period_ns * 1e-9
            }
            None => {
                rec.submit()?;
                ctx.wait()?;
                started.elapsed().as_secs_f64()
            }
        })
    }
}

impl Context {
    /// The clock [`Context::time`] uses on this device.
    pub fn clock(&self) -> Clock {
        if self.features.timestamps {
            Clock::Timestamps
        } else {
            Clock::SubmitWait
        }
    }

    /// A stopwatch using this device's [`Context::clock`].
    pub fn stopwatch(&self) -> Result<Stopwatch> {
        let queries = match self.clock() {
            Clock::Timestamps => Some((
                self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kiln timer"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                }),
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln timer resolve"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                self.readback(16)?,
            )),
            Clock::SubmitWait => None,
        };
        Ok(Stopwatch {
            queries,
            period_ns: self.queue.get_timestamp_period() as f64,
        })
    }

    /// Runs the work `record` records once to warm up (pipelines compile on first use), then
    /// `reps` more times, each in its own submit that is waited for, and returns their times.
    pub fn time<E: From<RuntimeError>>(
        &self,
        reps: usize,
        mut record: impl FnMut(&mut Recorder<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<Timings, E> {
        let watch = self.stopwatch()?;
        watch.measure(self, &mut record)?;
        let mut seconds = Vec::with_capacity(reps);
        for _ in 0..reps {
            seconds.push(watch.measure(self, &mut record)?);
        }
        Ok(Timings {
            clock: watch.clock(),
            seconds,
        })
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RuntimeError::Device(e.to_string()))?;
        self.check_device_error()
    }
}
