//! The shader variants a family can launch, listed for the translation test.

use kiln_runtime::{Defines, Shader};

/// One shader family and every (variant, entry points) its launcher can ask for; the naga test
/// translates each of them for Vulkan, Metal and DX12.
pub struct ShaderVariants {
    pub shader: Shader,
    pub variants: Vec<(Defines, Vec<&'static str>)>,
}
