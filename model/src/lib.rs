//! Kiln models: file → loader → weights on the GPU → graph of kernel launches → logits → sampler.
//!
//! - [`gguf`]: the GGUF reader.
//! - [`error`]: the crate's error type.
//!
//! The Llama graph, tokenizer, sampler and generation loop are being built (issue 3); GPT-2 follows.

pub mod error;
pub mod gguf;

pub use error::{ModelError, Result};
