//! The pipeline cache: one compiled pipeline per (shader family, variant, entry point).
//!
//! With `KILN_RECORD_VARIANTS=FILE` every variant compiled is appended to FILE as
//! `shader<TAB>entry<TAB>defines`, so the translation test can check each variant a run of the
//! suite really launched (kernels/tests/translate.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::disk_cache::DiskCache;
use crate::error::{Result, RuntimeError};
use crate::layout::{Reflection, entry_layouts};
use crate::shader::{Defines, Shader, preprocess};

/// Identifies a compiled compute pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defines: Defines,
}

/// A compiled shader module and naga's reading of it, for its entry points' layouts.
#[derive(Clone)]
struct Module {
    compiled: Arc<wgpu::ShaderModule>,
    reflection: Arc<Reflection>,
}

/// Shader modules and pipelines compiled on one device, kept for the device's lifetime, and the
/// driver's compiled code kept on disk between runs where the backend allows.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<(&'static str, Defines), Module>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    pub(crate) disk: Option<DiskCache>,
}

impl PipelineCache {
    pub(crate) fn new(disk: Option<DiskCache>) -> Self {
        Self {
            disk,
            ..Self::default()
        }
    }

    /// Pipelines compiled so far.
    pub(crate) fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The pipeline for `entry` of `shader` under `defines`, compiled on `device` on first use.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        shader: &Shader,
        entry: &'static str,
        defines: &Defines,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            shader: shader.name,
            entry,
            defines: defines.clone(),
        };
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipeline) = pipelines.get(&key) {
            return Ok(pipeline.clone());
        }
        let module = self.shader_module(device, shader, defines)?;
        let groups = entry_layouts(device, &module.reflection, entry).ok_or_else(|| {
            RuntimeError::Shader {
                shader: shader.name,
                variant: format!("{defines}, entry {entry}"),
                message: "the entry point binds something other than buffers, or its group 0 \
                          binding 0 is not the parameters' uniform"
                    .into(),
            }
        })?;
        let groups: Vec<Option<&wgpu::BindGroupLayout>> = groups.iter().map(Some).collect();
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &groups,
            immediate_size: 0,
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&layout),
            module: &module.compiled,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: self.disk.as_ref().map(|d| &d.cache),
        });
        if let Some(disk) = &self.disk {
            disk.note_compiled();
        }
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(RuntimeError::Shader {
                shader: shader.name,
                variant: format!("{defines}, entry {entry}"),
                message: error.to_string(),
            });
        }
        record_variant(&key);
        let pipeline = Arc::new(pipeline);
        pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn shader_module(
        &self,
        device: &wgpu::Device,
        shader: &Shader,
        defines: &Defines,
    ) -> Result<Module> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(module) = modules.get(&(shader.name, defines.clone())) {
            return Ok(module.clone());
        }
        let source = preprocess(shader, defines)?;
        let reflection = Reflection::of(&source);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let error = pollster::block_on(scope.pop()).map(|e| e.to_string());
        let reflection = match (error, reflection) {
            (None, Some(reflection)) => reflection,
            (error, _) => {
                return Err(RuntimeError::Shader {
                    shader: shader.name,
                    variant: defines.to_string(),
                    message: error.unwrap_or_else(|| "naga cannot read the module".into()),
                });
            }
        };
        let module = Module {
            compiled: Arc::new(module),
            reflection: Arc::new(reflection),
        };
        modules.insert((shader.name, defines.clone()), module.clone());
        Ok(module)
    }
}

/// Appends `key` to the file `KILN_RECORD_VARIANTS` names, if any. A failed write is logged, not
/// raised: recording serves the tests and must never stop a launch.
fn record_variant(key: &PipelineKey) {
    static FILE: std::sync::OnceLock<Option<Mutex<std::fs::File>>> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os("KILN_RECORD_VARIANTS").filter(|p| !p.is_empty())?;
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        opened
            .map_err(|e| log::warn!("KILN_RECORD_VARIANTS {path:?}: {e}"))
            .ok()
            .map(Mutex::new)
    });
    if let Some(file) = file {
        use std::io::Write;
        let line = format!("{}\t{}\t{}\n", key.shader, key.entry, key.defines);
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            log::warn!("KILN_RECORD_VARIANTS: {e}");
        }
    }
}
