//! Speculative decoding against plain greedy decoding on two kinds of prompt: text to be
//! repeated with edits (where prompt lookup drafts well) and free text. Each mode is timed right
//! after a plain run of the same prompt, so both see the same load; medians over repetitions.

use anyhow::Result;
use kiln_model::generate::{GenerateConfig, generate};
use kiln_model::session::Architecture;
use kiln_model::speculative::{SpecConfig, Speculation};
use kiln_model::tokenizer::Tokenizer;
use kiln_runtime::Context;

/// One mode on one prompt kind.
#[derive(Clone, Debug)]
pub struct SpecResult {
    pub prompt: &'static str,
    pub mode: String,
    pub tokens_per_s: f64,
    /// Plain greedy decoding of the same prompt, timed alongside.
    pub plain_tokens_per_s: f64,
    pub drafted: usize,
    pub accepted: usize,
    /// Tokens a decode step produced on average.
    pub tokens_per_step: f64,
}

/// The prompts: (kind, text).
pub const PROMPTS: [(&str, &str); 2] = [
    (
        "repeating (a list to rewrite)",
        "Copy the list, one item per line.\nmilk, eggs, bread, butter, cheese, apples, rice, \
         beans, tea, coffee, sugar, salt\nmilk\neggs\nbread\nbutter\ncheese\napples\nrice\nbeans\n\
         tea\ncoffee\nsugar\nsalt\nAgain:\nmilk, eggs, bread, butter, cheese, apples, rice, beans, \
         tea, coffee, sugar, salt\n",
    ),
    (
        "free text",
        "Once upon a time, in a small village by the sea,",
    ),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each of `modes` on each prompt, `tokens` new tokens, `reps` repetitions.
pub fn measure(
    ctx: &Context,
    model: &dyn Architecture,
    tok: &Tokenizer,
    modes: &[Speculation],
    tokens: usize,
    reps: usize,
) -> Result<Vec<SpecResult>> {
    let mut out = Vec::new();
    for (kind, text) in PROMPTS {
        let ids = vec![tok.encode(text)?];
        let cfg = |spec: Option<SpecConfig>| GenerateConfig {
            max_tokens: tokens,
            capacity: ids[0].len() + tokens + 1,
            ahead: Some(false),
            spec,
            ..GenerateConfig::default()
        };
        for mode in modes {
            let (mut plain, mut fast, mut last) = (Vec::new(), Vec::new(), None);
            // One warm-up of each, then the repetitions.
            for rep in 0..=reps {
                let (_, p) = generate(ctx, model, tok, &ids, &cfg(None), |_, _| {})?;
                let spec = SpecConfig {
                    mode: mode.clone(),
                    draft_tokens: 8,
                };
                let (_, s) = generate(ctx, model, tok, &ids, &cfg(Some(spec)), |_, _| {})?;
                if rep > 0 {
                    plain.push(p.decode_tokens_per_s());
                    fast.push(s.decode_tokens_per_s());
                }
                last = Some(s);
            }
            let s = last.expect("at least one run");
            out.push(SpecResult {
                prompt: kind,
                mode: mode.to_string(),
                tokens_per_s: median(fast),
                plain_tokens_per_s: median(plain),
                drafted: s.drafted,
                accepted: s.accepted,
                tokens_per_step: s.decode_tokens as f64 / s.decode_steps.max(1) as f64,
            });
        }
    }
    Ok(out)
}
