//! Hugging Face model folders: `model.safetensors`, or shards named by
//! `model.safetensors.index.json`, memory-mapped; each tensor found by name with its dtype,
//! shape and bytes (headers validated by the `safetensors` crate: offsets inside the file,
//! byte lengths matching dtype and shape).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{ModelError, Result};

/// One mapped safetensors file and where its data starts.
struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
}

/// Where a tensor's bytes are.
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// A tensor's dtype, shape and bytes.
pub struct HfTensor<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
    /// The shard holding it (for errors).
    pub path: &'a Path,
}

pub struct HfFolder {
    pub dir: PathBuf,
    shards: Vec<Shard>,
    tensors: HashMap<String, Entry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `config.json` (or another JSON file of the folder) parsed.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

impl HfFolder {
    /// Maps the folder's weights: `model.safetensors`, or every shard the index names.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let json = read_json(&index)?;
            let map = json["weight_map"]
                .as_object()
                .ok_or_else(|| ModelError::Config {
                    path: index.clone(),
                    message: "no \"weight_map\" object".into(),
                })?;
            let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
            names.sort_unstable();
            names.dedup();
            if names.len() != map.len() && map.values().any(|v| !v.is_string()) {
                return Err(ModelError::Config {
                    path: index,
                    message: "weight_map values must be file names".into(),
                });
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut folder = Self {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            tensors: HashMap::new(),
        };
        for path in files {
            if path.parent() != Some(dir) {
                return Err(ModelError::Config {
                    path,
                    message: "a shard must be a file of the model's folder".into(),
                });
            }
            folder.add_shard(path)?;
        }
        Ok(folder)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<()> {
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        // SAFETY: a read-only map of a file Kiln never writes.
        let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        let (header, meta) = SafeTensors::read_metadata(&map).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        let shard = self.shards.len();
        for (name, info) in meta.tensors() {
            let entry = Entry {
                shard,
                dtype: info.dtype,
                shape: info.shape.clone(),
                range: info.data_offsets,
            };
            if self.tensors.insert(name.clone(), entry).is_some() {
                return Err(ModelError::Config {
                    path: path.clone(),
                    message: format!("tensor {name:?} is in more than one shard"),
                });
            }
        }
        self.shards.push(Shard {
            path,
            map,
            data_start: 8 + header,
        });
        Ok(())
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, or a typed error naming it and the folder.
    pub fn tensor(&self, name: &str) -> Result<HfTensor<'_>> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                tensor: name.into(),
            })?;
        let shard = &self.shards[e.shard];
        let data = &shard.map[shard.data_start + e.range.0..shard.data_start + e.range.1];
        Ok(HfTensor {
            dtype: e.dtype,
            shape: &e.shape,
            data,
            path: &shard.path,
        })
    }
}
