//! A peer in the same run: llama.cpp's `llama-bench` on the same GGUF, for a side-by-side row.
//! Its source ships in the PyPI sdist of `llama-cpp-python`; build it outside the repository
//! (with `-DGGML_VULKAN=ON` for its Vulkan backend) and pass the binary with `--llama-bench`.
//! Its adapter is chosen by its own environment (`GGML_VK_VISIBLE_DEVICES`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// llama-bench's prompt-processing and generation speeds.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerResult {
    /// `llama.cpp <commit> (<backends>)`.
    pub name: String,
    pub gpu_info: String,
    pub prompt_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub gen_tokens: usize,
    pub decode_tokens_per_s: f64,
}

/// Runs `llama-bench -m model -p prompt -n generate -ngl 99 -r reps -o json` and reads its result.
pub fn llama_bench(
    bin: &Path,
    model: &Path,
    prompt: usize,
    generate: usize,
    reps: usize,
) -> Result<PeerResult> {
    let out = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-p", &prompt.to_string(), "-n", &generate.to_string()])
        .args(["-ngl", "99", "-r", &reps.max(1).to_string(), "-o", "json"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("reading the JSON of {}", bin.display()))
}

/// Reads llama-bench's JSON array: one entry with `n_gen` 0 (prompt processing) and one with
/// `n_prompt` 0 (generation), each with `avg_ts` tokens/s.
pub fn parse(json: &str) -> Result<PeerResult> {
    let v: Value = serde_json::from_str(json)?;
    let runs = v.as_array().context("expected a JSON array")?;
    let num = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0) as usize;
    let find = |prefill: bool| {
        runs.iter()
            .find(|r| {
                (num(r, "n_gen") == 0) == prefill
                    && num(r, if prefill { "n_prompt" } else { "n_gen" }) > 0
            })
            .with_context(|| format!("no {} run", if prefill { "prompt" } else { "generation" }))
    };
    let (pp, tg) = (find(true)?, find(false)?);
    let text = |k: &str| pp[k].as_str().unwrap_or("?").to_string();
    Ok(PeerResult {
        name: format!("llama.cpp {} ({})", text("build_commit"), text("backends")),
        gpu_info: text("gpu_info"),
        prompt_tokens: num(pp, "n_prompt"),
        prefill_tokens_per_s: pp["avg_ts"].as_f64().context("avg_ts")?,
        gen_tokens: num(tg, "n_gen"),
        decode_tokens_per_s: tg["avg_ts"].as_f64().context("avg_ts")?,
    })
}
