//! Kiln benchmarks.
//!
//! - [`roofline`]: kernels at model shapes against the measured bandwidth ceiling.
//! - [`models`]: prefill, decode, batching and KV-cache curves of whole models.
//! - [`peer`]: llama.cpp's `llama-bench` on the same model, for a side-by-side row.
//! - [`plots`]: SVG charts of the curves and the roofline.
//! - [`report`]: the portable JSON + markdown report of `kiln-bench`.
//! - [`speculative`]: speculative decoding against plain greedy decoding.
//! - [`synthetic`]: a Llama 3.2 1B of deterministic weights in Q4_K_M's mix of types.
//!
//! `src/bin/kiln-bench.rs` is the portable runner; `src/bin/gpt2-124m.rs` times GPT-2 124M at
//! its real shapes with random weights.

pub mod models;
pub mod peer;
pub mod plots;
pub mod report;
pub mod roofline;
pub mod speculative;
pub mod synthetic;
