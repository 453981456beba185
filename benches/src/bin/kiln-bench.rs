//! The portable benchmark runner: on any adapter, measures the bandwidth ceiling, the kernels at
//! model shapes against it, and SmolLM2-135M's prefill, decode, batching and KV-cache curves, then
//! prints the report and writes `report.json`, `report.md` and the charts `roofline.svg`,
//! `kv_cache.svg` and `batches.svg` into `--out`.
//!
//!     cargo run --release -p kiln-benches --bin kiln-bench -- [--quick] [--out DIR] [-m MODEL]
//!         [--llama-bench PATH/TO/llama-bench]
//!
//! The adapter comes from `KILN_BACKEND` / `KILN_ADAPTER` (see the README) or `--backend` /
//! `--adapter`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use kiln_benches::models::{self, Plan};
use kiln_benches::report::Report;
use kiln_benches::roofline::{
    self, GPT2_FC, LLAMA_1B_FFN_UP, SMOLLM2_FFN_DOWN, SMOLLM2_FFN_UP, SMOLLM2_GATE_UP, SMOLLM2_HEAD,
};
use kiln_benches::{peer, plots, speculative, synthetic};
use kiln_kernels::WeightFormat;
use kiln_model::fetch::ensure_default_model;
use kiln_model::llama::Llama;
use kiln_model::quantize::Quant;
use kiln_model::speculative::{Speculation, default_layers};
use kiln_runtime::{Context, DeviceOptions};

#[derive(Parser)]
struct Args {
    /// Fewer shapes, lengths and repetitions (under 3 minutes on lavapipe)
    #[arg(long)]
    quick: bool,
    /// Also time a synthetic Llama 3.2 1B in Q4_K_M's mix of types (always in full runs)
    #[arg(long)]
    llama3_1b: bool,
    /// Folder for report.json and report.md (created if missing)
    #[arg(long, default_value = "kiln-bench-report")]
    out: PathBuf,
    /// A GGUF model (default: SmolLM2-135M-Instruct, fetched on first use)
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Backends to search: vulkan, metal, dx12, gl (overrides KILN_BACKEND)
    #[arg(long)]
    backend: Option<String>,
    /// Adapter name substring (overrides KILN_ADAPTER)
    #[arg(long)]
    adapter: Option<String>,
    /// A llama.cpp `llama-bench` binary to run on the same model for a side-by-side row (its
    /// adapter is chosen by its own environment, e.g. GGML_VK_VISIBLE_DEVICES)
    #[arg(long)]
    llama_bench: Option<PathBuf>,
}

