//! The device context: a device and queue with everything cached for them.
//!
//! [`Context::new`] selects an adapter ([`DeviceOptions`]) and requests the device with the
//! adapter's real limits, and with every optional feature Kiln can use that the adapter offers
//! (unless disabled), so kernels can pick their fast variant or fall back. Its methods hand
//! tensors, pipelines and profiles to the modules below; [`crate::recorder`] and
//! [`crate::timing`] build on it.

use std::sync::{Arc, Mutex};

use crate::adapter::pick_adapter;
pub use crate::adapter::{DeviceOptions, GrantedFeatures, PlanKind, parse_backends};
use crate::disk_cache::DiskCache;
use crate::error::{DeviceError, Result, RuntimeError, check_limit};
use crate::pipeline::PipelineCache;
use crate::profile::{Profile, Profiler};
use crate::shader::{Defines, Shader};
use crate::tensor::{DType, Readback, Submitted, Tensor};

/// A device, its queue and everything cached for it. Create once, reuse for every launch.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's own, not wgpu's defaults).
    pub limits: wgpu::Limits,
    pub features: GrantedFeatures,
    /// The kernels this device runs: forced by [`DeviceOptions::plan`], else the adapter's own.
    pub plan: PlanKind,
    pub(crate) pipelines: PipelineCache,
    /// Uniform-buffer chunks for kernel parameters, reused across recordings.
    pub(crate) param_chunks: Mutex<Vec<wgpu::Buffer>>,
    /// The first error wgpu reported outside an error scope (validation, out of memory).
    pub(crate) device_error: DeviceError,
    /// The open profile, if any ([`Context::profile_begin`]), and the query sets of submitted
    /// profiled recordings, for the next ones.
    pub(crate) profiler: Profiler,
    /// The scratch buffer between recordings ([`crate::Recorder::scratch`]): a recorder takes
    /// it while it records, so recorders on other threads never share one.
    pub(crate) scratch: Mutex<Option<Tensor>>,
}

impl Context {
    /// Selects an adapter per `options` and creates the device.
    pub fn new(options: &DeviceOptions) -> Result<Self> {
        let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let adapter = pick_adapter(adapters, options, backends)?;
        let info = adapter.get_info();

        let mut wanted = wgpu::Features::empty();
        if !options.disable_f16 {
            wanted |= wgpu::Features::SHADER_F16;
        }
        if !options.disable_subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        if !options.disable_int64 {
            wanted |= wgpu::Features::SHADER_INT64;
        }
        if !options.disable_timestamps {
            wanted |=
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
            if !options.disable_pass_timestamps {
                wanted |= wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
            }
        }
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let cache_dir = options
            .pipeline_cache
            .as_deref()
            .filter(|_| !cpu || options.pipeline_cache_on_cpu);
        if cache_dir.is_some() {
            wanted |= wgpu::Features::PIPELINE_CACHE;
        }
        let required_features = adapter.features() & wanted;
        let mut limits = adapter.limits();
        if let Some(max) = options.max_storage_binding {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(max);
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| RuntimeError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;

        // Uncaptured errors would otherwise panic inside wgpu; keep the first one and report it as a
        // typed error at the next submit or readback.
        let device_error = DeviceError::default();
        let sink = device_error.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |error: wgpu::Error| {
            log::error!("wgpu: {error}");
            sink.keep(|| error.to_string());
        }));

