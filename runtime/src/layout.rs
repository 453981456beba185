//! Bind group layouts read from a shader's source, with the kernel parameters (group 0 binding 0)
//! at a dynamic offset.
//!
//! A recording places each launch's parameters at the next free offset of a uniform chunk, so
//! with wgpu's derived layouts the offset is part of the bind group, and a step of another shape
//! (a server's batch as requests come and go) shifts every later launch's offset and needs all
//! new bind groups. With the offset given at `set_bind_group` instead, one bind group serves a
//! launch's buffers whatever its place in the recording ([`crate::bind_cache`]).

use naga::valid::{Capabilities, ValidationFlags, Validator};

/// A shader module as naga reads it: its resources and what each entry point uses.
pub(crate) struct Reflection {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
}

impl Reflection {
    /// `None` where naga cannot read or validate `source` (wgpu reports why when it compiles it).
    pub(crate) fn of(source: &str) -> Option<Self> {
        let module = naga::front::wgsl::parse_str(source).ok()?;
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .ok()?;
        Some(Self { module, info })
    }
}

/// The bind group layouts of one entry point, group by group from 0: every buffer the entry
/// point uses, as wgpu would derive them, except that the uniform at group 0 binding 0 (the
/// kernel parameters, always bound) takes a dynamic offset. `None` for a resource other than a
/// buffer, or a group 0 binding 0 that is not a uniform.
pub(crate) fn entry_layouts(
    device: &wgpu::Device,
    shader: &Reflection,
    entry: &str,
) -> Option<Vec<wgpu::BindGroupLayout>> {
    let module = &shader.module;
    let index = module.entry_points.iter().position(|e| e.name == entry)?;
    let uses = shader.info.get_entry_point(index);
    let mut groups: Vec<Vec<wgpu::BindGroupLayoutEntry>> = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(at) = &var.binding else { continue };
        let params = (at.group, at.binding) == (0, 0);
        if uses[handle].is_empty() && !params {
            continue;
        }
        let ty = match var.space {
            naga::AddressSpace::Uniform => wgpu::BufferBindingType::Uniform,
            naga::AddressSpace::Storage { access } if !params => wgpu::BufferBindingType::Storage {
                read_only: !access.contains(naga::StorageAccess::STORE),
            },
            _ => return None,
        };
        let group = at.group as usize;
        if groups.len() <= group {
            groups.resize(group + 1, Vec::new());
        }
        groups[group].push(wgpu::BindGroupLayoutEntry {
            binding: at.binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: params,
                min_binding_size: None,
            },
            count: None,
        });
    }
    Some(
        groups
            .iter()
            .map(|entries| {
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(entry),
                    entries,
                })
            })
            .collect(),
    )
}
