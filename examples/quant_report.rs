//! Quality and memory of every weight format on one model: perplexity on a fixed text, the greedy
//! continuation of a fixed prompt, bytes of weights and of the KV buffer (measured on the device,
//! next to their formulas), and decode speed. Writes a markdown table (and optionally JSON).
//!
//!     cargo run --release --example quant_report -- [-m MODEL] [--tokens 512] [--out docs/quantization.md]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Parser;
use kiln::kernels::WeightFormat;
use kiln::model::generate::{GenerateConfig, generate};
use kiln::model::perplexity::perplexity;
use kiln::model::quantize::Quant;
use kiln::model::session::Session;

mod common;

#[derive(Parser)]
struct Args {
    /// GGUF model file or GPT-2 folder (default: SmolLM2-135M-Instruct, fetched if missing)
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Text scored for perplexity
    #[arg(short, long, default_value = "docs/text/founding-documents.txt")]
    file: PathBuf,
    /// Score the first N tokens of the text, as one window
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Prompt whose greedy continuation is shown
    #[arg(long, default_value = "The quick brown fox jumped over the")]
    prompt: String,
    /// Tokens of greedy continuation
    #[arg(short = 'n', long, default_value_t = 24)]
    n_predict: usize,
    /// Schemes to compare (default: all); repeatable
    #[arg(long)]
    quant: Vec<Quant>,
    /// Markdown report to write (printed to stdout if absent)
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON rows to write beside it
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    backend: Option<String>,
    #[arg(long)]
    adapter: Option<String>,
}

struct Row {
    quant: Quant,
    weight_bytes: u64,
    weight_formula: f64,
    kv_bytes: u64,
    kv_formula: u64,
    perplexity: f64,
    greedy: String,
    decode_tokens_per_s: f64,
}

/// Bytes per weight value that a format's definition implies (block headers and int8 scales
/// included), so the formula is params × bytes.
fn bytes_per_value(format: WeightFormat, k: usize) -> f64 {
    match format {
        WeightFormat::F32 => 4.0,
        WeightFormat::F16 => 2.0,
        WeightFormat::Int8 { group, zero_point } => {
            let groups = k.div_ceil(group) as f64 / k as f64;
            1.0 + groups * if zero_point { 8.0 } else { 4.0 }
        }
        block => block.block_bytes().unwrap_or(0) as f64 / 32.0,
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let quants = if args.quant.is_empty() {
        Quant::all()
    } else {
        args.quant.clone()
    };
    let ctx = common::device(args.backend.as_deref(), args.adapter.as_deref())?;
    let mut rows = Vec::new();
    let mut model_name = String::new();
    let mut scored = 0;
    let mut kv_positions = 0;
    for &quant in &quants {
        let loaded = common::open(&ctx, args.model.clone(), quant)?;
        let model = loaded.model.as_ref();
        let d = model.dims();
        model_name = format!(
            "{} ({} layers, width {}, {} heads / {} KV heads, vocab {})",
            loaded.arch, d.n_layer, d.n_embd, d.n_head, d.n_kv_head, d.n_vocab
        );
        let ids = loaded.tokenizer.encode(&text)?;
        let n = args.tokens.min(ids.len()).min(loaded.n_ctx);
        scored = n;
        let started = Instant::now();
        let p = perplexity(&ctx, model, &ids[..n], n, n, 128)?;
        eprintln!(
            "kiln: {quant}: perplexity {:.4} over {} tokens in {:.0} s",
            p.perplexity,
            p.tokens,
            started.elapsed().as_secs_f64()
        );

        let prompt = loaded.tokenizer.encode(&args.prompt)?;
        let capacity = prompt.len() + args.n_predict + 1;
        kv_positions = capacity;
        let cfg = GenerateConfig {
            max_tokens: args.n_predict,
            capacity,
            ..GenerateConfig::default()
        };
        let (out, stats) = generate(&ctx, model, &loaded.tokenizer, &[prompt], &cfg, |_, _| {})?;
        let session = Session::new(&ctx, model, 1, capacity, 1)?;
        let matrix_params: f64 = model
            .matrices()
            .iter()
            .map(|w| (w.n * w.k) as f64 * bytes_per_value(w.format, w.k))
            .sum();
        let other =
            model.weight_bytes() - model.matrices().iter().map(|w| w.size_bytes()).sum::<u64>();
        rows.push(Row {
            quant,
            weight_bytes: model.weight_bytes(),
            // Norms and biases are f32 in every scheme: counted as measured.
            weight_formula: matrix_params + other as f64,
            kv_bytes: session.kv_bytes(),
            kv_formula: 2 * (d.n_layer * capacity * d.n_kv_head * d.head_dim * 4) as u64,
            perplexity: p.perplexity,
            greedy: out[0].text.clone(),
            decode_tokens_per_s: stats.decode_tokens as f64
                / stats.decode_time.as_secs_f64().max(1e-9),
        });
    }

    let mut md = String::new();
    md.push_str(&format!(
        "# Weight formats: quality and memory\n\nModel: {model_name}, on {}.\n\n\
         Perplexity over the first {scored} tokens of `{}` (one window). Weight bytes are measured \
         (every buffer on the device) next to params × bytes per value (blocks and int8 scales \
         included; norms and biases are f32). The KV buffer holds {} positions for the greedy \
         run, f32: 2 × layers × tokens × kv_heads × head_dim × 4. Decode tokens/s is the greedy \
         run's.\n\nRegenerate: `cargo run --release --example quant_report -- --tokens {} --out \
         docs/quantization.md`\n\n",
        ctx.describe(),
        args.file.display(),
        kv_positions,
        args.tokens,
    ));
    md.push_str("| scheme | weights MB (measured) | weights MB (formula) | KV MB (measured / formula) | perplexity | vs source | decode tokens/s |\n|---|---|---|---|---|---|---|\n");
    let base = rows.first().map_or(1.0, |r| r.perplexity);
    for r in &rows {
        md.push_str(&format!(
            "| `{}` | {:.2} | {:.2} | {:.3} / {:.3} | {:.4} | {:+.2}% | {:.2} |\n",
            r.quant,
            r.weight_bytes as f64 / 1e6,
            r.weight_formula / 1e6,
            r.kv_bytes as f64 / 1e6,
            r.kv_formula as f64 / 1e6,
            r.perplexity,
            (r.perplexity / base - 1.0) * 100.0,
            r.decode_tokens_per_s,
        ));
    }
    md.push_str(&format!(
        "\n## Greedy continuations of \"{}\"\n\n| scheme | continuation |\n|---|---|\n",
        args.prompt
    ));
    for r in &rows {
        md.push_str(&format!(
            "| `{}` | {} |\n",
            r.quant,
            r.greedy.replace('\n', "⏎").replace('|', "\\|")
        ));
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("kiln: wrote {}", path.display());
        }
        None => print!("{md}"),
    }
    if let Some(path) = &args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "scheme": r.quant.to_string(), "weight_bytes": r.weight_bytes,
                    "weight_bytes_formula": r.weight_formula, "kv_bytes": r.kv_bytes,
                    "kv_bytes_formula": r.kv_formula, "perplexity": r.perplexity,
                    "greedy": r.greedy, "decode_tokens_per_s": r.decode_tokens_per_s,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
