//! Opens a model by path and picks its architecture: a folder is a Hugging Face checkpoint
//! (`config.json` + safetensors + tokenizer files) read by its `model_type` (`llama`, `qwen2`,
//! `qwen3` or `gpt2`); a file is GGUF, read by its `general.architecture` (the same four).

use std::path::Path;

use kiln_runtime::Context;
use serde_json::Value;

use crate::architecture::Architecture;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::gpt2::Gpt2;
use crate::hf_folder::read_json;
use crate::llama::{Family, Llama};
use crate::outliers::{self, Decomposition};
use crate::quantize::{Int8Scheme, Quant};
use crate::tokenizer::Tokenizer;

/// A model ready to run.
pub struct Loaded {
    pub model: Box<dyn Architecture>,
    pub tokenizer: Tokenizer,
    /// The model's chat template (Jinja), if it has one.
    pub chat_template: Option<String>,
    /// Positions the model was trained for.
    pub n_ctx: usize,
    /// "llama", "qwen2", "qwen3" or "gpt2".
    pub arch: &'static str,
    /// The outlier decomposition applied after loading, if any.
    pub outliers: Option<Decomposition>,
}

impl Loaded {
    /// The tokens an outlier decomposition calibrates on ([`outliers::calibration_ids`]).
    pub fn calibration_ids(&self) -> Result<Vec<u32>> {
        outliers::calibration_ids(&self.tokenizer, self.n_ctx)
    }

    /// Calibrates the model, loaded in its source format, and quantizes it to int8 under
    /// `scheme` with the columns over `threshold` kept in f32 ([`outliers::apply`]).
    pub fn decompose_outliers(
        &mut self,
        ctx: &Context,
        scheme: Int8Scheme,
        threshold: f32,
    ) -> Result<Decomposition> {
        let ids = self.calibration_ids()?;
        outliers::apply(ctx, self.model.as_mut(), &ids, scheme, threshold)
    }
}

/// Loads `path` with its matrices converted to `quant`; `progress(done, total)` follows the
/// upload.
pub fn load(
    ctx: &Context,
    path: &Path,
    quant: Quant,
    progress: impl FnMut(usize, usize),
) -> Result<Loaded> {
    if path.is_dir() {
        let config = read_json(&path.join("config.json"))?;
        let model_type = config["model_type"].as_str().unwrap_or("gpt2");
        if let Some(family) = Family::from_name(model_type) {
            let model = Llama::load_hf(ctx, path, quant, progress)?;
            let (tokenizer, chat_template) = hf_tokenizer(path, family)?;
            return Ok(Loaded {
                n_ctx: model.cfg.n_ctx,
                model: Box::new(model),
                tokenizer,
                chat_template,
                arch: family.name(),
                outliers: None,
            });
        }
        let model = Gpt2::load(ctx, path, quant, progress)?;
        let n_ctx = model.cfg.n_positions;
        return Ok(Loaded {
            model: Box::new(model),
            tokenizer: Tokenizer::from_folder(path)?,
            chat_template: None,
            n_ctx,
            arch: "gpt2",
            outliers: None,
        });
    }
    let g = GgufFile::open(path)?;
    match g.str("general.architecture")? {
        arch if Family::from_name(arch).is_some() => {
            let model = Llama::load(ctx, &g, quant, progress)?;
            // A tokenizer.json beside the model wins over the GGUF's own vocabulary.
            let gguf_tok = Tokenizer::from_gguf(&g)?;
            let beside = path.with_file_name("tokenizer.json");
            let tokenizer = if beside.exists() {
                Tokenizer::from_file(&beside, gguf_tok.bos, gguf_tok.eos)?
            } else {
                gguf_tok
            };
            let chat_template = g.str("tokenizer.chat_template").ok().map(str::to_string);
            let (n_ctx, arch) = (model.cfg.n_ctx, model.cfg.family.name());
            Ok(Loaded {
                model: Box::new(model),
                tokenizer,
                chat_template,
                n_ctx,
                arch,
                outliers: None,
            })
        }
        "gpt2" => {
            let model = Gpt2::load_gguf(ctx, &g, quant, progress)?;
            let n_ctx = model.cfg.n_positions;
            Ok(Loaded {
                model: Box::new(model),
                tokenizer: Tokenizer::from_gguf(&g)?,
                chat_template: None,
                n_ctx,
                arch: "gpt2",
                outliers: None,
            })
        }
        other => Err(ModelError::Config {
            path: path.to_path_buf(),
            message: format!(
                "GGUF architecture {other:?} is not supported (llama, qwen2, qwen3, gpt2)"
            ),
        }),
    }
}

/// A Hugging Face folder's `tokenizer.json`, with BOS, EOS, whether to prepend BOS and the chat
/// template from `tokenizer_config.json` (where it exists).
fn hf_tokenizer(dir: &Path, family: Family) -> Result<(Tokenizer, Option<String>)> {
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.exists() {
        read_json(&config_path)?
    } else {
        Value::Null
    };
    let mut tok = Tokenizer::from_file(&dir.join("tokenizer.json"), None, None)?;
    // A special token is named by a string or by an AddedToken object ({"content": ...}).
    let token = |key: &str| {
        let v = &config[key];
        v.as_str()
            .or_else(|| v["content"].as_str())
            .map(str::to_string)
    };
    tok.bos = token("bos_token").and_then(|t| tok.token_to_id(&t));
    tok.eos = token("eos_token").and_then(|t| tok.token_to_id(&t));
    tok.add_bos = config["add_bos_token"]
        .as_bool()
        .unwrap_or(family == Family::Llama && tok.bos.is_some());
    // A template is a string, or a list of named ones of which "default" is the chat one.
    let template = match &config["chat_template"] {
        Value::String(t) => Some(t.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    };
    Ok((tok, template))
}
