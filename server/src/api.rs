//! The OpenAI API's request and response bodies, as far as Kiln serves them
//! (<https://platform.openai.com/docs/api-reference/chat>, `/completions` and `/models`).
//! Unknown request fields are ignored, as OpenAI-compatible servers do.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `stop`: one string or several.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A request body of either endpoint: `messages` for chat, `prompt` for completions.
#[derive(Debug, Deserialize, Clone)]
pub struct Body {
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<Prompt>,
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    /// The chat endpoint's newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Not OpenAI's; llama.cpp and vLLM take it too (0: off).
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

impl Body {
    /// Parses JSON; the error names the field that is wrong, if one is.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| match e.path().to_string() {
            p if p == "." => e.inner().to_string(),
            p => format!("{p}: {}", e.inner()),
        })
    }
}

/// A message's `content`: a string or a list of parts, of which the text parts are read.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize, Clone)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

/// `prompt`: text, or token ids; a list of one of either.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

/// Why generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` or the context ran out.
    Length,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Which endpoint a response is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    pub fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        }
    }
}

/// What every body of one response shares.
#[derive(Debug, Clone)]
pub struct Header {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Header {
    fn body(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.endpoint.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole answer of a request that did not stream.
    pub fn complete(&self, text: &str, finish: FinishReason, usage: Usage) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": null,
            }),
            Endpoint::Completions => json!({
                "index": 0, "text": text, "finish_reason": finish, "logprobs": null,
            }),
        };
        let mut body = self.body(false, json!([choice]));
        body["usage"] = json!(usage);
        body
    }

    /// A streamed piece: text (the chat endpoint's first chunk also names the role), or the
    /// final chunk with its finish reason.
    pub fn chunk(&self, text: Option<&str>, first: bool, finish: Option<FinishReason>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if let Some(t) = text {
                    delta["content"] = json!(t);
                }
                json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null})
            }
            Endpoint::Completions => json!({
                "index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null,
            }),
        };
        self.body(true, json!([choice]))
    }

    /// The last streamed chunk when `stream_options.include_usage` is set: no choices.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        let mut body = self.body(true, json!([]));
        body["usage"] = json!(usage);
        body
    }
}

/// `GET /v1/models`.
pub fn model_list(name: &str, created: u64) -> Value {
    json!({
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "kiln"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_in_their_openai_forms() {
        let chat = Body::parse(
            br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi"}]}],
                "stop":"\n","stream":true,"stream_options":{"include_usage":true},"logprobs":false}"#,
        )
        .unwrap();
        let messages = chat.messages.unwrap();
        assert_eq!(messages.len(), 2);
        assert!(
            matches!(&messages[1].content, Some(Content::Parts(p)) if p[0].text.as_deref() == Some("Hi"))
        );
        assert_eq!(chat.stop.unwrap().into_vec(), vec!["\n"]);
        assert!(chat.stream_options.unwrap().include_usage);

        let c = Body::parse(br#"{"prompt":[1,2,3],"stop":["a","b"],"max_tokens":4}"#).unwrap();
        assert!(matches!(c.prompt, Some(Prompt::Ids(ref v)) if v == &[1, 2, 3]));
        assert_eq!(c.max_tokens, Some(4));
        // Wrong types are errors that name the field, not defaults.
        let e = Body::parse(br#"{"prompt":"x","max_tokens":"4"}"#).unwrap_err();
        assert!(e.starts_with("max_tokens: invalid type"), "{e}");
        let e = Body::parse(br#"{"messages":[{"role":"user","content":7}]}"#).unwrap_err();
        assert!(e.starts_with("messages[0].content"), "{e}");
        assert!(Body::parse(b"{not json").is_err());
    }

    #[test]
    fn responses_have_openai_shapes() {
        let h = Header {
            endpoint: Endpoint::Chat,
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        };
        let full = h.complete("Hello", FinishReason::Length, Usage::new(3, 2));
        assert_eq!(full["choices"][0]["message"]["content"], "Hello");
        assert_eq!(full["choices"][0]["finish_reason"], "length");
        assert_eq!(full["usage"]["total_tokens"], 5);
        let first = h.chunk(Some("He"), true, None);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first["choices"][0]["finish_reason"].is_null());
        let last = h.chunk(None, false, Some(FinishReason::Stop));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(h.usage_chunk(Usage::new(1, 1))["choices"], json!([]));
    }
}
