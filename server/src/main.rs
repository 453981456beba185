//! `kiln-server`: serve a model over the OpenAI API.
//!
//!     cargo run --release -p kiln-server -- --port 8080
//!     curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
//!       -d '{"messages":[{"role":"user","content":"Hi"}]}'

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use kiln_kernels::attention::KvFormat;
use kiln_model::quantize::Quant;
use kiln_runtime::DeviceOptions;
use kiln_server::engine::{Engine, EngineConfig};

/// Counts the heap bytes Rust code holds, for `/metrics` (`kiln_host_heap_bytes`).
#[global_allocator]
static HEAP: kiln_server::heap::Counting = kiln_server::heap::Counting;

#[derive(Parser)]
#[command(about = "Serve a model over the OpenAI API with Kiln")]
struct Args {
    /// GGUF model file or GPT-2 folder (default: SmolLM2-135M-Instruct, fetched if missing)
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// The model name clients pass (default: the file name without its extension)
    #[arg(long)]
    model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Most KV positions of one sequence, prompt and answer (default: the model's, at most 2048)
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,
    /// Positions per KV block, a power of two (default 16; int8 KV: at least 32)
    #[arg(long)]
    block_size: Option<usize>,
    /// Blocks in the KV pool that all sequences share (default: --max-batch whole contexts)
    #[arg(long, conflicts_with = "kv_memory")]
    kv_blocks: Option<usize>,
    /// The KV pool's size in MiB, instead of --kv-blocks
    #[arg(long)]
    kv_memory: Option<usize>,
    /// Most prompt tokens prefilled in one step, between decode steps
    #[arg(long, default_value_t = 128)]
    prefill_chunk: usize,
    /// Requests that may wait for a free slot; more are answered 503 with Retry-After
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Store matrices as: none (the file's format), f32, f16, int8-…
    #[arg(long, default_value = "none")]
    quant: Quant,
    /// KV cache storage: f32, f16, or int8
    #[arg(long, default_value = "f32")]
    kv: KvFormat,
    /// Start serving without first running a step of each shape (which compiles every kernel
    /// variant before the first request instead of during one)
    #[arg(long)]
    no_warmup: bool,
    /// Backend: vulkan, metal, dx12, gl
    #[arg(long)]
    backend: Option<String>,
    /// Adapter name substring
    #[arg(long)]
    adapter: Option<String>,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let device =
        DeviceOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let engine = Engine::start(EngineConfig {
        model: args.model,
        name: args.model_name,
        quant: args.quant,
        kv: args.kv,
        max_batch: args.max_batch,
        ctx_size: args.ctx_size,
        block_size: args.block_size,
        kv_blocks: args.kv_blocks,
        kv_memory_mb: args.kv_memory,
        prefill_chunk: args.prefill_chunk,
        max_queue: args.max_queue,
        device,
        warmup: !args.no_warmup,
    })?;
    let m = &engine.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "kiln-server: {} on {}; {} sequences of up to {} positions over {} KV blocks of {}",
        engine.info.name,
        engine.info.device,
        args.max_batch,
        engine.info.capacity,
        load(&m.kv_blocks_total),
        load(&m.kv_block_size)
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        // Tests and scripts read the address from this line.
        println!(
            "kiln-server: listening on http://{}",
            listener.local_addr()?
        );
        std::io::stdout().flush()?;
        axum::serve(listener, kiln_server::routes::router(engine))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
