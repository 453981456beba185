//! Weight matrices in every format the matrix kernels read (`shaders/weights.wgsl`): the formats
//! and their byte math, the host copy with its CPU dequantizer (the shader's reference), the
//! device layouts the blocks are packed into, and the upload in row parts.

mod dequant;
pub mod device;
pub mod format;
pub mod host;
pub mod outliers;
mod packing;

pub use device::Weights;
pub use format::{BLOCK, SUPER_BLOCK, WeightFormat, WeightRead};
pub use host::{HostWeights, split_columns};
pub use outliers::Outliers;

/// The weight-format WGSL, prepended to every family that reads weights.
pub const WEIGHTS_WGSL: &str = include_str!("../../../shaders/weights.wgsl");
