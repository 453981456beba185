//! What the examples share: device options from flags, and loading a model with a progress bar.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use kiln::model::fetch::ensure_default_model;
use kiln::model::loader::{Loaded, load};
use kiln::model::quantize::Quant;
use kiln::runtime::{Context, DeviceOptions};

/// Device from the environment (`KILN_BACKEND`, `KILN_ADAPTER`, ...), overridden by flags.
pub fn device(backend: Option<&str>, adapter: Option<&str>) -> Result<Context> {
    let ctx = Context::new(&DeviceOptions::from_env_and_flags(backend, adapter)?)?;
    eprintln!(
        "kiln: {}; {}",
        ctx.describe(),
        kiln_kernels::DevicePlan::of(&ctx)
    );
    Ok(ctx)
}

/// Opens `-m` (a GGUF file or a GPT-2 folder) or the default model (fetched on first use), and
/// uploads it with its matrices converted to `quant`, with a progress bar. With `outliers`
/// (an activation threshold), `quant` must be int8: the model is loaded in its own format,
/// calibrated, and decomposed into int8 plus f32 outlier columns.
pub fn open(
    ctx: &Context,
    model: Option<PathBuf>,
    quant: Quant,
    outliers: Option<f32>,
) -> Result<Loaded> {
    let scheme = match (outliers, quant) {
        (None, _) => None,
        (Some(t), Quant::Int8(scheme)) if t >= 0.0 => Some((scheme, t)),
        (Some(t), _) => anyhow::bail!(
            "--outliers {t} needs an int8 --quant (e.g. int8-channel) and a threshold of at least 0"
        ),
    };
    let path = match model {
        Some(p) => p,
        None => ensure_default_model(|m| eprintln!("kiln: {m}"))?,
    };
    let bar = indicatif::ProgressBar::new(0).with_message(format!("loading {}", path.display()));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let source = if scheme.is_some() { Quant::None } else { quant };
    let mut loaded = load(ctx, &path, source, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    if let Some((scheme, threshold)) = scheme {
        let d = loaded
            .decompose_outliers(ctx, scheme, threshold)
            .with_context(|| format!("decomposing {}", path.display()))?;
        eprintln!("kiln: {}", d.summary());
        loaded.outliers = Some(d);
    }
    let d = loaded.model.dims();
    eprintln!(
        "kiln: {} with {} layers, width {}, {} heads ({} KV), vocab {}; matrices {}{} ({:.1} MB)",
        loaded.arch,
        d.n_layer,
        d.n_embd,
        d.n_head,
        d.n_kv_head,
        d.n_vocab,
        quant,
        outliers.map_or(String::new(), |t| format!(" + f32 outliers over {t}")),
        loaded.model.weight_bytes() as f64 / 1e6
    );
    Ok(loaded)
}
