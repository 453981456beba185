//! Command recording: the one place where bind groups are made and dispatches recorded.
//!
//! A [`Recorder`] encodes many dispatches into one command buffer and submits them at once, so a
//! whole token step costs one submit. Kernel parameters go into reusable uniform chunks owned by
//! the [`Context`], written with a single `write_buffer` per chunk at submit time, so steady-state
//! recording creates no buffers; a recorder made with [`Context::recorder_cached`] also reuses
//! its bind groups (see [`crate::bind_cache`]). Grids longer than the per-dimension limit are
//! folded into 2-D; every kernel reads its linear workgroup index as `wid.x + wid.y * nwg.x`
//! and ignores the excess.

use crate::bind_cache::{BindGroupCache, Key};
use crate::device::Context;
use crate::error::{Result, RuntimeError};
use crate::profile::Marks;
use crate::shader::{Defines, Shader};
use crate::tensor::{DType, Readback, Submitted, Tensor, padded};

/// Bytes per parameter chunk; a decode step of a 30-layer model needs about 120 KiB.
const PARAM_CHUNK_BYTES: u64 = 256 * 1024;

/// A storage buffer bound at `@group(group) @binding(binding)`.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub group: u32,
    pub binding: u32,
    pub tensor: &'a Tensor,
}

impl<'a> Binding<'a> {
    /// A binding in group 0 (group 0 binding 0 is always the parameter uniform).
    pub fn new(binding: u32, tensor: &'a Tensor) -> Self {
        Self {
            group: 0,
            binding,
            tensor,
        }
    }
    /// A binding in group 1, where kernels keep weight buffers.
    pub fn weight(binding: u32, tensor: &'a Tensor) -> Self {
        Self {
            group: 1,
            binding,
            tensor,
        }
    }
}

/// Everything needed to launch one kernel.
pub struct Dispatch<'a> {
    pub shader: &'a Shader,
    pub entry: &'static str,
    pub defines: &'a Defines,
    /// The kernel's `#[repr(C)]` parameter struct as bytes, bound as a uniform at group 0 binding 0.
    pub params: &'a [u8],
    pub bindings: &'a [Binding<'a>],
    /// Number of workgroups (linear); folded into two dimensions when over the device limit.
    pub workgroups: u32,
}

pub struct Recorder<'c> {
    ctx: &'c Context,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    chunks: Vec<wgpu::Buffer>,
    /// Bytes staged for each used chunk.
    staged: Vec<Vec<u8>>,
    /// Bytes of each chunk already written to the GPU (by an earlier [`Recorder::flush`]).
    written: Vec<usize>,
    dispatches: usize,
    /// (shader, entry) of each dispatch, in order (tests check which kernel a launcher chose).
    launched: Vec<(&'static str, &'static str)>,
    /// Dispatches since the last submit, and how many to record before submitting on.
    unsubmitted: usize,
    submit_every: Option<usize>,
    bind_groups: Option<&'c BindGroupCache>,
    /// Timestamps around each dispatch while the context has a profile open.
    marks: Option<Marks>,
    /// The scratch buffer this recording holds ([`Recorder::scratch`]).
    scratch: Option<Tensor>,
}

impl Context {
    /// Starts recording; nothing runs until [`Recorder::submit`].
    pub fn recorder(&self) -> Recorder<'_> {
        self.make_recorder(None, true)
    }

    /// [`Context::recorder`] taking its bind groups from `cache` and leaving new ones there:
    /// for work recorded again and again over the same buffers (a decode step).
    pub fn recorder_cached<'c>(&'c self, cache: &'c BindGroupCache) -> Recorder<'c> {
        self.make_recorder(Some(cache), true)
    }

    /// A recorder that is never profiled (for [`Context::time`], which times work itself).
    pub(crate) fn recorder_unprofiled(&self) -> Recorder<'_> {
        self.make_recorder(None, false)
    }

    fn make_recorder<'c>(
        &'c self,
        bind_groups: Option<&'c BindGroupCache>,
        profiled: bool,
    ) -> Recorder<'c> {
        let chunks =
            std::mem::take(&mut *self.param_chunks.lock().unwrap_or_else(|e| e.into_inner()));
        Recorder {
            ctx: self,
            encoder: Some(
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("kiln step"),
                    }),
            ),
            pass: None,
            chunks,
            staged: Vec::new(),
            written: Vec::new(),
            dispatches: 0,
            launched: Vec::new(),
            unsubmitted: 0,
            submit_every: None,
            bind_groups,
            scratch: None,
            marks: (profiled && self.profiling()).then(Marks::new),
        }
    }

    /// Copies the tensor back to the CPU (waits for all submitted work). For repeated reads, use
    /// a [`Readback`] recorded into the step's own submit.
    pub fn read<T: bytemuck::Pod>(&self, tensor: &Tensor) -> Result<Vec<T>> {
        let staging = self.readback(tensor.size_bytes())?;
        let mut rec = self.recorder();
        rec.read_back(tensor, &staging)?;
        rec.submit()?;
        self.map_read(&staging, tensor.len())
    }

    /// Records one dispatch and submits it.
    pub fn run(&self, dispatch: &Dispatch<'_>) -> Result<()> {
        let mut recorder = self.recorder();
        recorder.dispatch(dispatch)?;
        recorder.submit().map(drop)
    }

    /// The (x, y) grid that covers `workgroups` under the per-dimension limit.
    pub fn fold_grid(&self, workgroups: u32) -> Result<(u32, u32)> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if workgroups <= max {
            return Ok((workgroups, 1));
        }
        let y = workgroups.div_ceil(max);
        self.check_limit(
            "a dispatch",
            "max_compute_workgroups_per_dimension (squared)",
            y as u64,
            max as u64,
        )?;
        Ok((workgroups.div_ceil(y), y))
    }
}

