//! Perplexity over a token sequence with a sliding window (as Hugging Face's guide computes it):
//! windows of `window` tokens advance by `stride`; each window scores only the tokens the previous
//! window did not, each conditioned on up to `window - 1` tokens before it.

use kiln_kernels::attention::KvFormat;
use kiln_runtime::Context;

use crate::error::{ModelError, Result};
use crate::session::{Architecture, Output, Session};

#[derive(Clone, Debug)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    /// Tokens scored (every token but the first).
    pub tokens: usize,
}

/// Perplexity of `ids` under the model with its KV cache stored as `kv`; `chunk` bounds the
/// rows per step.
pub fn perplexity(
    ctx: &Context,
    model: &dyn Architecture,
    ids: &[u32],
    (window, stride, chunk): (usize, usize, usize),
    kv: KvFormat,
) -> Result<Perplexity> {
    let bad = |message: String| ModelError::Config {
        path: "perplexity".into(),
        message,
    };
    if ids.len() < 2 {
        return Err(bad(format!(
            "the text has {} tokens; perplexity needs at least 2",
            ids.len()
        )));
    }
    if window < 2 || stride == 0 || stride > window {
        return Err(bad(format!(
            "window {window} must be at least 2 and stride {stride} in 1..=window"
        )));
    }
    let vocab = model.dims().n_vocab;
    let mut session = Session::with_kv(ctx, model, 1, window, chunk.max(1), kv)?;
    let (mut nll, mut scored, mut prev_end, mut begin) = (0f64, 0usize, 0usize, 0usize);
    loop {
        let end = (begin + window).min(ids.len());
        // Score tokens prev_end.max(begin + 1) .. end; token t is predicted by row t - 1 - begin.
        let first = prev_end.max(begin + 1);
        session.reset(0);
        for c0 in (begin..end).step_by(chunk.max(1)) {
            let c1 = (c0 + chunk.max(1)).min(end);
            let rows: Vec<(usize, u32)> = ids[c0..c1].iter().map(|&t| (0, t)).collect();
            // Rows r (absolute position c0 + r) predicting tokens in first..end.
            let select: Vec<usize> = (0..rows.len())
                .filter(|&r| c0 + r + 1 >= first && c0 + r + 1 < end)
                .collect();
            let out = session.step(ctx, model, &rows, &select, Output::Logits)?;
            for (i, &r) in select.iter().enumerate() {
                let logits = &out.logits[i * vocab..][..vocab];
                let target = ids[c0 + r + 1] as usize;
                let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let lse = max
                    + logits
                        .iter()
                        .map(|&v| (v as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                nll += lse - logits[target] as f64;
                scored += 1;
            }
        }
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    let mean = nll / scored as f64;
    Ok(Perplexity {
        perplexity: mean.exp(),
        nll: mean,
        tokens: scored,
    })
}