        let features = GrantedFeatures {
            f16: required_features.contains(wgpu::Features::SHADER_F16),
            subgroups: required_features.contains(wgpu::Features::SUBGROUP),
            timestamps: required_features.contains(
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
            ),
            int64: required_features.contains(wgpu::Features::SHADER_INT64),
            pass_timestamps: required_features.contains(
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            ),
        };
        let disk = cache_dir
            .filter(|_| required_features.contains(wgpu::Features::PIPELINE_CACHE))
            .and_then(|dir| DiskCache::open(&device, &info, dir));
        let plan = options.plan.unwrap_or(PlanKind::for_adapter(&info));
        log::info!(
            "kiln: adapter {:?} ({:?}, {:?}, driver {:?} {:?}), features {features:?}, plan {plan}, pipeline cache {}",
            info.name,
            info.device_type,
            info.backend,
            info.driver,
            info.driver_info,
            match &disk {
                Some(d) if d.loaded => "loaded",
                Some(_) => "empty",
                None => "off",
            }
        );
        Ok(Self {
            device,
            queue,
            info,
            limits,
            features,
            plan,
            pipelines: PipelineCache::new(disk),
            param_chunks: Mutex::new(Vec::new()),
            device_error,
            profiler: Profiler::default(),
            scratch: Mutex::new(None),
        })
    }

    /// [`Context::new`] with [`DeviceOptions::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(&DeviceOptions::from_env()?)
    }

    /// Whether subgroups were granted and always hold at least `n` invocations.
    pub fn subgroups_of(&self, n: u32) -> bool {
        self.features.subgroups && self.info.subgroup_min_size >= n
    }

    /// One line naming the adapter, its type, backend and driver.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.device_type, i.backend, i.driver, i.driver_info
        )
    }

    /// Returns the first error wgpu reported outside an error scope, if any, as a typed error.
    pub fn check_device_error(&self) -> Result<()> {
        self.device_error.check()
    }

    /// Errors unless `requested <= max`, naming the limit.
    pub fn check_limit(
        &self,
        what: impl Into<String>,
        limit: &'static str,
        requested: u64,
        max: u64,
    ) -> Result<()> {
        check_limit(what, limit, requested, max)
    }

    /// The pipeline for `entry` of `shader` under `defines`, compiled on first use.
    pub fn pipeline(
        &self,
        shader: &Shader,
        entry: &'static str,
        defines: &Defines,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipelines.get(&self.device, shader, entry, defines)
    }

    /// The file compiled pipelines are kept in between runs, if any (Vulkan, unless disabled).
    pub fn pipeline_cache_file(&self) -> Option<&std::path::Path> {
        self.pipelines.disk.as_ref().map(|d| d.path())
    }

    /// Pipelines compiled on this device so far (each kernel variant once, on first use).
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.len()
    }

    /// Whether that file held data from an earlier run that passed its checksum.
    pub fn pipeline_cache_loaded(&self) -> bool {
        self.pipelines.disk.as_ref().is_some_and(|d| d.loaded)
    }

    /// A zero-filled tensor.
    pub fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros(&self.device, &self.limits, dtype, shape)
    }

    /// A tensor holding `data`, whose byte length must match `shape` and `dtype`.
    pub fn upload<T: bytemuck::Pod>(
        &self,
        data: &[T],
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor> {
        let tensor = self.zeros(dtype, shape)?;
        self.write(&tensor, data)?;
        Ok(tensor)
    }

    /// An f32 tensor.
    pub fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload(data, DType::F32, shape)
    }

    /// A `U8` tensor of packed bytes.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<Tensor> {
        self.upload(bytes, DType::U8, &[bytes.len()])
    }

    /// Overwrites the whole tensor with `data`.
    pub fn write<T: bytemuck::Pod>(&self, tensor: &Tensor, data: &[T]) -> Result<()> {
        tensor.write(&self.queue, data)
    }

    /// A staging buffer for reading back up to `bytes` bytes, to keep and reuse.
    pub fn readback(&self, bytes: u64) -> Result<Readback> {
        Readback::new(&self.device, &self.limits, bytes)
    }

    /// Waits for submitted work and returns the first `len` elements copied into `staging`.
    pub fn map_read<T: bytemuck::Pod>(&self, staging: &Readback, len: usize) -> Result<Vec<T>> {
        staging.map_read(&self.device, &self.device_error, len, None)
    }

    /// [`Context::map_read`] waiting only for `submitted`, not for the work submitted after it
    /// (a decode step read back while the next one runs).
    pub fn map_read_after<T: bytemuck::Pod>(
        &self,
        staging: &Readback,
        len: usize,
        submitted: &Submitted,
    ) -> Result<Vec<T>> {
        let after = Some(submitted.0.clone());
        staging.map_read(&self.device, &self.device_error, len, after)
    }

    /// Opens a profile: from now on recorders time each dispatch. An open profile is restarted.
    pub fn profile_begin(&self) -> Result<()> {
        if !self.features.timestamps {
            return Err(RuntimeError::Device(format!(
                "profiling needs timestamp queries inside encoders, which {} does not grant",
                self.info.name
            )));
        }
        self.profiler.begin();
        Ok(())
    }

    /// Closes the profile and returns it (empty when none was open). Recorders made while it
    /// was open and submitted after this add nothing.
    pub fn profile_end(&self) -> Profile {
        self.profiler.end()
    }

    /// Whether a profile is open.
    pub(crate) fn profiling(&self) -> bool {
        self.profiler.profiling()
    }
}

impl Drop for Context {
    /// Keeps what this run compiled for the next one (a failed write costs only a cold start).
    fn drop(&mut self) {
        if let Some(disk) = &self.pipelines.disk
            && let Err(e) = disk.save()
        {
            log::warn!("pipeline cache: {e}");
        }
    }
}
