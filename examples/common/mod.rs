//! What the examples share: device options from flags, and loading a model with a progress bar.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use kiln::model::fetch::ensure_default_model;
use kiln::model::gguf::GgufFile;
use kiln::model::llama::Llama;
use kiln::model::tokenizer::Tokenizer;
use kiln::runtime::{Context, DeviceOptions, device::parse_backends};

/// Device from the environment (`KILN_BACKEND`, `KILN_ADAPTER`, ...), overridden by flags.
pub fn device(backend: Option<&str>, adapter: Option<&str>) -> Result<Context> {
    let mut options = DeviceOptions::from_env()?;
    if let Some(b) = backend {
        options.backends = Some(parse_backends(b)?);
    }
    if let Some(a) = adapter {
        options.adapter = Some(a.to_string());
    }
    let ctx = Context::new(&options)?;
    eprintln!("kiln: {}", ctx.describe());
    Ok(ctx)
}

/// Opens `-m` or the default model (fetched on first use), uploads it with a progress bar.
pub fn load(ctx: &Context, model: Option<PathBuf>) -> Result<(GgufFile, Llama, Tokenizer)> {
    let path = match model {
        Some(p) => p,
        None => ensure_default_model(|m| eprintln!("kiln: {m}"))?,
    };
    let g = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let bar = indicatif::ProgressBar::new(0).with_message(format!("loading {}", path.display()));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let model = Llama::load(ctx, &g, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    // A tokenizer.json beside the model wins over the GGUF's own vocabulary.
    let beside = path.with_file_name("tokenizer.json");
    let gguf_tok = Tokenizer::from_gguf(&g)?;
    let tok = if beside.exists() {
        Tokenizer::from_file(&beside, gguf_tok.bos, gguf_tok.eos)?
    } else {
        gguf_tok
    };
    eprintln!(
        "kiln: {} layers, width {}, {} heads ({} KV), vocab {}, {:.1} MB of weights",
        model.cfg.n_layer,
        model.cfg.n_embd,
        model.cfg.n_head,
        model.cfg.n_kv_head,
        model.cfg.n_vocab,
        model.weight_bytes_per_token() as f64 / 1e6
    );
    Ok((g, model, tok))
}
