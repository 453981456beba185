//! Tensors: a contiguous, row-major storage buffer with a dtype and a shape.
//!
//! Packed formats (GGUF blocks, int8 rows) live in `U8` tensors whose shape is the byte count;
//! the kernel that reads them knows their layout. Buffers are padded to 4 bytes, as storage
//! bindings and copies need.

use std::sync::Arc;

use crate::error::{DeviceError, Result, RuntimeError, check_limit};

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

/// A submitted recording, to wait for alone while later ones run.
pub struct Submitted(pub(crate) wgpu::SubmissionIndex);

/// A mappable staging buffer that results are copied into, created once and reused.
pub struct Readback {
    pub(crate) buffer: wgpu::Buffer,
}

pub(crate) fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

impl Tensor {
    /// A zero-filled tensor on `device`.
    pub(crate) fn zeros(
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor> {
        let bytes = (shape.iter().product::<usize>() * dtype.size()) as u64;
        let buffer = create_storage_buffer(device, limits, padded(bytes), "tensor")?;
        Ok(Tensor {
            buffer: Arc::new(buffer),
            dtype,
            shape: shape.to_vec(),
        })
    }

    /// Overwrites the whole tensor with `data`.
    pub(crate) fn write<T: bytemuck::Pod>(&self, queue: &wgpu::Queue, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() as u64 != self.size_bytes() {
            return Err(RuntimeError::Shape {
                what: format!("{:?}{:?}", self.dtype, self.shape),
                message: format!(
                    "holds {} bytes, data has {}",
                    self.size_bytes(),
                    bytes.len()
                ),
            });
        }
        if bytes.len().is_multiple_of(4) {
            queue.write_buffer(&self.buffer, 0, bytes);
        } else {
            let mut aligned = bytes.to_vec();
            aligned.resize(padded(bytes.len() as u64) as usize, 0);
            queue.write_buffer(&self.buffer, 0, &aligned);
        }
        Ok(())
    }
}

impl Readback {
    /// A staging buffer on `device` for reading back up to `bytes` bytes.
    pub(crate) fn new(device: &wgpu::Device, limits: &wgpu::Limits, bytes: u64) -> Result<Self> {
        let size = padded(bytes);
        check_limit(
            "a readback buffer",
            "max_buffer_size",
            size,
            limits.max_buffer_size,
        )?;
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Readback { buffer })
    }

    /// Waits for work submitted to `device` (up to submission `after` where given, not for the
    /// work submitted after it) and returns the first `len` elements copied here; fails with the
    /// device's kept error, if any, once the wait is over.
    pub(crate) fn map_read<T: bytemuck::Pod>(
        &self,
        device: &wgpu::Device,
        device_error: &DeviceError,
        len: usize,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let what = || format!("{len} x {}", std::any::type_name::<T>());
        if bytes > self.buffer.size() {
            return Err(RuntimeError::Readback {
                what: what(),
                message: format!("the staging buffer holds {} bytes", self.buffer.size()),
            });
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        self.buffer
            .map_async(wgpu::MapMode::Read, ..padded(bytes), move |r| {
                let _ = sender.send(r);
            });
        device
            .poll(wgpu::PollType::Wait {
                submission_index: after,
                timeout: None,
            })
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
        device_error.check()?;
        let view =
            self.buffer
                .get_mapped_range(..padded(bytes))
                .map_err(|e| RuntimeError::Readback {
                    what: what(),
                    message: e.to_string(),
                })?;
        let out = bytemuck::pod_collect_to_vec(&view[..bytes as usize]);
        drop(view);
        self.buffer.unmap();
        Ok(out)
    }
}

fn create_storage_buffer(
    device: &wgpu::Device,
    limits: &wgpu::Limits,
    size: u64,
    label: &str,
) -> Result<wgpu::Buffer> {
    check_limit(
        format!("a {label} buffer"),
        "max_buffer_size",
        size,
        limits.max_buffer_size,
    )?;
    Ok(device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}
