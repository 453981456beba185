//! Tensors: a contiguous, row-major storage buffer with a dtype and a shape.
//!
//! Packed formats (GGUF blocks, int8 rows) live in `U8` tensors whose shape is the byte count;
//! the kernel that reads them knows their layout. Buffers are padded to 4 bytes, as storage
//! bindings and copies need.

use std::sync::Arc;

use crate::device::Context;
use crate::error::{Result, RuntimeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
    I32,
    /// Raw bytes: packed quantized blocks or int8 rows.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::U8 => 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: Arc<wgpu::Buffer>,
    dtype: DType,
    shape: Vec<usize>,
}

impl Tensor {
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of data (without the padding to 4).
    pub fn size_bytes(&self) -> u64 {
        (self.len() * self.dtype.size()) as u64
    }

    /// The leading elements of this tensor's buffer seen with a smaller (or equal) `shape`: lets a
    /// step use buffers allocated once for the largest step.
    pub fn view(&self, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        if len > self.len() {
            return Err(RuntimeError::Shape {
                what: format!("{:?}{:?}", self.dtype, self.shape),
                message: format!(
                    "a view of shape {shape:?} needs {len} elements, the buffer holds {}",
                    self.len()
                ),
            });
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            dtype: self.dtype,
            shape: shape.to_vec(),
        })
    }
}

/// A mappable staging buffer that results are copied into, created once and reused.
pub struct Readback {
    pub(crate) buffer: wgpu::Buffer,
}

pub(crate) fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

impl Context {
    /// A zero-filled tensor.
    pub fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let bytes = (shape.iter().product::<usize>() * dtype.size()) as u64;
        let buffer = self.create_storage_buffer(padded(bytes), "tensor")?;
        Ok(Tensor {
            buffer: Arc::new(buffer),
            dtype,
            shape: shape.to_vec(),
        })
    }

    /// A tensor holding `data`, whose byte length must match `shape` and `dtype`.
    pub fn upload<T: bytemuck::Pod>(
        &self,
        data: &[T],
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor> {
        let tensor = self.zeros(dtype, shape)?;
        self.write(&tensor, data)?;
        Ok(tensor)
    }

    /// An f32 tensor.
    pub fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload(data, DType::F32, shape)
    }

    /// A `U8` tensor of packed bytes.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<Tensor> {
        self.upload(bytes, DType::U8, &[bytes.len()])
    }

    /// Overwrites the whole tensor with `data`.
    pub fn write<T: bytemuck::Pod>(&self, tensor: &Tensor, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() as u64 != tensor.size_bytes() {
            return Err(RuntimeError::Shape {
                what: format!("{:?}{:?}", tensor.dtype, tensor.shape),
                message: format!(
                    "holds {} bytes, data has {}",
                    tensor.size_bytes(),
                    bytes.len()
                ),
            });
        }
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(&tensor.buffer, 0, bytes);
        } else {
            let mut aligned = bytes.to_vec();
            aligned.resize(padded(bytes.len() as u64) as usize, 0);
            self.queue.write_buffer(&tensor.buffer, 0, &aligned);
        }
        Ok(())
    }

    /// Copies the tensor back to the CPU (waits for all submitted work). For repeated reads, use
    /// a [`Readback`] recorded into the step's own submit.
    pub fn read<T: bytemuck::Pod>(&self, tensor: &Tensor) -> Result<Vec<T>> {
        let staging = self.readback(tensor.size_bytes())?;
        let mut rec = self.recorder();
        rec.read_back(tensor, &staging)?;
        rec.submit()?;
        self.map_read(&staging, tensor.len())
    }

    /// A staging buffer for reading back up to `bytes` bytes, to keep and reuse.
    pub fn readback(&self, bytes: u64) -> Result<Readback> {
        let size = padded(bytes);
        self.check_limit(
            "a readback buffer",
            "max_buffer_size",
            size,
            self.limits.max_buffer_size,
        )?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Readback { buffer })
    }

    /// Waits for submitted work and returns the first `len` elements copied into `staging`.
    pub fn map_read<T: bytemuck::Pod>(&self, staging: &Readback, len: usize) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let what = || format!("{len} x {}", std::any::type_name::<T>());
        if bytes > staging.buffer.size() {
            return Err(RuntimeError::Readback {
                what: what(),
                message: format!("the staging buffer holds {} bytes", staging.buffer.size()),
            });
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        staging
            .buffer
            .map_async(wgpu::MapMode::Read, ..padded(bytes), move |r| {
                let _ = sender.send(r);
            });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RuntimeError::Readback {
                what: what(),
                message: e.to_string(),
            })?;
        receiver
            .recv()
            .map_err(|e| RuntimeError::Readback {
                what: what(),
                message: e.to_string(),
            })?
            .map_err(|e| RuntimeError::Readback {
                what: what(),
                message: e.to_string(),
            })?;
        self.check_device_error()?;
        let view = staging
            .buffer
            .get_mapped_range(..padded(bytes))
            .map_err(|e| RuntimeError::Readback {
                what: what(),
                message: e.to_string(),
            })?;
        let out = bytemuck::pod_collect_to_vec(&view[..bytes as usize]);
        drop(view);
        staging.buffer.unmap();
        Ok(out)
    }

    pub(crate) fn create_storage_buffer(&self, size: u64, label: &str) -> Result<wgpu::Buffer> {
        self.check_limit(
            format!("a {label} buffer"),
            "max_buffer_size",
            size,
            self.limits.max_buffer_size,
        )?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }
}
