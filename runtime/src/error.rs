//! The runtime's error type: every variant names the limit, value or shader that caused it.

use std::sync::{Arc, Mutex};

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

/// Errors unless `requested <= max`, naming the limit.
pub(crate) fn check_limit(
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

/// The first error wgpu reported outside an error scope (validation, out of memory), shared
/// between the device's uncaptured-error handler and everything that waits on the device.
#[derive(Clone, Default)]
pub(crate) struct DeviceError(Arc<Mutex<Option<String>>>);

impl DeviceError {
    /// Keeps `message` unless an earlier error is kept already.
    pub(crate) fn keep(&self, message: impl FnOnce() -> String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(message);
    }

    /// The kept error, if any, as a typed error.
    pub(crate) fn check(&self) -> Result<()> {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(message) => Err(RuntimeError::Device(message.clone())),
            None => Ok(()),
        }
    }
}
