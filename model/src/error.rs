//! The model crate's error type: every variant names the file, key, tensor, limit or value.

use std::path::PathBuf;

use kiln_kernels::KernelError;
use kiln_runtime::RuntimeError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid GGUF file at byte {offset}: {message}")]
    Gguf {
        path: PathBuf,
        offset: usize,
        message: String,
    },
    #[error("{path}: metadata key {key:?} is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key {key:?} should be {expected}, found {found}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: tensor {tensor:?} is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error(
        "{path}: tensor {tensor:?} has type {ggml_type}, which Kiln does not read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)"
    )]
    UnsupportedTensorType {
        path: PathBuf,
        tensor: String,
        ggml_type: String,
    },
    #[error("{path}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error(
        "{path}: tensor {tensor:?} ends at byte {end}, past the end of the file ({file_len} bytes): truncated?"
    )]
    TensorOutOfBounds {
        path: PathBuf,
        tensor: String,
        end: u64,
        file_len: u64,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("prompt {index} is empty: nothing to condition on")]
    EmptyPrompt { index: usize },
    #[error(
        "prompt {index} has {tokens} tokens but the context holds {capacity} (raise -c/--ctx-size or shorten it)"
    )]
    PromptTooLong {
        index: usize,
        tokens: usize,
        capacity: usize,
    },
    #[error(
        "the KV cache is full: this step needs {needed} more blocks of {block} positions and {available} are left (raise the pool or wait for sequences to finish)"
    )]
    KvFull {
        needed: usize,
        available: usize,
        block: usize,
    },
    #[error("chat template: {0}")]
    Template(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
