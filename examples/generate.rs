//! Text generation from a GGUF model (SmolLM2-135M-Instruct by default, fetched on first use).
//!
//!     cargo run --release --example generate -- -p "The capital of France is"
//!     cargo run --release --example generate -- --chat -p "Write a haiku about GPUs" --temp 0.7
//!     cargo run --release --example generate -- -p "One" -p "Two" --json   # one batch

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use kiln::kernels::attention::KvFormat;
use kiln::model::chat::{self, Message};
use kiln::model::generate::{GenerateConfig, generate};
use kiln::model::quantize::Quant;
use kiln::model::sampling::SamplerConfig;
use kiln::model::speculative::{SpecConfig, Speculation};

mod common;

#[derive(Parser)]
#[command(about = "Generate text with Kiln on any GPU wgpu reaches")]
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
    /// Prompt; repeat for several prompts, generated together as one batch
    #[arg(short, long)]
    prompt: Vec<String>,
    /// File with one prompt per line (added to -p prompts)
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// Tokens to generate per prompt
    #[arg(short = 'n', long, default_value_t = 128)]
    n_predict: usize,
    /// Sampling temperature (0: greedy)
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed (default: from the clock)
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the text ends with this string (repeatable)
    #[arg(long)]
    stop: Vec<String>,
    /// Wrap each prompt in the model's chat template as a user message
    #[arg(long)]
    chat: bool,
    /// Context size: KV positions per sequence (default: the model's, at most 2048)
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,
    /// Backend: vulkan, metal, dx12, gl
    #[arg(long)]
    backend: Option<String>,
    /// Adapter name substring
    #[arg(long)]
    adapter: Option<String>,
    /// Print one JSON object per prompt instead of streaming text
    #[arg(long)]
    json: bool,
    /// Wait for each decode step's tokens before submitting the next (by default, on GPUs, greedy
    /// steps are chained on the device and their tokens read a step behind)
    #[arg(long)]
    sync: bool,
    /// Time every kernel launch with GPU timestamps and print where the time went, kernel by
    /// kernel (needs timestamp queries; the run is slower while it is timed)
    #[arg(long)]
    profile: bool,
    /// Print the model's matrices by weight format: how many, and their bytes
    #[arg(short, long)]
    verbose: bool,
    /// Speculative decoding: ngram[:N] drafts by prompt lookup (the last N tokens, then fewer,
    /// matched against the prompt and the text so far); the model checks each draft in one pass
    /// and the output is what plain decoding gives
    #[arg(long)]
    spec: Option<Speculation>,
    /// Most tokens drafted per sequence and step with --spec
    #[arg(long, default_value_t = 8)]
    draft_tokens: usize,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let mut prompts = args.prompt.clone();
    if let Some(f) = &args.prompts_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if prompts.is_empty() {
        bail!("no prompt: pass -p \"...\" or --prompts-file FILE");
    }

    let ctx = common::device(args.backend.as_deref(), args.adapter.as_deref())?;
    let loaded = common::open(&ctx, args.model.clone(), args.quant, args.outliers)?;
    if args.verbose {
        print_formats(&loaded);
    }
    let (model, tok) = (loaded.model.as_ref(), &loaded.tokenizer);
    let texts: Vec<String> = if args.chat {
        let template = loaded
            .chat_template
            .as_deref()
            .context("--chat needs a chat template (tokenizer.chat_template) in the model")?;
        let name = |id: Option<u32>| id.and_then(|i| tok.decode(&[i]).ok()).unwrap_or_default();
        let (bos, eos) = (name(tok.bos), name(tok.eos));
        prompts
            .iter()
            .map(|p| {
                chat::render(
                    template,
                    &[Message {
                        role: "user".into(),
                        content: p.clone(),
                    }],
                    &bos,
                    &eos,
                )
            })
            .collect::<Result<_, _>>()?
    } else {
        prompts.clone()
    };
    let ids = texts
        .iter()
        .map(|t| tok.encode(t))
        .collect::<Result<Vec<_>, _>>()?;

    let cfg = GenerateConfig {
        max_tokens: args.n_predict,
        sampler: SamplerConfig {
            temperature: args.temp,
            top_k: args.top_k,
            top_p: args.top_p,
            repeat_penalty: args.repeat_penalty,
            seed: args.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            }),
            ..SamplerConfig::default()
        },
        stop: args.stop.clone(),
        capacity: args.ctx_size.unwrap_or(loaded.n_ctx.min(2048)),
        kv: args.kv,
        ahead: args.sync.then_some(false),
        spec: args.spec.map(|mode| SpecConfig {
            mode,
            draft_tokens: args.draft_tokens,
        }),
        ..GenerateConfig::default()
    };
    let stream = !args.json && prompts.len() == 1;
    if stream {
        print!("{}", prompts[0]);
        std::io::stdout().flush()?;
    }
    if args.profile {
        ctx.profile_begin()?;
    }
    let (results, stats) = generate(&ctx, model, tok, &ids, &cfg, |_, piece| {
        if stream {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    })?;
    if stream {
        println!();
    }
    for (prompt, r) in prompts.iter().zip(&results) {
        if args.json {
            let obj = serde_json::json!({
                "prompt": prompt,
                "prompt_ids": r.prompt_ids,
                "generated_ids": r.generated_ids,
                "text": r.text,
                "stop": format!("{:?}", r.stop),
                "prefill_tokens_per_s": stats.prefill_tokens_per_s(),
                "decode_tokens_per_s": stats.decode_tokens_per_s(),
                "adapter": ctx.info.name,
                "backend": format!("{:?}", ctx.info.backend),
            });
            let mut obj = obj;
            if cfg.spec.is_some() {
                obj["drafted"] = r.drafted.into();
                obj["accepted"] = r.accepted.into();
                obj["acceptance_rate"] = (r.accepted as f64 / r.drafted.max(1) as f64).into();
            }
            println!("{obj}");
        } else if !stream {
            println!("--- {prompt}\n{prompt}{}\n", r.text);
        }
    }
    eprintln!(
        "kiln: prefill {} tokens in {:.2} s ({:.1} tokens/s); decode {} tokens in {:.2} s ({:.1} tokens/s, {} steps, batch {})",
        stats.prefill_tokens,
        stats.prefill_time.as_secs_f64(),
        stats.prefill_tokens_per_s(),
        stats.decode_tokens,
        stats.decode_time.as_secs_f64(),
        stats.decode_tokens_per_s(),
        stats.decode_steps,
        prompts.len()
    );
    if let Some(spec) = &cfg.spec {
        eprintln!(
            "kiln: speculative {}: {} of {} drafted tokens kept ({:.0}%), {:.2} tokens per step",
            spec.mode,
            stats.accepted,
            stats.drafted,
            100.0 * stats.accepted as f64 / stats.drafted.max(1) as f64,
            stats.decode_tokens as f64 / stats.decode_steps.max(1) as f64 / prompts.len() as f64
        );
    }
    if args.profile {
        print_profile(&ctx.profile_end());
    }
    Ok(())
}

