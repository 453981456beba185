//! Speculative decoding's drafters: what to propose as the next tokens of a sequence before the
//! model checks them in one pass ([`crate::generate`] verifies). Prompt lookup (`ngram:N`)
//! matches the sequence's last N tokens (then fewer) against everything before them, the prompt
//! included, and proposes what followed the latest match (Saxena 2023, llama.cpp's `--lookup`).

use std::fmt;
use std::str::FromStr;

/// How drafts are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// Prompt lookup over n-grams of up to `n` tokens.
    Ngram { n: usize },
}

/// Speculation settings of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecConfig {
    pub mode: Speculation,
    /// Most tokens drafted per sequence and step.
    pub draft_tokens: usize,
}

/// The longest n-gram a prompt-lookup draft matches by default.
pub const DEFAULT_NGRAM: usize = 3;

impl FromStr for Speculation {
    type Err = String;

    /// `ngram` or `ngram:N` (N from 1 to 16).
    fn from_str(s: &str) -> Result<Self, String> {
        let (mode, arg) = s.split_once(':').unwrap_or((s, ""));
        match mode {
            "ngram" => {
                let n = match arg {
                    "" => DEFAULT_NGRAM,
                    n => n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=16).contains(n))
                        .ok_or_else(|| {
                            format!("ngram:{n}: N must be a whole number from 1 to 16")
                        })?,
                };
                Ok(Speculation::Ngram { n })
            }
            other => Err(format!(
                "unknown speculation {other:?}: expected ngram or ngram:N"
            )),
        }
    }
}

impl fmt::Display for Speculation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speculation::Ngram { n } => write!(f, "ngram:{n}"),
        }
    }
}

impl SpecConfig {
    /// Up to `k` tokens to propose after `ids`.
    pub fn draft(&self, ids: &[u32], k: usize) -> Vec<u32> {
        match self.mode {
            Speculation::Ngram { n } => ngram_draft(ids, n, k),
        }
    }
}

/// Prompt lookup: for m = n down to 1, the latest earlier occurrence of the last m tokens that
/// has a continuation; its next (up to) `k` tokens. Empty when nothing matches.
pub fn ngram_draft(ids: &[u32], n: usize, k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    for m in (1..=n.min(ids.len().saturating_sub(1))).rev() {
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
        // Only the last token matches: what followed its latest earlier occurrence.
        assert_eq!(ngram_draft(&[4, 6, 5, 4], 3, 3), [6, 5, 4]);
        // Nothing to match, or nothing asked.
        assert!(ngram_draft(&[1, 2, 3], 3, 4).is_empty());
        assert!(ngram_draft(&ids, 3, 0).is_empty());
        assert!(ngram_draft(&[7], 3, 4).is_empty());
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("ngram".parse(), Ok(Speculation::Ngram { n: DEFAULT_NGRAM }));
        assert_eq!("ngram:5".parse(), Ok(Speculation::Ngram { n: 5 }));
        assert_eq!(Speculation::Ngram { n: 2 }.to_string(), "ngram:2");
        for bad in ["ngram:0", "ngram:x", "ngram:17", "medusa"] {
            assert!(bad.parse::<Speculation>().is_err(), "{bad}");
        }
    }
}
