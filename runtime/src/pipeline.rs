//! The pipeline cache: one compiled pipeline per (shader family, variant, entry point).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::device::Context;
use crate::error::{Result, RuntimeError};
use crate::shader::{Defines, Shader, preprocess};

/// Identifies a compiled compute pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defines: Defines,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<(&'static str, Defines), Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

impl Context {
    /// The pipeline for `entry` of `shader` under `defines`, compiled on first use.
    pub fn pipeline(
        &self,
        shader: &Shader,
        entry: &'static str,
        defines: &Defines,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            shader: shader.name,
            entry,
            defines: defines.clone(),
        };
        let mut pipelines = self
            .pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(pipeline) = pipelines.get(&key) {
            return Ok(pipeline.clone());
        }
        let module = self.shader_module(shader, defines)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(RuntimeError::Shader {
                shader: shader.name,
                variant: format!("{defines}, entry {entry}"),
                message: error.to_string(),
            });
        }
        let pipeline = Arc::new(pipeline);
        pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn shader_module(&self, shader: &Shader, defines: &Defines) -> Result<Arc<wgpu::ShaderModule>> {
        let mut modules = self
            .pipelines
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(module) = modules.get(&(shader.name, defines.clone())) {
            return Ok(module.clone());
        }
        let source = preprocess(shader, defines)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(RuntimeError::Shader {
                shader: shader.name,
                variant: defines.to_string(),
                message: error.to_string(),
            });
        }
        let module = Arc::new(module);
        modules.insert((shader.name, defines.clone()), module.clone());
        Ok(module)
    }
}
