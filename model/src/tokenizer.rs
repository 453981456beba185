//! Byte-level BPE tokenizers built with the `tokenizers` crate: from a GGUF's `tokenizer.ggml.*`
//! metadata (vocabulary, merges, token types, BOS/EOS) or from a `tokenizer.json`.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// GGUF token types that are matched whole in text: control (3) and user-defined (4).
const SPECIAL_TYPES: [i32; 2] = [3, 4];

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
        let config = |message: String| ModelError::Config {
            path: g.path.clone(),
            message,
        };
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(config(format!(
                "tokenizer.ggml.model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
            )));
        }
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let merges = g
            .str_array("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| config(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| config(format!("building the BPE model: {e}")))?;

        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre = match g.str("tokenizer.ggml.pre").unwrap_or("default") {
            "default" | "gpt2" | "gpt-2" => byte_level,
            // SmolLM splits every digit alone before GPT-2's pattern (as its tokenizer.json does).
            "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level,
            ])),
            other => {
                return Err(config(format!(
                    "tokenizer.ggml.pre {other:?} is not supported (default, gpt2, smollm)"
                )));
            }
        };
        let mut inner = HfTokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let types = g.i32_array("tokenizer.ggml.token_type").unwrap_or_default();
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, ty)| SPECIAL_TYPES.contains(ty))
            .map(|(t, _)| AddedToken::from(t.to_string(), true))
            .collect();
        inner.add_special_tokens(&specials);

        let id = |key: &str| g.u32(key).ok().filter(|&i| (i as usize) < tokens.len());
        Ok(Self {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: g.bool("tokenizer.ggml.add_bos_token").unwrap_or(false),
            source: g.path.display().to_string(),
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
