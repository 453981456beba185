//! Byte-level BPE tokenizers built with the `tokenizers` crate: from a GGUF's `tokenizer.ggml.*`
//! metadata (vocabulary, merges, token types, BOS/EOS) or from a `tokenizer.json`.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// GGUF token types that are matched whole in text: control (3) and user-defined (4).
const SPECIAL_TYPES: [i32; 2] = [3, 4];

/// A byte-level BPE vocabulary as GGUF's `tokenizer.ggml.*` keys hold it.
#[derive(Clone, Debug, Default)]
pub struct BpeVocab {
    /// Tokens by id (byte-level strings).
    pub tokens: Vec<String>,
    /// Merges, "left right", highest priority first.
    pub merges: Vec<String>,
    /// GGUF token types by id (3 control and 4 user-defined are matched whole in text).
    pub types: Vec<i32>,
    /// The pre-tokenizer (`tokenizer.ggml.pre`): default/gpt2, smollm, llama-bpe, qwen2.
    pub pre: String,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
}

/// Llama 3's split (`llama-bpe`): contractions, letters with one leading non-letter, numbers of
/// up to 3 digits, punctuation runs, newlines, spaces (its tokenizer.json's regex).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2/2.5/3's split (`qwen2`): Llama 3's with every digit alone.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer `pre` names (as llama.cpp's `tokenizer.ggml.pre`), and whether text is
/// NFC-normalized first (Qwen's tokenizer.json does).
fn pre_tokenizer(pre: &str) -> std::result::Result<(PreTokenizerWrapper, bool), String> {
    let byte_level = |trim| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, trim, true));
    let split = |regex: &str, trim| -> std::result::Result<PreTokenizerWrapper, String> {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| format!("pre-tokenizer {pre:?}: {e}"))?;
        let bytes = ByteLevel::new(false, trim, false);
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(bytes),
        ])))
    };
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => (byte_level(true), false),
        // SmolLM splits every digit alone before GPT-2's pattern (as its tokenizer.json does).
        "smollm" => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ])),
            false,
        ),
        "llama-bpe" | "llama3" => (split(LLAMA3_SPLIT, true)?, false),
        "qwen2" => (split(QWEN2_SPLIT, false)?, true),
        other => {
            return Err(format!(
                "tokenizer.ggml.pre {other:?} is not supported (default, gpt2, smollm, llama-bpe, qwen2)"
            ));
        }
    })
}

pub struct Tokenizer {
    inner: HfTokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Prepend BOS when encoding a prompt.
    pub add_bos: bool,
    source: String,
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes (`tokenizer.ggml.model = gpt2`: byte-level BPE).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::Config {
                path: g.path.clone(),
                message: format!(
                    "tokenizer.ggml.model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
                ),
            });
        }
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let id = |key: &str| g.u32(key).ok().filter(|&i| (i as usize) < tokens.len());
        let vocab = BpeVocab {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            merges: g
                .str_array("tokenizer.ggml.merges")?
                .into_iter()
                .map(str::to_string)
                .collect(),
            types: g.i32_array("tokenizer.ggml.token_type").unwrap_or_default(),
            pre: g.str("tokenizer.ggml.pre").unwrap_or("default").to_string(),
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: g.bool("tokenizer.ggml.add_bos_token").unwrap_or(false),
        };
        Self::from_bpe(vocab, &g.path)
    }

    /// A byte-level BPE tokenizer from its vocabulary as GGUF keeps it; `source` names the file
    /// in errors. The pre-tokenizer follows `pre` as llama.cpp names them.
    pub fn from_bpe(v: BpeVocab, source: &Path) -> Result<Self> {
        let config = |message: String| ModelError::Config {
            path: source.to_path_buf(),
            message,
        };
        let merges = v
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| config(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| config(format!("building the BPE model: {e}")))?;
        let mut inner = HfTokenizer::new(bpe);
        let (pre, nfc) = pre_tokenizer(&v.pre).map_err(config)?;
        inner.with_pre_tokenizer(Some(pre));
        if nfc {
            inner.with_normalizer(Some(NormalizerWrapper::NFC(NFC)));
        }
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let specials: Vec<AddedToken> = v
            .tokens
            .iter()
            .zip(&v.types)
            .filter(|(_, ty)| SPECIAL_TYPES.contains(ty))
            .map(|(t, _)| AddedToken::from(t.to_string(), true))
            .collect();
        inner.add_special_tokens(&specials);
        Ok(Self {
            inner,
            bos: v.bos,
            eos: v.eos,
            add_bos: v.add_bos,
            source: source.display().to_string(),
        })
    }

    /// A `tokenizer.json` (Hugging Face format); BOS/EOS are given by the caller.
    pub fn from_file(path: &Path, bos: Option<u32>, eos: Option<u32>) -> Result<Self> {
        let inner = HfTokenizer::from_file(path).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("tokenizer: {e}"),
        })?;
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos: false,
            source: path.display().to_string(),
        })
    }

    /// The tokenizer of a Hugging Face model folder: `tokenizer.json`, or the GPT-2 BPE pair
    /// `vocab.json` + `merges.txt` (also accepted under their original names `encoder.json` +
    /// `vocab.bpe`). `<|endoftext|>` is the end-of-text token when present.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let mut tok = if json.exists() {
            Self::from_file(&json, None, None)?
        } else {
            let pick = |names: [&str; 2]| names.iter().map(|n| dir.join(n)).find(|p| p.exists());
            let missing = |what: &str| ModelError::Config {
                path: dir.to_path_buf(),
                message: format!("no tokenizer: expected tokenizer.json or {what}"),
            };
            let vocab = pick(["vocab.json", "encoder.json"])
                .ok_or_else(|| missing("vocab.json (or encoder.json)"))?;
            let merges = pick(["merges.txt", "vocab.bpe"])
                .ok_or_else(|| missing("merges.txt (or vocab.bpe)"))?;
            let (v, m) = (
                vocab.to_string_lossy().to_string(),
                merges.to_string_lossy().to_string(),
            );
            let bpe = BPE::from_file(&v, &m)
                .build()
                .map_err(|e| ModelError::Config {
                    path: vocab.clone(),
                    message: format!("BPE files: {e}"),
                })?;
            let mut inner = HfTokenizer::new(bpe);
            inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            inner.with_decoder(Some(ByteLevelDecoder::default()));
            Self {
                inner,
                bos: None,
                eos: None,
                add_bos: false,
                source: dir.display().to_string(),
            }
        };
        if let Some(id) = tok.inner.token_to_id("<|endoftext|>") {
            tok.inner
                .add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
            tok.eos = Some(id);
        }
        Ok(tok)
    }

    /// Token ids of `text`, special tokens matched whole, with BOS prepended if the model asks.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| self.err(format!("encoding {text:?}: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids` (special tokens included, as they were generated).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| self.err(format!("decoding {ids:?}: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn err(&self, message: String) -> ModelError {
        ModelError::Config {
            path: self.source.clone().into(),
            message,
        }
    }
}

/// Turns a growing list of ids into text pieces as they become whole UTF-8, for streaming.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Adds `id` and returns the new text, if any is complete.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        // A multi-byte character split across tokens decodes to U+FFFD until its last byte arrives.
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
