//! Speculative decoding's drafters: what to propose as the next tokens of a sequence before the
//! model checks them in one pass ([`crate::generate`] verifies). Prompt lookup (`ngram:N`)
//! matches the sequence's last N tokens (then fewer) against everything before them, the prompt
//! included, and proposes what followed the latest match (Saxena 2023, llama.cpp's `--lookup`).
//! A draft model (`draft:PATH`, sharing the vocabulary) or the model's own first K layers with
//! its final norm and head (`layers:K`, self-speculation: no weights of its own) decode greedily
//! ahead instead.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use kiln_kernels::Weights;
use kiln_kernels::attention::KvCache;
use kiln_runtime::Recorder;

use crate::architecture::Architecture;
use crate::error::Result;
use crate::matrix::NamedMatrix;
use crate::step::{Dims, StepIo};

/// How drafts are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// Prompt lookup over n-grams of up to `n` tokens.
    Ngram { n: usize },
    /// The model's first `k` layers, then its final norm and head; `k` 0 takes
    /// [`default_layers`] of the model's.
    Layers { k: usize },
    /// Another model with the same vocabulary.
    Draft { path: PathBuf },
}

/// Speculation settings of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecConfig {
    pub mode: Speculation,
    /// Most tokens drafted per sequence and step.
    pub draft_tokens: usize,
}

/// The longest n-gram a prompt-lookup draft matches by default.
pub const DEFAULT_NGRAM: usize = 3;

impl FromStr for Speculation {
    type Err = String;

    /// `ngram`, `ngram:N` (N from 1 to 16), `layers`, `layers:K` (K at least 1) or `draft:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (mode, arg) = s.split_once(':').unwrap_or((s, ""));
        let whole = |what: &str, lo: usize, hi: usize| {
            arg.parse::<usize>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| {
                    format!("{mode}:{arg}: {what} must be a whole number from {lo} to {hi}")
                })
        };
        match mode {
            "ngram" if arg.is_empty() => Ok(Speculation::Ngram { n: DEFAULT_NGRAM }),
            "ngram" => Ok(Speculation::Ngram {
                n: whole("N", 1, 16)?,
            }),
            "layers" if arg.is_empty() => Ok(Speculation::Layers { k: 0 }),
            "layers" => Ok(Speculation::Layers {
                k: whole("K", 1, 1024)?,
            }),
            "draft" if !arg.is_empty() => Ok(Speculation::Draft { path: arg.into() }),
            "draft" => Err("draft:PATH needs the draft model's path".into()),
            other => Err(format!(
                "unknown speculation {other:?}: expected ngram[:N], layers:K or draft:PATH"
            )),
        }
    }
}

impl fmt::Display for Speculation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speculation::Ngram { n } => write!(f, "ngram:{n}"),
            Speculation::Layers { k: 0 } => write!(f, "layers"),
            Speculation::Layers { k } => write!(f, "layers:{k}"),
            Speculation::Draft { path } => write!(f, "draft:{}", path.display()),
        }
    }
}

/// Self-drafting's layers when none are named: three quarters of the model's. Measured on
/// SmolLM2-135M (docs/benchmarks/NOTES.md), drafts were kept 1% of the time from 8 or 16 of its
/// 30 layers and 6–36% from 22–24: the most that still leaves the draft cheaper than the model.
pub fn default_layers(n_layer: usize) -> usize {
    (3 * n_layer / 4).max(1)
}

/// The first `k` blocks of `model`, then its final norm and head: a draft model that shares all
/// its weights ([`Architecture::record_step`] runs as many blocks as it is given caches).
pub struct FirstLayers<'a> {
    pub model: &'a dyn Architecture,
    pub k: usize,
}

impl Architecture for FirstLayers<'_> {
    fn dims(&self) -> Dims {
        Dims {
            n_layer: self.k.min(self.model.dims().n_layer),
            ..self.model.dims()
        }
    }

    fn record_step(&self, rec: &mut Recorder<'_>, io: &StepIo, caches: &[KvCache]) -> Result<()> {
        self.model
            .record_step(rec, io, &caches[..self.dims().n_layer.min(caches.len())])
    }

    fn weight_bytes(&self) -> u64 {
        self.model.weight_bytes()
    }

    /// The blocks' share of the model's bytes per token (the head counted as a block's share).
    fn weight_bytes_per_token(&self) -> u64 {
        let d = self.model.dims();
        self.model.weight_bytes_per_token() * self.dims().n_layer as u64 / d.n_layer.max(1) as u64
    }

    fn matrices(&self) -> Vec<&Weights> {
        self.model.matrices()
    }

    /// A view cannot replace the model's matrices.
    fn matrices_mut(&mut self) -> Vec<NamedMatrix<'_>> {
        Vec::new()
    }
}

/// Prompt lookup: for m = n down to 2 (or 1 when n is 1), the latest earlier occurrence of the
/// last m tokens that has a continuation; its next (up to) `k` tokens. Empty when nothing
/// matches: a lone token's last occurrence predicts too little to pay for checking it.
pub fn ngram_draft(ids: &[u32], n: usize, k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    let shortest = n.min(2);
    for m in (shortest..=n.min(ids.len().saturating_sub(1))).rev() {
        let tail = &ids[ids.len() - m..];
        // Starts of earlier matches, latest first; the match must end before the tail does.
        if let Some(start) = (0..ids.len() - m).rev().find(|&s| &ids[s..s + m] == tail) {
            let from = start + m;
            return ids[from..(from + k).min(ids.len())].to_vec();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_follow_the_latest_longest_match() {
        // "1 2 3 9 1 2 3 7 ... 1 2 3": the latest "1 2 3" is followed by 7.
        let ids = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3];
        assert_eq!(ngram_draft(&ids, 3, 4), [7, 8, 5, 1]);
        assert_eq!(ngram_draft(&ids, 3, 2), [7, 8]);
        // Only the last token matches: too little, unless matching single tokens is asked for.
        assert!(ngram_draft(&[4, 6, 5, 4], 3, 3).is_empty());
        assert_eq!(ngram_draft(&[4, 6, 5, 4], 1, 3), [6, 5, 4]);
        assert_eq!(ngram_draft(&[4, 6, 5, 4, 6], 3, 2), [5, 4]);
        // Nothing to match, or nothing asked.
        assert!(ngram_draft(&[1, 2, 3], 3, 4).is_empty());
        assert!(ngram_draft(&ids, 3, 0).is_empty());
        assert!(ngram_draft(&[7], 3, 4).is_empty());
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("ngram".parse(), Ok(Speculation::Ngram { n: DEFAULT_NGRAM }));
        assert_eq!("ngram:5".parse(), Ok(Speculation::Ngram { n: 5 }));
        assert_eq!("layers:4".parse(), Ok(Speculation::Layers { k: 4 }));
        assert_eq!("layers".parse(), Ok(Speculation::Layers { k: 0 }));
        assert_eq!(default_layers(30), 22);
        assert_eq!(
            "draft:m.gguf".parse(),
            Ok(Speculation::Draft {
                path: "m.gguf".into()
            })
        );
        assert_eq!(Speculation::Ngram { n: 2 }.to_string(), "ngram:2");
        for bad in [
            "ngram:0", "ngram:x", "ngram:17", "medusa", "layers:0", "layers:x", "draft:",
        ] {
            assert!(bad.parse::<Speculation>().is_err(), "{bad}");
        }
    }
}
