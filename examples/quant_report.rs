//! Quality and memory of every weight format and KV-cache format on one model: perplexity on a
//! fixed text, the greedy continuation of a fixed prompt, bytes of weights and of the KV buffer
//! (measured on the device, next to their formulas), and decode speed. Writes a markdown table
//! (and optionally JSON).
//!
//!     cargo run --release --example quant_report -- [-m MODEL] [--tokens 512] [--out docs/quantization.md]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Parser;
use kiln::kernels::WeightFormat;
use kiln::kernels::attention::{KEY_BLOCK, KvFormat};
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
    /// Weight schemes to compare, each with an f32 KV cache (default: all); repeatable
    #[arg(long)]
    quant: Vec<Quant>,
    /// KV-cache formats to compare, each with the file's own weights (default: f16, int8)
    #[arg(long)]
    kv: Vec<KvFormat>,
    /// int8 schemes also run with the outlier decomposition (default: int8-tensor, int8-channel)
    #[arg(long)]
    outlier_quant: Vec<Quant>,
    /// Activation threshold of the outlier decomposition
    #[arg(long, default_value_t = kiln::model::outliers::DEFAULT_THRESHOLD)]
    outliers: f32,
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
    kv: KvFormat,
    /// "int8-channel", or "int8-channel + f32 outliers" with the decomposition.
    label: String,
    weight_bytes: u64,
    weight_formula: f64,
    kv_bytes: u64,
    kv_formula: u64,
    perplexity: f64,
    greedy: String,
    decode_tokens_per_s: f64,
    /// Bytes one decode step reads: weights, and the KV cache at the mean decode position.
    bytes_per_token: u64,
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
    let mut settings: Vec<(Quant, KvFormat, Option<f32>)> = if args.quant.is_empty() {
        Quant::all()
    } else {
        args.quant.clone()
    }
    .into_iter()
    .map(|q| (q, KvFormat::F32, None))
    .collect();
    let outlier_quants = if args.outlier_quant.is_empty() {
        vec!["int8-tensor".parse().ok(), "int8-channel".parse().ok()]
            .into_iter()
            .flatten()
            .collect()
    } else {
        args.outlier_quant.clone()
    };
    settings.extend(
        outlier_quants
            .into_iter()
            .map(|q| (q, KvFormat::F32, Some(args.outliers))),
    );
    let kvs = if args.kv.is_empty() {
        vec![KvFormat::F16, KvFormat::Int8]
    } else {
        args.kv.clone()
    };
    settings.extend(kvs.into_iter().map(|kv| (Quant::None, kv, None)));
    let ctx = common::device(args.backend.as_deref(), args.adapter.as_deref())?;
    let mut rows = Vec::new();
    let mut model_name = String::new();
    let mut scored = 0;
    let mut kv_positions = 0;
    let mut decompositions = Vec::new();
    for &(quant, kv, outliers) in &settings {
        let loaded = common::open(&ctx, args.model.clone(), quant, outliers)?;
        let label = match outliers {
            Some(_) => format!("{quant} + f32 outliers"),
            None => quant.to_string(),
        };
        if let Some(d) = &loaded.outliers {
            decompositions.push((label.clone(), d.clone()));
        }
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
        let p = perplexity(&ctx, model, &ids[..n], (n, n, 128), kv)?;
        eprintln!(
            "kiln: {label}, KV {kv}: perplexity {:.4} over {} tokens in {:.0} s",
            p.perplexity,
            p.tokens,
            started.elapsed().as_secs_f64()
        );

        let prompt = loaded.tokenizer.encode(&args.prompt)?;
        let capacity = prompt.len() + args.n_predict + 1;
        let cfg = GenerateConfig {
            max_tokens: args.n_predict,
            capacity,
            kv,
            ..GenerateConfig::default()
        };
        let (out, stats) = generate(&ctx, model, &loaded.tokenizer, &[prompt], &cfg, |_, _| {})?;
        // KV memory at the perplexity window's length, where the formats differ most.
        kv_positions = n;
        let session = Session::with_kv(&ctx, model, 1, n, 1, kv)?;
        // Outlier columns add an f32 value per row and a u32 index each.
        let matrix_params: f64 = model
            .matrices()
            .iter()
            .map(|w| {
                let c = w.outliers().map_or(0, |o| o.columns().len());
                (w.n * w.k) as f64 * bytes_per_value(w.format, w.k) + (4 * c * (w.n + 1)) as f64
            })
            .sum();
        let other =
            model.weight_bytes() - model.matrices().iter().map(|w| w.size_bytes()).sum::<u64>();
        // Keys and values of every layer; int8 adds f32 scales (values per position, keys per
        // channel per block), block flags and one f32 block of open keys per head.
        let kv_values = 2 * d.n_layer * n * d.n_kv_head * d.head_dim;
        let blocks = n.div_ceil(KEY_BLOCK);
        let kv_formula = match kv {
            KvFormat::F32 => 4 * kv_values,
            KvFormat::F16 => 2 * kv_values,
            KvFormat::Int8 => {
                kv_values
                    + 4 * d.n_layer
                        * d.n_kv_head
                        * (n + blocks * (d.head_dim + 1) + KEY_BLOCK * d.head_dim)
            }
        } as u64;
        rows.push(Row {
            kv,
            label,
            weight_bytes: model.weight_bytes(),
            // Norms and biases are f32 in every scheme: counted as measured.
            weight_formula: matrix_params + other as f64,
            kv_bytes: session.kv_bytes(),
            kv_formula,
            perplexity: p.perplexity,
            greedy: out[0].text.clone(),
            decode_tokens_per_s: stats.decode_tokens as f64
                / stats.decode_time.as_secs_f64().max(1e-9),
            bytes_per_token: model.weight_bytes_per_token()
                + session.kv_bytes() / n as u64 * (capacity - args.n_predict / 2) as u64,
        });
    }

    let mut md = String::new();
    md.push_str(&format!(
        "# Weight and KV-cache formats: quality and memory\n\nModel: {model_name}, on {}.\n\n\
         Perplexity over the first {scored} tokens of `{}` (one window). Weight bytes are measured \
         (every buffer on the device, less the zero rows that pad groups of GGUF blocks) next to \
         params × bytes per value (blocks and int8 scales \
         included; norms and biases are f32). The KV buffer is sized for {} positions (the \
         window): 2 × layers × tokens × kv_heads × head_dim × bytes (4 for f32, 2 for f16, 1 for \
         int8 plus its f32 scales and one open block of f32 keys per head). Decode tokens/s is \
         that of the greedy run below, and GB/s is it times the bytes one decode step reads \
         (weights, and the KV cache up to the run's mean position).\n\nRegenerate: `cargo run --release --example quant_report -- --tokens {} --out \
         docs/quantization.md`\n\n",
        ctx.describe(),
        args.file.display(),
        kv_positions,
        args.tokens,
    ));
    md.push_str("| weights | KV | weights MB (measured) | weights MB (formula) | KV MB (measured / formula) | perplexity | vs source | decode tokens/s | MB read per token | GB/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let base = rows.first().map_or(1.0, |r| r.perplexity);
    for r in &rows {
        md.push_str(&format!(
            "| `{}` | `{}` | {:.2} | {:.2} | {:.3} / {:.3} | {:.4} | {:+.2}% | {:.2} | {:.1} | {:.2} |\n",
            r.label,
            r.kv,
            r.weight_bytes as f64 / 1e6,
            r.weight_formula / 1e6,
            r.kv_bytes as f64 / 1e6,
            r.kv_formula as f64 / 1e6,
            r.perplexity,
            (r.perplexity / base - 1.0) * 100.0,
            r.decode_tokens_per_s,
            r.bytes_per_token as f64 / 1e6,
            r.bytes_per_token as f64 * r.decode_tokens_per_s / 1e9,
        ));
    }
    md.push_str(&format!(
        "\n## Greedy continuations of \"{}\"\n\n| weights | KV | continuation |\n|---|---|---|\n",
        args.prompt
    ));
    for r in &rows {
        md.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            r.label,
            r.kv,
            r.greedy.replace('\n', "⏎").replace('|', "\\|")
        ));
    }
    for (label, d) in &decompositions {
        let (kept, total) = d.totals();
        md.push_str(&format!(
            "\n## Outlier decomposition: `{label}`\n\nCalibrated on the last {} tokens of the \
             same text (disjoint from the scored ones); input columns whose largest |activation| \
             exceeds {} stay in f32: {kept} of {total} ({:.2}%), in {} of {} matrices. Tables also \
             gathered from (embeddings, a tied LM head) are plain int8.\n\n\
             | matrix | matrices | columns kept | most in one matrix | input columns each |\n|---|---|---|---|---|\n",
            kiln::model::outliers::CALIBRATION_TOKENS,
            d.threshold,
            100.0 * kept as f64 / total.max(1) as f64,
            d.matrices_with_outliers(),
            d.matrices.len(),
        ));
        for (kind, count, cols, most) in d.by_kind() {
            let k = d
                .matrices
                .iter()
                .find(|m| m.name.ends_with(&kind))
                .map_or(0, |m| m.k);
            md.push_str(&format!("| `{kind}` | {count} | {cols} | {most} | {k} |\n"));
        }
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
                    "weights": r.label, "kv": r.kv.to_string(), "weight_bytes": r.weight_bytes,
                    "weight_bytes_formula": r.weight_formula, "kv_bytes": r.kv_bytes,
                    "kv_bytes_formula": r.kv_formula, "perplexity": r.perplexity,
                    "greedy": r.greedy, "decode_tokens_per_s": r.decode_tokens_per_s,
                    "bytes_per_token": r.bytes_per_token,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
