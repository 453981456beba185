//! The kernel crate's error, and the shape checks every launcher makes before it records.

use kiln_runtime::{DType, RuntimeError, Tensor};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{kernel}: {message}")]
    Shape {
        kernel: &'static str,
        message: String,
    },
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Errors unless `cond`, with the kernel's name and a formatted message.
pub(crate) fn ensure(
    cond: bool,
    kernel: &'static str,
    message: impl FnOnce() -> String,
) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(KernelError::Shape {
            kernel,
            message: message(),
        })
    }
}

/// Errors unless the tensor is `dtype` with exactly `len` elements.
pub(crate) fn expect(
    t: &Tensor,
    kernel: &'static str,
    name: &str,
    dtype: DType,
    len: usize,
) -> Result<()> {
    ensure(t.dtype() == dtype && t.len() == len, kernel, || {
        format!(
            "{name} must be {dtype:?} with {len} elements, got {:?}{:?}",
            t.dtype(),
            t.shape()
        )
    })
}

/// Workgroups of `size` threads covering `n` items.
pub(crate) fn groups_for(n: usize, size: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(size)).map_err(|_| KernelError::Shape {
        kernel: "grid",
        message: format!("{n} items exceed a u32 grid"),
    })
}
