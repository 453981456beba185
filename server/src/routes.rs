//! The HTTP routes: thin handlers that check a request, hand it to the [`Engine`] and shape
//! its events as OpenAI's JSON or server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt, stream};
use kiln_model::chat::Message;
use kiln_model::sampling::SamplerConfig;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{Body, Content, Endpoint, Header, Prompt, model_list};
use crate::engine::{Engine, Event, Input, Request};
use crate::error::ApiError;

/// Stop strings a request may give (OpenAI's limit).
const MAX_STOP: usize = 4;

/// What every handler shares.
pub struct AppState {
    pub engine: Engine,
    /// Numbers response ids.
    next_id: AtomicU64,
}

pub fn router(engine: Engine) -> Router {
    let state = Arc::new(AppState {
        engine,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"message": "no such route", "type": "invalid_request_error", "param": null, "code": null}})),
            )
        })
        .with_state(state)
}

async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let info = &s.engine.info;
    Json(model_list(&info.name, info.created))
}

/// 200 while the engine runs; 503 once its thread has ended (a bug or a lost device).
async fn health(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.engine.is_running() {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "message": "the engine has stopped"})),
        )
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.engine.metrics.render(),
    )
}

async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = async {
        let mut req = parse(&body)?;
        let messages = req
            .messages
            .take()
            .ok_or_else(|| ApiError::bad("messages is required", Some("messages")))?
            .into_iter()
            .map(|m| Message {
                role: m.role,
                content: match m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t,
                    Some(Content::Parts(parts)) => parts
                        .into_iter()
                        .filter(|p| p.kind == "text")
                        .filter_map(|p| p.text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                },
            })
            .collect::<Vec<_>>();
        if messages.is_empty() {
            return Err(ApiError::bad("messages is empty", Some("messages")));
        }
        serve(&s, Endpoint::Chat, Input::Chat(messages), req, None).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = async {
        let mut req = parse(&body)?;
        let one = |n: usize| {
            (n == 1)
                .then_some(())
                .ok_or_else(|| ApiError::bad("one prompt per request is supported", Some("prompt")))
        };
        let prompt = req.prompt.take();
        let input =
            match prompt.ok_or_else(|| ApiError::bad("prompt is required", Some("prompt")))? {
                Prompt::Text(t) => Input::Text(t),
                Prompt::Ids(ids) => Input::Ids(ids),
                Prompt::Texts(mut v) => {
                    one(v.len())?;
                    Input::Text(v.remove(0))
                }
                Prompt::IdLists(mut v) => {
                    one(v.len())?;
                    Input::Ids(v.remove(0))
                }
            };
        // OpenAI's legacy completions default to 16 tokens.
        serve(&s, Endpoint::Completions, input, req, Some(16)).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

fn parse(body: &[u8]) -> Result<Body, ApiError> {
    Body::parse(body).map_err(|e| ApiError::bad(format!("invalid request body: {e}"), None))
}

/// Checks the sampling fields, runs the request and answers in full or as a stream.
async fn serve(
    s: &AppState,
    endpoint: Endpoint,
    input: Input,
    p: Body,
    default_max: Option<usize>,
) -> Result<Response, ApiError> {
    let info = &s.engine.info;
    if let Some(asked) = p.model.as_ref().filter(|m| **m != info.name) {
        return Err(ApiError::UnknownModel {
            asked: asked.clone(),
            served: info.name.clone(),
        });
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("only n = 1 is supported", Some("n")));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            format!("temperature {temperature} is outside 0..=2"),
            Some("temperature"),
        ));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(
            format!("top_p {top_p} is outside (0, 1]"),
            Some("top_p"),
        ));
    }
    let stop = p.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(ApiError::bad(
            format!("{} stop strings; at most {MAX_STOP}", stop.len()),
            Some("stop"),
        ));
    }
    let max_tokens = p.max_completion_tokens.or(p.max_tokens).or(default_max);
    if max_tokens == Some(0) {
        return Err(ApiError::bad(
            "max_tokens must be at least 1",
            Some("max_tokens"),
        ));
    }
    let request = Request {
        input,
        max_tokens,
        sampler: SamplerConfig {
            temperature,
            top_p,
            top_k: p.top_k.unwrap_or(0),
            repeat_penalty: 1.0,
            seed: p.seed.unwrap_or_else(rand::random),
            ..SamplerConfig::default()
        },
        stop,
    };
    let mut events = s.engine.submit(request);
    match events.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::Internal("the engine dropped the request".into())),
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let head = Header {
        endpoint,
        id: format!(
            "{}-{}",
            endpoint.id_prefix(),
            s.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        created,
        model: info.name.clone(),
    };
    if p.stream {
        let usage = p.stream_options.is_some_and(|o| o.include_usage);
        let sse = axum::response::Sse::new(sse_stream(head, events, usage));
        return Ok(sse.keep_alive(KeepAlive::default()).into_response());
    }
    let mut text = String::new();
    loop {
        match events.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { finish, usage, .. }) => {
                return Ok(Json(head.complete(&text, finish, usage)).into_response());
            }
            Some(Event::Failed(e)) => return Err(e),
            Some(Event::Started { .. }) => {}
            None => return Err(ApiError::Internal("the engine dropped the request".into())),
        }
    }
}

/// The engine's events as OpenAI's chunks, then `data: [DONE]`. Dropping the stream (the
/// client went away) drops `events`, which cancels the request.
fn sse_stream(
    head: Header,
    events: UnboundedReceiver<Event>,
    include_usage: bool,
) -> impl Stream<Item = Result<Sse, Infallible>> {
    let data = |v: serde_json::Value| Sse::default().data(v.to_string());
    // The chat endpoint opens with the assistant's role, as OpenAI does.
    let opening = (head.endpoint == Endpoint::Chat).then(|| data(head.chunk(Some(""), true, None)));
    let rest = stream::unfold(Some((head, events)), move |state| async move {
        let (head, mut events) = state?;
        let out = match events.recv().await {
            Some(Event::Text(t)) => vec![data(head.chunk(Some(&t), false, None))],
            Some(Event::Started { .. }) => vec![],
            Some(Event::Done { finish, usage, .. }) => {
                let mut last = vec![data(head.chunk(None, false, Some(finish)))];
                if include_usage {
                    last.push(data(head.usage_chunk(usage)));
                }
                last.push(Sse::default().data("[DONE]"));
                return Some((last, None));
            }
            Some(Event::Failed(e)) => return Some((vec![data(e.body())], None)),
            None => return None,
        };
        Some((out, Some((head, events))))
    });
    stream::iter(opening)
        .chain(rest.flat_map(stream::iter))
        .map(Ok)
}
