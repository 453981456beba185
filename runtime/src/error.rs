//! The runtime's error type: every variant names the limit, value or shader that caused it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(
        "no GPU adapter matched (backends {backends}, adapter filter {filter:?}, force fallback {fallback}); \
         available: [{available}]. Set KILN_BACKEND / KILN_ADAPTER or install a Vulkan driver \
         (lavapipe: mesa-vulkan-drivers)"
    )]
    NoAdapter {
        backends: String,
        filter: Option<String>,
        fallback: bool,
        available: String,
    },
    #[error(
        "unknown backend {0:?} in KILN_BACKEND / DeviceOptions (expected vulkan, metal, dx12, gl or a comma list)"
    )]
    UnknownBackend(String),
    #[error("unknown device plan {0:?} (KILN_PLAN takes cpu or gpu)")]
    UnknownPlan(String),
    #[error("requesting a device from adapter {adapter:?} failed: {source}")]
    RequestDevice {
        adapter: String,
        source: wgpu::RequestDeviceError,
    },
    #[error("{what} needs {requested} but the device limit {limit} is {max}")]
    LimitExceeded {
        what: String,
        limit: &'static str,
        requested: u64,
        max: u64,
    },
    #[error("shader {shader} (variant {variant}) failed to compile: {message}")]
    Shader {
        shader: &'static str,
        variant: String,
        message: String,
    },
    #[error("shader {shader}: preprocessor error on line {line}: {message}")]
    Preprocess {
        shader: &'static str,
        line: usize,
        message: String,
    },
    #[error("tensor {what}: {message}")]
    Shape { what: String, message: String },
    #[error("reading back {what} from the GPU failed: {message}")]
    Readback { what: String, message: String },
    #[error("device error: {0}")]
    Device(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
