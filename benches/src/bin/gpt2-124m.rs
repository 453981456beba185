//! GPT-2 124M at its real shapes with random weights: prefill and decode tokens/s, and the bytes
//! one decode step reads against the time it takes.
//!
//!     cargo run --release -p kiln-benches --bin gpt2-124m -- [--prompt 128] [--decode 32] [--quant f16] [--json]
//!
//! Times are wall clock around submit + readback (one submit per step), medians of `--reps` runs.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use kiln_kernels::attention::KvFormat;
use kiln_model::gpt2::{Gpt2, Gpt2Config};
use kiln_model::quantize::Quant;
use kiln_model::session::{Architecture, Output, Session};
use kiln_runtime::Context;

#[derive(Parser)]
struct Args {
    /// Prompt tokens for the prefill measurement
    #[arg(long, default_value_t = 128)]
    prompt: usize,
    /// Decode steps to time (after the prompt)
    #[arg(long, default_value_t = 32)]
    decode: usize,
    /// Weight format: f32 (as GPT-2 checkpoints ship), f16, or an int8 scheme (int8-channel, int8-g64, …)
    #[arg(long, default_value = "f32")]
    quant: Quant,
    /// KV cache format: f32, f16 or int8
    #[arg(long, default_value = "f32")]
    kv: KvFormat,
    /// Repetitions; the median is reported
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ctx = Context::from_env()?;
    eprintln!("kiln: {}", ctx.describe());
    let cfg = Gpt2Config::gpt2_124m();
    let model = Gpt2::random(&ctx, cfg, args.quant, 124)?;
    let capacity = (args.prompt + args.decode + 1).min(cfg.n_positions);
    let mut session = Session::with_kv(&ctx, &model, 1, capacity, args.prompt.max(1), args.kv)?;
    let prompt: Vec<(usize, u32)> = (0..args.prompt)
        .map(|i| (0, (i * 7919 % cfg.n_vocab) as u32))
        .collect();

    // Warm-up compiles every pipeline.
    session.step(&ctx, &model, &prompt, &[prompt.len() - 1], Output::Argmax)?;
    session.step(&ctx, &model, &[(0, 1)], &[0], Output::Argmax)?;

    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        session.reset(0);
        let t = Instant::now();
        let mut next = session
            .step(&ctx, &model, &prompt, &[prompt.len() - 1], Output::Argmax)?
            .tokens[0];
        prefill.push(args.prompt as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..args.decode {
            next = session
                .step(&ctx, &model, &[(0, next)], &[0], Output::Argmax)?
                .tokens[0];
        }
        decode.push(args.decode as f64 / t.elapsed().as_secs_f64());
    }
    let (prefill, decode) = (median(prefill), median(decode));
    // KV read per step: the cache's bytes per position (scales included) at the mean decode position.
    let mean_pos = (args.prompt + args.decode / 2) as u64;
    let kv = session.kv_bytes() / capacity as u64 * mean_pos;
    let bytes = model.weight_bytes_per_token() + kv;
    let report = serde_json::json!({
        "model": "gpt2-124m (random weights)",
        "adapter": ctx.info.name,
        "backend": format!("{:?}", ctx.info.backend),
        "driver": ctx.info.driver_info,
        "weights": args.quant.to_string(),
        "kv": args.kv.to_string(),
        "prompt_tokens": args.prompt,
        "prefill_tokens_per_s": prefill,
        "decode_tokens_per_s": decode,
        "bytes_per_token": bytes,
        "decode_gb_per_s": bytes as f64 * decode / 1e9,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "gpt2-124m ({} weights) on {}: prefill {:.1} tokens/s ({} tokens), decode {:.2} tokens/s; {:.1} MB read per decoded token -> {:.2} GB/s",
            report["weights"].as_str().unwrap_or("?"),
            ctx.info.name,
            prefill,
            args.prompt,
            decode,
            bytes as f64 / 1e6,
            bytes as f64 * decode / 1e9
        );
    }
    Ok(())
}
