//! Kiln: WGSL compute kernels and a wgpu runtime that sequences them into LLM forward passes.
//!
//! This crate only re-exports the workspace crates; see `kiln_runtime` (devices, tensors,
//! pipelines, command recording), `kiln_kernels` (one launcher + CPU reference per shader family)
//! and `kiln_model` (loaders, tokenizers, architectures).

pub use kiln_kernels as kernels;
pub use kiln_model as model;
pub use kiln_runtime as runtime;
