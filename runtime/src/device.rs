//! Device and adapter selection.
//!
//! Adapters are chosen explicitly: by backend (`KILN_BACKEND` or [`DeviceOptions::backends`]), by a
//! name substring (`KILN_ADAPTER`), or restricted to software adapters (`KILN_FORCE_FALLBACK=1`).
//! Without a backend, only the primary backends (Vulkan, Metal, DX12) are searched, so wgpu never
//! lands on the GL backend by accident. The device is requested with the adapter's real limits,
//! and with every optional feature Kiln can use that the adapter offers (unless disabled), so
//! kernels can pick their fast variant or fall back.

use std::sync::Mutex;

use crate::error::{Result, RuntimeError};
use crate::pipeline::PipelineCache;

/// How to pick the adapter and which optional features to refuse.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// Backends to search; `None` means the primary ones (Vulkan, Metal, DX12), never GL.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name (as `wgpu::AdapterInfo::name`).
    pub adapter: Option<String>,
    /// Only accept software (CPU) adapters such as lavapipe or WARP.
    pub force_fallback: bool,
    /// Refuse SHADER_F16 even where granted, to exercise the fallback kernels.
    pub disable_f16: bool,
    /// Refuse SUBGROUP even where granted.
    pub disable_subgroups: bool,
    /// Refuse TIMESTAMP_QUERY even where granted.
    pub disable_timestamps: bool,
    /// Refuse SHADER_INT64 even where granted.
    pub disable_int64: bool,
    /// Refuse TIMESTAMP_QUERY_INSIDE_PASSES even where granted (profiles then time each
    /// dispatch in a pass of its own, as on devices without it).
    pub disable_pass_timestamps: bool,
    /// Ask for at most this storage binding size (bytes), below the adapter's own: tests reach a
    /// limit with small buffers this way on any device.
    pub max_storage_binding: Option<u64>,
    /// Which family of kernels to run (`None`: the adapter's own, [`PlanKind::for_adapter`]).
    /// Forcing [`PlanKind::Gpu`] on a CPU adapter checks the GPU kernels where no GPU exists.
    pub plan: Option<PlanKind>,
}

/// Which family of kernels a device runs: those written for CPU adapters (lavapipe, WARP), whose
/// SIMD lanes pay per load, or those written for GPUs, whose threads want coalesced reads and
/// many workgroups. The kernel crate's `DevicePlan` turns this into every per-adapter choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanKind {
    Cpu,
    Gpu,
}

impl PlanKind {
    /// The plan an adapter gets unless told otherwise: CPU kernels on CPU adapters.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        if info.device_type == wgpu::DeviceType::Cpu {
            PlanKind::Cpu
        } else {
            PlanKind::Gpu
        }
    }

    /// `cpu` or `gpu`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_lowercase().as_str() {
            "cpu" => Ok(PlanKind::Cpu),
            "gpu" => Ok(PlanKind::Gpu),
            _ => Err(RuntimeError::UnknownPlan(text.to_string())),
        }
    }
}

impl std::fmt::Display for PlanKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlanKind::Cpu => "cpu",
            PlanKind::Gpu => "gpu",
        })
    }
}

impl DeviceOptions {
    /// Options from the environment:
    /// - `KILN_BACKEND` (or `WGPU_BACKEND`): `vulkan`, `metal`, `dx12`, `gl`, or a comma list;
    /// - `KILN_ADAPTER`: adapter name substring;
    /// - `KILN_FORCE_FALLBACK=1`: software adapters only;
    /// - `KILN_DISABLE`: comma list of `f16`, `subgroups`, `timestamps`, `int64`,
    ///   `pass-timestamps`;
    /// - `KILN_PLAN`: `cpu` or `gpu`, the kernels to run whatever the adapter.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let backends = match var("KILN_BACKEND").or_else(|| var("WGPU_BACKEND")) {
            Some(text) => Some(parse_backends(&text)?),
            None => None,
        };
        let disabled = var("KILN_DISABLE").unwrap_or_default().to_lowercase();
        let disabled: Vec<&str> = disabled.split(',').map(str::trim).collect();
        Ok(Self {
            backends,
            adapter: var("KILN_ADAPTER"),
            force_fallback: var("KILN_FORCE_FALLBACK").is_some_and(|v| v != "0"),
            disable_f16: disabled.contains(&"f16"),
            disable_subgroups: disabled.contains(&"subgroups"),
            disable_timestamps: disabled.contains(&"timestamps"),
            disable_int64: disabled.contains(&"int64"),
            disable_pass_timestamps: disabled.contains(&"pass-timestamps"),
            plan: var("KILN_PLAN").map(|v| PlanKind::parse(&v)).transpose()?,
            max_storage_binding: None,
        })
    }
}