impl<'c> Recorder<'c> {
    /// The context this recorder submits to (for feature and limit checks in launchers).
    pub fn context(&self) -> &'c Context {
        self.ctx
    }

    /// An f32 buffer of at least `len` values for intermediate results (a split matmul's
    /// partial sums) that launches of this recording may overwrite in turn: its launches run in
    /// order. It is this recording's alone until it is dropped, then the next one's, whose
    /// submits run after this one's; it grows by replacement.
    pub fn scratch(&mut self, len: usize) -> Result<Tensor> {
        if self.scratch.is_none() {
            self.scratch = self
                .ctx
                .scratch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        match &self.scratch {
            Some(t) if t.len() >= len => Ok(t.clone()),
            _ => {
                let t = self.ctx.zeros(DType::F32, &[len.max(1)])?;
                self.scratch = Some(t.clone());
                Ok(t)
            }
        }
    }

    /// Records one kernel launch.
    pub fn dispatch(&mut self, d: &Dispatch<'_>) -> Result<()> {
        let ctx = self.ctx;
        if d.workgroups == 0 {
            return Ok(());
        }
        let max_binding = ctx.limits.max_storage_buffer_binding_size;
        // The error's name is only formatted for a binding over the limit: this runs per dispatch.
        for b in d
            .bindings
            .iter()
            .filter(|b| b.tensor.buffer().size() > max_binding)
        {
            let size = b.tensor.buffer().size();
            ctx.check_limit(
                format!(
                    "{}:{} binding {} ({:?}{:?})",
                    d.shader.name,
                    d.entry,
                    b.binding,
                    b.tensor.dtype(),
                    b.tensor.shape()
                ),
                "max_storage_buffer_binding_size",
                size,
                max_binding,
            )?;
        }
        let (x, y) = ctx.fold_grid(d.workgroups)?;
        let pipeline = ctx.pipeline(d.shader, d.entry, d.defines)?;
        let (chunk, offset, size) = self.stage_params(d.params)?;

        let mut groups: Vec<u32> = d.bindings.iter().map(|b| b.group).chain([0]).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut bind_groups = Vec::with_capacity(groups.len());
        for &group in &groups {
            let mut entries: Vec<(u32, &wgpu::Buffer, u64, u64)> = d
                .bindings
                .iter()
                .filter(|b| b.group == group)
                .map(|b| (b.binding, b.tensor.buffer(), 0, 0))
                .collect();
            if group == 0 {
                // The parameters' offset is dynamic (`crate::layout`): given at set_bind_group,
                // so the bind group is the same wherever in a chunk they land.
                entries.push((0, &self.chunks[chunk], 0, size));
            }
            let make = || {
                let entries: Vec<wgpu::BindGroupEntry> = entries
                    .iter()
                    .map(|&(binding, buffer, offset, size)| wgpu::BindGroupEntry {
                        binding,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset,
                            size: wgpu::BufferSize::new(size),
                        }),
                    })
                    .collect();
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.entry),
                    layout: &pipeline.get_bind_group_layout(group),
                    entries: &entries,
                })
            };
            bind_groups.push(match self.bind_groups {
                Some(cache) => {
                    let key = Key {
                        pipeline: (*pipeline).clone(),
                        group,
                        entries: entries
                            .iter()
                            .map(|&(binding, buffer, offset, size)| {
                                (binding, buffer.clone(), offset, size)
                            })
                            .collect(),
                    };
                    cache.get_or_make(key, make)
                }
                None => make(),
            });
        }

        let mark = self.marks.as_mut().and_then(|m| {
            m.open(
                &ctx.device,
                &ctx.limits,
                &ctx.profiler,
                d.shader.name,
                d.entry,
                d.defines,
            )
        });
        if let (Some(m), false) = (mark, ctx.features.pass_timestamps) {
            self.mark(m.set, m.index);
        }
        let encoder = self
            .encoder
            .as_mut()
            .ok_or_else(|| RuntimeError::Device("recorder already submitted".into()))?;
        let pass = self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("kiln"),
                    timestamp_writes: None,
                })
                .forget_lifetime()
        });
        if let (Some(m), Some(marks), true) = (mark, &self.marks, ctx.features.pass_timestamps) {
            pass.write_timestamp(marks.set(m.set), m.index);
        }
        pass.set_pipeline(&pipeline);
        for (&group, bind_group) in groups.iter().zip(&bind_groups) {
            let dynamic = [offset as u32];
            pass.set_bind_group(group, bind_group, if group == 0 { &dynamic } else { &[] });
        }
        pass.dispatch_workgroups(x, y, 1);
        if let Some(m) = mark {
            self.mark(m.set, m.index + 1);
            self.mark(m.set, m.index + 2);
        }
        self.dispatches += 1;
        self.launched.push((d.shader.name, d.entry));
        self.unsubmitted += 1;
        // Profiled recordings resolve their timestamps in one command buffer: never split them.
        let due = self.submit_every.is_some_and(|n| self.unsubmitted >= n);
        if due && self.marks.is_none() {
            self.flush()?;
        }
        Ok(())
    }

    /// Submits every `n` dispatches from now on (and the rest at [`Recorder::submit`]): the GPU
    /// starts on the first launches of a long recording, such as a decode step, while the CPU
    /// records the others, instead of waiting for all of them.
    pub fn submit_every(&mut self, n: usize) {
        self.submit_every = Some(n.max(1));
    }

    /// Submits what is recorded so far and goes on recording into a new command buffer.
    pub fn flush(&mut self) -> Result<()> {
        self.pass = None;
        self.write_params();
        if let Some(encoder) = self.encoder.take() {
            self.ctx.queue.submit([encoder.finish()]);
        }
        self.encoder = Some(self.ctx.device.create_command_encoder(
            &wgpu::CommandEncoderDescriptor {
                label: Some("kiln step"),
            },
        ));
        self.unsubmitted = 0;
        self.ctx.check_device_error()
    }

    /// Writes the parameters staged since the last write (they take effect before the next
    /// submit, after the earlier ones).
    fn write_params(&mut self) {
        self.written.resize(self.staged.len(), 0);
        for ((chunk, bytes), written) in self.chunks.iter().zip(&self.staged).zip(&mut self.written)
        {
            if bytes.len() > *written {
                self.ctx
                    .queue
                    .write_buffer(chunk, *written as u64, &bytes[*written..]);
                *written = bytes.len();
            }
        }
    }

    /// Writes profile timestamp `index` (see [`crate::profile`]): inside the pass where the
    /// device allows, else between passes.
    fn mark(&mut self, set: usize, index: u32) {
        let Some(marks) = &self.marks else { return };
        if let (true, Some(pass)) = (self.ctx.features.pass_timestamps, self.pass.as_mut()) {
            pass.write_timestamp(marks.set(set), index);
            return;
        }
        self.pass = None;
        if let Some(encoder) = self.encoder.as_mut() {
            encoder.write_timestamp(marks.set(set), index);
        }
    }

    /// Copies `count` elements from `src` (starting at element `src_at`) into `dst` at `dst_at`.
    /// Offsets and sizes must be multiples of 4 bytes.
    pub fn copy(
        &mut self,
        src: &Tensor,
        src_at: usize,
        dst: &Tensor,
        dst_at: usize,
        count: usize,
    ) -> Result<()> {
        let size = src.dtype().size();
        let (from, to, bytes) = (
            (src_at * size) as u64,
            (dst_at * dst.dtype().size()) as u64,
            (count * size) as u64,
        );
        if src.dtype() != dst.dtype()
            || src_at + count > src.len()
            || dst_at + count > dst.len()
            || (from | to | bytes) % 4 != 0
        {
            return Err(RuntimeError::Shape {
                what: format!(
                    "copy {:?}{:?} -> {:?}{:?}",
                    src.dtype(),
                    src.shape(),
                    dst.dtype(),
                    dst.shape()
                ),
                message: format!(
                    "elements {src_at}+{count} -> {dst_at}: out of range, mixed dtypes or not 4-byte aligned"
                ),
            });
        }
        self.pass = None;
        let encoder = self
            .encoder
            .as_mut()
            .ok_or_else(|| RuntimeError::Device("recorder already submitted".into()))?;
        encoder.copy_buffer_to_buffer(src.buffer(), from, dst.buffer(), to, bytes);
        Ok(())
    }

    /// Records a copy of the whole of `src` into `staging`, to map after this submit (so a step
    /// and its readback share one submit).
    pub fn read_back(&mut self, src: &Tensor, staging: &Readback) -> Result<()> {
        let bytes = padded(src.size_bytes());
        if bytes > staging.buffer.size() {
            return Err(RuntimeError::Readback {
                what: format!("{:?}{:?}", src.dtype(), src.shape()),
                message: format!(
                    "needs {bytes} bytes, the staging buffer holds {}",
                    staging.buffer.size()
                ),
            });
        }
        self.pass = None;
        let encoder = self
            .encoder
            .as_mut()
            .ok_or_else(|| RuntimeError::Device("recorder already submitted".into()))?;
        encoder.copy_buffer_to_buffer(src.buffer(), 0, &staging.buffer, 0, bytes);
        Ok(())
    }

    /// Writes GPU timestamp `index` of `set` between the work before and after it (needs
    /// TIMESTAMP_QUERY_INSIDE_ENCODERS; see [`Context::time`]).
    pub(crate) fn write_timestamp(&mut self, set: &wgpu::QuerySet, index: u32) -> Result<()> {
        self.pass = None;
        self.encoder()?.write_timestamp(set, index);
        Ok(())
    }

    /// Resolves the two timestamps of `set` through `resolve` into `staging`.
    pub(crate) fn resolve_timestamps(
        &mut self,
        set: &wgpu::QuerySet,
        resolve: &wgpu::Buffer,
        staging: &Readback,
    ) -> Result<()> {
        self.pass = None;
        let encoder = self.encoder()?;
        encoder.resolve_query_set(set, 0..2, resolve, 0);
        encoder.copy_buffer_to_buffer(resolve, 0, &staging.buffer, 0, 16);
        Ok(())
    }

    fn encoder(&mut self) -> Result<&mut wgpu::CommandEncoder> {
        self.encoder
            .as_mut()
            .ok_or_else(|| RuntimeError::Device("recorder already submitted".into()))
    }

    /// (shader, entry) of every dispatch recorded so far, in order.
    pub fn launched(&self) -> &[(&'static str, &'static str)] {
        &self.launched
    }

    /// Dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.dispatches
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches == 0
    }

    /// Writes the staged parameters and submits everything recorded since the last flush;
    /// [`Context::map_read_after`] waits for the returned submission alone.
    pub fn submit(mut self) -> Result<Submitted> {
        self.pass = None;
        self.write_params();
        let mut encoder = self
            .encoder
            .take()
            .unwrap_or_else(|| self.ctx.device.create_command_encoder(&Default::default()));
        if let Some(marks) = &self.marks {
            marks.resolve(&mut encoder);
        }
        let index = self.ctx.queue.submit([encoder.finish()]);
        self.ctx.check_device_error()?;
        if let Some(marks) = self.marks.take() {
            let ctx = self.ctx;
            marks.collect(&ctx.device, &ctx.queue, &ctx.device_error, &ctx.profiler);
        }
        Ok(Submitted(index))
    }

    /// Places `params` in a chunk at the uniform offset alignment; returns (chunk, offset, size).
    fn stage_params(&mut self, params: &[u8]) -> Result<(usize, u64, u64)> {
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        // Uniform structs are sized in multiples of 16 bytes; an empty struct still binds 16.
        let size = params.len().div_ceil(16).max(1) * 16;
        self.ctx.check_limit(
            "kernel parameters",
            "max_uniform_buffer_binding_size",
            size as u64,
            self.ctx.limits.max_uniform_buffer_binding_size,
        )?;
        let fits = |staged: &Vec<u8>| {
            staged.len().div_ceil(align) * align + size <= PARAM_CHUNK_BYTES as usize
        };
        if self.staged.last().is_none_or(|s| !fits(s)) {
            if self.staged.len() == self.chunks.len() {
                self.chunks
                    .push(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("kiln params"),
                        size: PARAM_CHUNK_BYTES,
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }));
            }
            self.staged
                .push(Vec::with_capacity(PARAM_CHUNK_BYTES as usize));
        }
        let chunk = self.staged.len() - 1;
        let staged = &mut self.staged[chunk];
        let offset = staged.len().div_ceil(align) * align;
        staged.resize(offset, 0);
        staged.extend_from_slice(params);
        staged.resize(offset + size, 0);
        Ok((chunk, offset as u64, size as u64))
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        // Hand the parameter chunks back for the next recording (submitted or not).
        self.pass = None;
        let mut pool = self
            .ctx
            .param_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pool.append(&mut self.chunks);
        drop(pool);
        if let Some(t) = self.scratch.take() {
            let mut slot = self.ctx.scratch.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_none_or(|s| s.len() < t.len()) {
                *slot = Some(t);
            }
        }
    }
}
