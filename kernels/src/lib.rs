//! Kiln kernels: one module per WGSL family in `shaders/`, each with a typed launcher that records
//! into a [`Recorder`](kiln_runtime::Recorder) and a plain-loop CPU reference the tests compare
//! against. Launchers check shapes and pick the shader variant (weight format, vec4 loads, native
//! f16) from the tensors and the device's plan ([`DevicePlan`], every per-adapter choice).
//!
//! - [`linear`]: `Y = X · Wᵀ`, one entry over the matmul, the mat-vec and outlier columns.
//! - [`weights`]: weight formats, host copies, device layouts and upload.
//! - [`plan`]: the device plan.
//! - [`attention`], [`norm`], [`rope`], [`softmax`], [`elementwise`], [`embedding`],
//!   [`argmax`], [`stream`], [`probe`]: the other families.

pub mod argmax;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod error;
pub mod kv_cache;
pub mod linear;
pub mod norm;
pub mod plan;
pub mod probe;
pub mod profile;
pub mod rope;
pub mod softmax;
pub mod stream;
pub mod variants;
pub mod weights;

pub use error::{KernelError, Result};
pub use plan::{BlockOrder, DevicePlan, F16Read};
pub use variants::ShaderVariants;
pub use weights::{HostWeights, WeightFormat, Weights};

/// Every shader variant of every family.
pub fn all_shader_variants() -> Vec<ShaderVariants> {
    let mut all = linear::shader_variants();
    all.extend(attention::shader_variants());
    all.extend([
        embedding::shader_variants(),
        norm::shader_variants(),
        softmax::shader_variants(),
        elementwise::shader_variants(),
        rope::shader_variants(),
        argmax::shader_variants(),
        probe::shader_variants(),
        stream::shader_variants(),
    ]);
    all
}