fn main() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    let options =
        DeviceOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let ctx = Context::new(&options)?;
    eprintln!(
        "kiln-bench: {} (kernel clock: {}; {})",
        ctx.describe(),
        ctx.clock(),
        kiln_kernels::DevicePlan::of(&ctx)
    );

    let quick = args.quick;
    let reps = if quick { 5 } else { 20 };
    // The peak's stream; the matrix kernels are timed alternately with its copy (cold caches,
    // same machine load).
    let peak = roofline::PeakStream::new(&ctx, if quick { 32 << 20 } else { 256 << 20 })?;
    let (mut bandwidth, mut kernels) = roofline::bandwidth(&ctx, &peak, reps)?;
    eprintln!(
        "kiln-bench: peak bandwidth {:.2} GB/s (copy {:.2}, read {:.2})",
        bandwidth.peak_gbps(),
        bandwidth.copy_gbps,
        bandwidth.read_gbps
    );
    let shapes = if quick {
        vec![SMOLLM2_FFN_UP, LLAMA_1B_FFN_UP]
    } else {
        vec![SMOLLM2_FFN_UP, SMOLLM2_HEAD, GPT2_FC, LLAMA_1B_FFN_UP]
    };
    for shape in shapes {
        kernels.extend(roofline::matrix(
            &ctx,
            &peak,
            shape,
            1,
            &roofline::formats(),
            reps,
        )?);
    }
    // The decode formats of the target through each mat-vec layout, at the model's shapes.
    let decode_formats = [("q4_1", WeightFormat::Q4_1), ("q8_0", WeightFormat::Q8_0)];
    let layout_shapes = if quick {
        vec![SMOLLM2_FFN_UP]
    } else {
        vec![
            SMOLLM2_FFN_UP,
            SMOLLM2_GATE_UP,
            SMOLLM2_HEAD,
            LLAMA_1B_FFN_UP,
        ]
    };
    for shape in layout_shapes {
        kernels.extend(roofline::layouts(
            &ctx,
            &peak,
            shape,
            &decode_formats,
            reps,
        )?);
    }
    // The machine may be busier now or then: stream again after the kernels and keep the better
    // ceiling, so no fraction of it is flattered by one slow measurement.
    let (again, rows) = roofline::bandwidth(&ctx, &peak, reps)?;
    bandwidth = bandwidth.best(&again);
    kernels.extend(rows.into_iter().map(|mut k| {
        k.shape.push_str(", again after the mat-vec rows");
        k
    }));
    eprintln!(
        "kiln-bench: peak bandwidth after the mat-vec kernels {:.2} GB/s, kept {:.2}",
        again.peak_gbps(),
        bandwidth.peak_gbps()
    );
    let prefill_formats = [("f32", WeightFormat::F32), ("q4_1", WeightFormat::Q4_1)];
    // Prefill's products at a short and a long prompt; SmolLM2's down projection (K = 1536 over
    // 576 rows) is its fewest tiles for the most K.
    let prefill_rows: &[usize] = if quick { &[32] } else { &[32, 128, 512] };
    for &rows in prefill_rows {
        for shape in [SMOLLM2_FFN_UP, SMOLLM2_FFN_DOWN] {
            kernels.extend(roofline::matrix(
                &ctx,
                &peak,
                shape,
                rows,
                &prefill_formats,
                reps.min(5),
            )?);
        }
    }
    drop(peak);
    kernels.extend(roofline::rows(&ctx, if quick { 1 } else { 8 }, reps)?);
    for k in &kernels {
        eprintln!(
            "kiln-bench: {:<20} {:<40} {:>10.1} us {:>8.2} GB/s {:>8.2} GFLOP/s",
            k.kernel,
            k.shape,
            k.seconds * 1e6,
            k.gbps(),
            k.gflops()
        );
    }

    let path = match &args.model {
        Some(p) => p.clone(),
        None => ensure_default_model(|m| eprintln!("kiln-bench: {m}"))?,
    };
    let loaded = kiln_model::loader::load(&ctx, &path, Quant::None, |_, _| {})
        .with_context(|| format!("loading {}", path.display()))?;
    let name = path
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let plan = if quick {
        Plan {
            prompts: vec![32],
            decode_steps: 8,
            batches: vec![1, 4],
            kv_lengths: vec![16, 48],
            reps: 1,
        }
    } else {
        Plan {
            prompts: vec![32, 128, 512],
            decode_steps: 32,
            batches: vec![1, 2, 4, 8],
            kv_lengths: vec![16, 64, 256, 512],
            reps: 3,
        }
    };
    let model = models::measure(&ctx, &name, loaded.model.as_ref(), &plan)?;
    eprintln!(
        "kiln-bench: {name}: decode {:.2} tokens/s, {:.1} MB per token",
        model.decode_tokens_per_s,
        model.bytes_per_token as f64 / 1e6
    );

    // Speculative decoding on the same model: prompt lookup, and self-drafting from its first
    // three quarters of layers.
    let n_layer = loaded.model.dims().n_layer;
    let modes = [
        Speculation::Ngram { n: 3 },
        Speculation::Layers {
            k: default_layers(n_layer),
        },
    ];
    let (spec_tokens, spec_reps) = if quick { (32, 1) } else { (64, 3) };
    let speculative = speculative::measure(
        &ctx,
        loaded.model.as_ref(),
        &loaded.tokenizer,
        &modes,
        spec_tokens,
        spec_reps,
    )?;
    for r in &speculative {
        eprintln!(
            "kiln-bench: speculative {} on {}: {:.2} tokens/s against {:.2} plain, {} of {} drafts kept",
            r.mode, r.prompt, r.tokens_per_s, r.plain_tokens_per_s, r.accepted, r.drafted
        );
    }
    let mut models = vec![model];
    if !quick || args.llama3_1b {
        // A 1B-class model in the types people download, without downloading one.
        let cfg = synthetic::llama3_1b();
        let source = synthetic::Q4KMix {
            n_layer: cfg.n_layer,
        };
        let llama = Llama::load_from(&ctx, &source, cfg, Quant::None, |_, _| {})?;
        let small = Plan {
            prompts: if quick { vec![32] } else { vec![32, 128] },
            decode_steps: if quick { 4 } else { 16 },
            batches: if quick { vec![1, 2] } else { vec![1, 4] },
            kv_lengths: if quick { vec![16, 32] } else { vec![16, 256] },
            reps: if quick { 1 } else { 2 },
        };
        let name = "synthetic Llama 3.2 1B (Q4_K_M mix)";
        let result = models::measure(&ctx, name, &llama, &small)?;
        eprintln!(
            "kiln-bench: {name}: decode {:.2} tokens/s, {:.1} MB per token",
            result.decode_tokens_per_s,
            result.bytes_per_token as f64 / 1e6
        );
        models.push(result);
    }

    let mut peers = Vec::new();
    if let Some(bin) = &args.llama_bench {
        let prompt = plan.prompts.last().copied().unwrap_or(32);
        let peer = peer::llama_bench(bin, &path, prompt, plan.decode_steps, plan.reps.max(2))?;
        eprintln!(
            "kiln-bench: {} on {}: prefill {:.2} tokens/s, decode {:.2} tokens/s",
            peer.name, peer.gpu_info, peer.prefill_tokens_per_s, peer.decode_tokens_per_s
        );
        peers.push(peer);
    }
    let report = Report {
        quick,
        bandwidth,
        kernels,
        models,
        peers,
        speculative,
    };
    let command = format!(
        "cargo run --release -p kiln-benches --bin kiln-bench --{}{} --out {}{}",
        if quick { " --quick" } else { "" },
        if quick && args.llama3_1b {
            " --llama3-1b"
        } else {
            ""
        },
        args.out.display(),
        if args.llama_bench.is_some() {
            " --llama-bench PATH/TO/llama-bench"
        } else {
            ""
        }
    );
    let mut md = report.to_markdown(&ctx, &command);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    plots::roofline(
        &args.out.join("roofline.svg"),
        &report.kernels,
        report.bandwidth.peak_gbps(),
    )?;
    plots::kv_cache(&args.out.join("kv_cache.svg"), &report.models[0])?;
    plots::batches(&args.out.join("batches.svg"), &report.models[0])?;
    md.push_str(
        "\n## Charts\n\n![roofline](roofline.svg)\n\n![KV cache on and off](kv_cache.svg)\n\n\
         ![batched decode](batches.svg)\n",
    );
    let json = serde_json::to_string_pretty(&report.to_json(&ctx))?;
    for (file, text) in [("report.json", json), ("report.md", md.clone())] {
        let p = args.out.join(file);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{md}");
    eprintln!(
        "kiln-bench: wrote {}/report.json and report.md",
        args.out.display()
    );
    Ok(())
}
