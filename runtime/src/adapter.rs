//! Adapter selection and what a device offers.
//!
//! Adapters are chosen explicitly: by backend (`KILN_BACKEND` or [`DeviceOptions::backends`]), by a
//! name substring (`KILN_ADAPTER`), or restricted to software adapters (`KILN_FORCE_FALLBACK=1`).
//! Without a backend, only the primary backends (Vulkan, Metal, DX12) are searched, so wgpu never
//! lands on the GL backend by accident.

use crate::error::{Result, RuntimeError};

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
    /// A directory to keep compiled pipelines in between runs (Vulkan, GPUs); `None` keeps none.
    pub pipeline_cache: Option<std::path::PathBuf>,
    /// Keep it on CPU adapters too (tests). lavapipe's cache data is its header alone (Mesa
    /// keeps its own shader cache) and passing the cache made its first prefill ~6% slower.
    pub pipeline_cache_on_cpu: bool,
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
    /// - `KILN_PLAN`: `cpu` or `gpu`, the kernels to run whatever the adapter;
    /// - `KILN_PIPELINE_CACHE`: a directory for compiled pipelines, or `off`; by default
    ///   `pipelines/` under [`cache_dir`](crate::cache_dir).
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
            pipeline_cache: match var("KILN_PIPELINE_CACHE") {
                Some(v) if matches!(v.trim().to_lowercase().as_str(), "off" | "0" | "none") => None,
                Some(v) => Some(v.into()),
                None => Some(crate::cache_dir().join("pipelines")),
            },
            pipeline_cache_on_cpu: false,
        })
    }

    /// [`DeviceOptions::from_env`] with a command line's `--backend` and `--adapter` over it.
    pub fn from_env_and_flags(backend: Option<&str>, adapter: Option<&str>) -> Result<Self> {
        let mut options = Self::from_env()?;
        if let Some(b) = backend {
            options.backends = Some(parse_backends(b)?);
        }
        if let Some(a) = adapter {
            options.adapter = Some(a.to_string());
        }
        Ok(options)
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
    /// Timestamp queries, also between passes inside an encoder (what
    /// [`Context::time`](crate::Context::time) uses).
    pub timestamps: bool,
    /// 64-bit integers in shaders. CPU adapters load storage words one lane and one component at
    /// a time, so there a `u64` component moves twice the bytes of a `u32` for the same cost.
    pub int64: bool,
    /// Timestamp queries between dispatches inside a compute pass (profiles use them to time
    /// launches without ending the pass around each).
    pub pass_timestamps: bool,
}

/// The adapter `options` select among `adapters`, real GPUs first.
pub(crate) fn pick_adapter(
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
