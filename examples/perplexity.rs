//! Perplexity of a text file under a GGUF model, with a sliding window.
//!
//!     cargo run --release --example perplexity -- -f text.txt -c 512 --stride 256

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use kiln::kernels::attention::KvFormat;
use kiln::model::perplexity::perplexity;
use kiln::model::quantize::Quant;

mod common;

#[derive(Parser)]
#[command(about = "Perplexity of a text file with Kiln")]
struct Args {
    /// GGUF model file or GPT-2 folder (default: SmolLM2-135M-Instruct, fetched into the cache if missing)
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Store matrices as: none (the file's format), f32, f16, int8-tensor, int8-channel,
    /// int8-g32/g64/g128, or int8-zp-… for asymmetric (zero-point) int8
    #[arg(long, default_value = "none")]
    quant: Quant,
    /// KV cache storage: f32, f16, or int8 (keys per channel, values per token)
    #[arg(long, default_value = "f32")]
    kv: KvFormat,
    /// LLM.int8()-style outlier decomposition with an int8 --quant: input columns whose
    /// activations exceed this magnitude on a calibration text stay in f32 (the paper uses 6)
    #[arg(long)]
    outliers: Option<f32>,
    /// Text file to score
    #[arg(short, long)]
    file: PathBuf,
    /// Window (context) size in tokens
    #[arg(short = 'c', long, default_value_t = 512)]
    ctx_size: usize,
    /// Tokens each window advances (default: half the window)
    #[arg(long)]
    stride: Option<usize>,
    #[arg(long)]
    backend: Option<String>,
    #[arg(long)]
    adapter: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let ctx = common::device(args.backend.as_deref(), args.adapter.as_deref())?;
    let loaded = common::open(&ctx, args.model.clone(), args.quant, args.outliers)?;
    let ids = loaded.tokenizer.encode(&text)?;
    let stride = args.stride.unwrap_or((args.ctx_size / 2).max(1));
    let start = std::time::Instant::now();
    let p = perplexity(
        &ctx,
        loaded.model.as_ref(),
        &ids,
        (args.ctx_size, stride, 128),
        args.kv,
    )?;
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "perplexity": p.perplexity, "tokens": p.tokens, "nll": p.nll, "window": args.ctx_size, "stride": stride })
        );
    } else {
        println!(
            "perplexity {:.4} over {} scored tokens (window {}, stride {stride})",
            p.perplexity, p.tokens, args.ctx_size
        );
    }
    eprintln!("kiln: {:.1} s", secs);
    Ok(())
}