/// Parses `vulkan`, `metal`, `dx12`, `gl` (or `opengl`), `primary`, `all`, or a comma list.
pub fn parse_backends(text: &str) -> Result<wgpu::Backends> {
    let mut backends = wgpu::Backends::empty();
    for name in text.split(',').map(|s| s.trim().to_lowercase()) {
        backends |= match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "opengl" | "gles" => wgpu::Backends::GL,
            "primary" => wgpu::Backends::PRIMARY,
            "all" => wgpu::Backends::all(),
            _ => return Err(RuntimeError::UnknownBackend(text.to_string())),
        };
    }
    Ok(backends)
}

/// Optional features the device was granted; kernels choose variants from these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantedFeatures {
    pub f16: bool,
    pub subgroups: bool,
    /// Timestamp queries, also between passes inside an encoder (what [`Context::time`] uses).
    pub timestamps: bool,
    /// 64-bit integers in shaders. lavapipe loads storage words one lane and one component at
    /// a time, so there a `u64` component moves twice the bytes of a `u32` for the same cost.
    pub int64: bool,
    /// Timestamp queries between dispatches inside a compute pass (profiles use them to time
    /// launches without ending the pass around each).
    pub pass_timestamps: bool,
}

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
    pub(crate) device_error: std::sync::Arc<Mutex<Option<String>>>,
    /// The open profile, if any ([`Context::profile_begin`]).
    pub(crate) profile: Mutex<Option<crate::profile::Profile>>,
    /// Query sets and buffers of submitted profiled recordings, for the next ones.
    pub(crate) profile_sets: Mutex<Vec<crate::profile::QuerySet>>,
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
        let device_error = std::sync::Arc::new(Mutex::new(None));
        let sink = device_error.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |error: wgpu::Error| {
            log::error!("wgpu: {error}");
            let mut slot = sink.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| error.to_string());
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
        let plan = options.plan.unwrap_or(PlanKind::for_adapter(&info));
        log::info!(
            "kiln: adapter {:?} ({:?}, {:?}, driver {:?} {:?}), features {features:?}, plan {plan}",
            info.name,
            info.device_type,
            info.backend,
            info.driver,
            info.driver_info
        );
        Ok(Self {
            device,
            queue,
            info,
            limits,
            features,
            plan,
            pipelines: PipelineCache::default(),
            param_chunks: Mutex::new(Vec::new()),
            profile: Mutex::new(None),
            profile_sets: Mutex::new(Vec::new()),
            device_error,
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
        let slot = self.device_error.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(message) => Err(RuntimeError::Device(message.clone())),
            None => Ok(()),
        }
    }

    /// Errors unless `requested <= max`, naming the limit.
    pub fn check_limit(
        &self,
        what: impl Into<String>,
        limit: &'static str,
        requested: u64,
        max: u64,
    ) -> Result<()> {
        if requested > max {
            return Err(RuntimeError::LimitExceeded {
                what: what.into(),
                limit,
                requested,
                max,
            });
        }
        Ok(())
    }
}

fn pick_adapter(
    adapters: Vec<wgpu::Adapter>,
    options: &DeviceOptions,
    backends: wgpu::Backends,
) -> Result<wgpu::Adapter> {
    let filter = options.adapter.as_ref().map(|f| f.to_lowercase());
    let available = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Prefer real GPUs over virtual and software ones unless told otherwise.
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    adapters
        .into_iter()
        .filter(|a| {
            let info = a.get_info();
            let name_ok = filter
                .as_ref()
                .is_none_or(|f| info.name.to_lowercase().contains(f));
            let type_ok = !options.force_fallback || info.device_type == wgpu::DeviceType::Cpu;
            name_ok && type_ok
        })
        .min_by_key(|a| rank(a.get_info().device_type))
        .ok_or_else(|| RuntimeError::NoAdapter {
            backends: format!("{backends:?}"),
            filter: options.adapter.clone(),
            fallback: options.force_fallback,
            available,
        })
}