/// The kernels of the run (prefill and decode), the most GPU time first.
fn print_profile(profile: &kiln::runtime::Profile) {
    let total = profile.seconds();
    eprintln!(
        "kiln: profile of the run (prefill and decode): {} launches, {:.1} ms of GPU time{}",
        profile.launches(),
        total * 1e3,
        if profile.unmeasured > 0 {
            format!(" ({} launches not timed)", profile.unmeasured)
        } else {
            String::new()
        }
    );
    eprintln!(
        "{:<28} {:<7} {:>9} {:>10} {:>8} {:>7}",
        "kernel", "weights", "launches", "ms", "µs each", "share"
    );
    for r in kiln::kernels::profile::by_kernel(profile) {
        eprintln!(
            "{:<28} {:<7} {:>9} {:>10.2} {:>8.0} {:>6.1}%",
            r.kernel,
            r.weights,
            r.launches,
            r.seconds * 1e3,
            r.seconds / r.launches.max(1) as f64 * 1e6,
            if total > 0.0 {
                100.0 * r.seconds / total
            } else {
                0.0
            }
        );
    }
}

/// Prints the loaded matrices grouped by weight format (as GGUF names the types): count, bytes
/// and bits per weight.
fn print_formats(loaded: &kiln_model::loader::Loaded) {
    let mut by_format: std::collections::BTreeMap<String, (usize, u64, u64)> = Default::default();
    for w in loaded.model.matrices() {
        let entry = by_format.entry(w.format.name()).or_default();
        entry.0 += 1;
        entry.1 += w.size_bytes();
        entry.2 += (w.n * w.k) as u64;
    }
    for (name, (count, bytes, values)) in by_format {
        eprintln!(
            "kiln:   {name:>8}: {count:>4} matrices, {:>8.1} MB, {:.2} bits per weight",
            bytes as f64 / 1e6,
            8.0 * bytes as f64 / values as f64
        );
    }
}
