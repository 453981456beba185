//! Kiln's OpenAI-compatible server: `POST /v1/chat/completions` and `/v1/completions` (streamed
//! or not), `GET /v1/models`, `/health` and `/metrics`, over an engine that batches every running
//! request into each model step (continuous batching with chunked prefill).

pub mod api;
pub mod engine;
pub mod error;
pub mod heap;
pub mod metrics;
pub mod routes;
pub mod scheduler;
pub mod stop;
pub mod warmup;
