//! Kiln kernels: one module per WGSL family in `shaders/`, each with a typed launcher that records
//! into a [`Recorder`](kiln_runtime::Recorder) and a plain-loop CPU reference the tests compare
//! against. Launchers check shapes and pick the shader variant (weight format, vec4 loads, native
//! f16) from the tensors and the device's plan ([`DevicePlan`], every per-adapter choice).

pub mod argmax;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod matvec;
pub mod norm;
pub mod outliers;
pub mod outputs;
pub mod plan;
pub mod profile;
pub mod rope;
pub mod softmax;
pub mod stream;
pub mod weights;

use kiln_runtime::{DType, Defines, RuntimeError, Shader, Tensor};
use thiserror::Error;

pub use outputs::Outputs;
pub use plan::DevicePlan;
pub use weights::{BlockOrder, F16Read, HostWeights, WeightFormat, Weights};

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

/// One shader family and every (variant, entry points) its launcher can ask for; the naga test
/// translates each of them for Vulkan, Metal and DX12.
pub struct ShaderVariants {
    pub shader: Shader,
    pub variants: Vec<(Defines, Vec<&'static str>)>,
}

/// Every shader variant of every family.
pub fn all_shader_variants() -> Vec<ShaderVariants> {
    vec![
        matmul::shader_variants(),
        matvec::shader_variants(),
        matvec::gpu_shader_variants(),
        embedding::shader_variants(),
        norm::shader_variants(),
        softmax::shader_variants(),
        elementwise::shader_variants(),
        rope::shader_variants(),
        attention::shader_variants(),
        argmax::shader_variants(),
        outliers::shader_variants(),
        stream::shader_variants(),
    ]
}

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
