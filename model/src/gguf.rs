//! GGUF v2/v3 reader, memory-mapped, following the spec's order: header, metadata key/values,
//! tensor infos, then the aligned data section (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>).
//! Every read is bounds-checked, so truncated or corrupt files give an error naming the file and
//! the byte offset, and every tensor is checked to lie inside the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kiln_kernels::WeightFormat;

use crate::error::{ModelError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_name(&self) -> String {
        match self {
            Value::Array(items) => format!(
                "array of {}",
                items.first().map_or("nothing".into(), Value::type_name)
            ),
            Value::String(_) => "string".into(),
            other => format!("{other:?}")
                .split('(')
                .next()
                .unwrap_or("?")
                .to_lowercase(),
        }
    }

    /// Any integer type that fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// ggml tensor types Kiln reads, and the others by number.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Other(u32),
}

/// ggml's names for the types Kiln does not read, by number (`ggml_type` in ggml.h).
const OTHER_NAMES: &[(u32, &str)] = &[
    (9, "Q8_1"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

impl GgmlType {
    fn from_u32(v: u32) -> Self {
        match v {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The weight format the kernels read this type in (`None`: Kiln cannot read it).
    pub fn format(self) -> Option<WeightFormat> {
        Some(match self {
            GgmlType::F32 => WeightFormat::F32,
            GgmlType::F16 => WeightFormat::F16,
            GgmlType::BF16 => WeightFormat::BF16,
            GgmlType::Q4_0 => WeightFormat::Q4_0,
            GgmlType::Q4_1 => WeightFormat::Q4_1,
            GgmlType::Q5_0 => WeightFormat::Q5_0,
            GgmlType::Q5_1 => WeightFormat::Q5_1,
            GgmlType::Q8_0 => WeightFormat::Q8_0,
            GgmlType::Q2_K => WeightFormat::Q2_K,
            GgmlType::Q3_K => WeightFormat::Q3_K,
            GgmlType::Q4_K => WeightFormat::Q4_K,
            GgmlType::Q5_K => WeightFormat::Q5_K,
            GgmlType::Q6_K => WeightFormat::Q6_K,
            GgmlType::Other(_) => return None,
        })
    }

    /// (values per block, bytes per block) for supported types.
    pub fn block(self) -> Option<(u64, u64)> {
        let format = self.format()?;
        Some(match format.block_bytes() {
            Some(bytes) => (format.block_values() as u64, bytes as u64),
            None => (1, format.row_bytes(1) as u64),
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Other(n) => match OTHER_NAMES.iter().find(|(v, _)| v == n) {
                Some((_, name)) => write!(f, "{name}"),
                None => write!(f, "ggml type {n}"),
            },
            known => write!(f, "{known:?}"),
        }
    }
}

/// One tensor's header. `dims[0]` is the contiguous dimension (ggml's `ne0`).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Bytes of data (0 for unsupported types, whose size Kiln does not know).
    pub size: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    map: memmap2::Mmap,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: impl Into<String>) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            offset: self.pos,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "needs {n} more bytes but the file ends at {} (truncated?)",
                self.bytes.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `min_size` bytes each, which must fit in what is left.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.err(format!(
                "{what} count {n} cannot fit in the {left} bytes left"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count(1, "string length")?;
        let at = self.pos;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ModelError::Gguf {
            path: self.path.to_path_buf(),
            offset: at,
            message: "string is not UTF-8".into(),
        })
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("bool value {b}"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth > 0 {
                    return Err(self.err("nested arrays are not supported"));
                }
                let item = self.u32()?;
                // Each item takes at least its encoded size, so the count is bounded by the file.
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count(min, "array")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and parses `path` (memory-mapped; tensor data is not read until asked for).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only; Kiln never writes model files, and a file changed underneath
        // a running process is outside what any loader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, map)
    }

    fn parse(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let mut c = Cursor {
            bytes: &map,
            pos: 0,
            path: &path,
        };
        if c.take(4)? != MAGIC {
            return Err(ModelError::Gguf {
                path: path.clone(),
                offset: 0,
                message: "missing the GGUF magic".into(),
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = c.count(24, "tensor")?;
        let n_kv = c.count(12, "metadata")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!(
                    "tensor {name:?} has {n_dims} dimensions (1..={MAX_DIMS})"
                )));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = GgmlType::from_u32(c.u32()?);
            let offset = c.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size: 0,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| c.err(format!("general.alignment {v:?} is not a power of two")))?,
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        for t in &mut tensors {
            let elements = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let Some(elements) = elements else {
                return Err(c.err(format!("tensor {:?} dims {:?} overflow", t.name, t.dims)));
            };
            if let Some((block, bytes)) = t.ggml_type.block() {
                if t.dims[0] % block != 0 {
                    return Err(c.err(format!(
                        "tensor {:?} rows of {} values are not whole {} blocks",
                        t.name, t.dims[0], t.ggml_type
                    )));
                }
                t.size = (elements / block)
                    .checked_mul(bytes)
                    .ok_or_else(|| c.err(format!("tensor {:?} size overflows", t.name)))?;
            }
            t.offset = data_start
                .checked_add(t.offset)
                .ok_or_else(|| c.err(format!("tensor {:?} offset overflows", t.name)))?;
            let end = t.offset.saturating_add(t.size);
            if end > file_len || (t.offset > file_len) {
                return Err(ModelError::TensorOutOfBounds {
                    path: path.clone(),
                    tensor: t.name.clone(),
                    end,
                    file_len,
                });
            }
        }

        Ok(Self {
            path,
            version,
            metadata,
            tensors,
            map,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn need(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| ModelError::MissingKey {
            path: self.path.clone(),
            key: key.into(),
        })
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> ModelError {
        ModelError::WrongType {
            path: self.path.clone(),
            key: key.into(),
            expected,
            found: found.type_name(),
        }
    }

    /// An integer value that fits in u32.
    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.need(key)?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.wrong(key, "an unsigned 32-bit integer", v))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.need(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => Err(self.wrong(key, "a float", other)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.need(key)? {
            Value::Bool(v) => Ok(*v),
            other => Err(self.wrong(key, "a bool", other)),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        match self.need(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong(key, "a string", other)),
        }
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.need(key)?;
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.wrong(key, "an array of strings", v)),
                })
                .collect(),
            other => Err(self.wrong(key, "an array of strings", other)),
        }
    }

    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let v = self.need(key)?;
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match *i {
                    Value::I32(n) => Ok(n),
                    Value::U32(n) => Ok(n as i32),
                    _ => Err(self.wrong(key, "an array of integers", v)),
                })
                .collect(),
            other => Err(self.wrong(key, "an array of integers", other)),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.into(),
            })
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.iter().any(|t| t.name == name)
    }

    /// The tensor's bytes; errors for types Kiln cannot read.
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<&[u8]> {
        if t.ggml_type.block().is_none() {
            return Err(ModelError::UnsupportedTensorType {
                path: self.path.clone(),
                tensor: t.name.clone(),
                ggml_type: t.ggml_type.to_string(),
            });
        }
        Ok(&self.map[t.offset as usize..(t.offset + t.size) as usize])
    }

    /// Errors unless the tensor's dims are `expected` (ggml order: contiguous dimension first).
    pub fn check_dims(&self, t: &TensorInfo, expected: &[u64]) -> Result<()> {
        if t.dims != expected {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                tensor: t.name.clone(),
                expected: expected.to_vec(),
                found: t.dims.clone(),
            });
        }
        Ok(())
    }
}
