//! The engine under load, on the default model (SmolLM2-135M-Instruct): requests batched
//! together, joining mid-decode and prefilled in chunks give what each gives alone; a cached
//! prefix is reused; cancelled requests free their slots; a full queue refuses; bad prompts are
//! named errors; a KV pool too small for everyone preempts and recomputes without changing an
//! answer.

use std::time::{Duration, Instant};

use kiln_model::fetch::ensure_default_model;
use kiln_model::gguf::GgufFile;
use kiln_model::loader::load;
use kiln_model::quantize::Quant;
use kiln_model::sampling::SamplerConfig;
use kiln_model::session::{Output, Session};
use kiln_model::tokenizer::Tokenizer;
use kiln_runtime::DeviceOptions;
use kiln_runtime::testing::{SKIP_VAR, test_context};
use kiln_server::api::FinishReason;
use kiln_server::engine::{Engine, EngineConfig, Event, Input, Request};
use kiln_server::error::ApiError;
use tokio::sync::mpsc::UnboundedReceiver;

/// A first difference between batched and alone is allowed only where the alone run's top two
/// logits are this close (the bound; batched rows take other kernels).
const TIE: f32 = 0.05;

struct Answer {
    text: String,
    tokens: Vec<u32>,
    finish: FinishReason,
}

fn greedy(ids: &[u32], max_tokens: usize) -> Request {
    Request {
        input: Input::Ids(ids.to_vec()),
        max_tokens: Some(max_tokens),
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        stop: vec![],
    }
}

fn finish(mut rx: UnboundedReceiver<Event>) -> Result<Answer, ApiError> {
    let mut text = String::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Started { .. }) => {}
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { finish, tokens, .. }) => {
                return Ok(Answer {
                    text,
                    tokens,
                    finish,
                });
            }
            Some(Event::Failed(e)) => return Err(e),
            None => panic!("the engine dropped a request"),
        }
    }
}

/// The gap between the two largest logits after `ids`, from a fresh single-sequence session.
fn top2_gap(ids: &[u32]) -> f32 {
    let ctx = test_context().expect("a device");
    let path = ensure_default_model(|_| {}).unwrap();
    let loaded = load(ctx, &path, Quant::None, |_, _| {}).unwrap();
    let model = loaded.model.as_ref();
    let mut s = Session::new(ctx, model, 1, ids.len() + 1, ids.len()).unwrap();
    let rows: Vec<(usize, u32)> = ids.iter().map(|&t| (0, t)).collect();
    let out = s
        .step(ctx, model, &rows, &[ids.len() - 1], Output::Logits)
        .unwrap();
    let mut l = out.logits;
    l.sort_by(|a, b| b.total_cmp(a));
    l[0] - l[1]
}

/// `got` is `want` (both generated after `prompt`), or parts from it only where `want`'s
/// next token was a near tie.
fn same_or_near_tie(prompt: &[u32], want: &[u32], got: &[u32]) {
    let same = want.iter().zip(got).take_while(|(x, y)| x == y).count();
    if same < want.len() {
        let mut ids = prompt.to_vec();
        ids.extend(&want[..same]);
        let gap = top2_gap(&ids);
        assert!(
            gap < TIE,
            "token {same} differs ({got:?} vs {want:?}), top-2 gap {gap}"
        );
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An engine on the default model with `cfg`'s batch and cache, and the model's tokenizer;
/// `None` where GPU tests are skipped.
fn start(cfg: EngineConfig) -> Option<(Engine, Tokenizer)> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_VAR}=1: skipping");
        return None;
    }
    let path = ensure_default_model(|m| eprintln!("{m}")).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let engine = Engine::start(EngineConfig {
        model: Some(path),
        device: DeviceOptions::from_env().unwrap(),
        ..cfg
    })
    .unwrap();
    Some((engine, tok))
}

#[test]
fn batched_requests_match_alone_and_slots_come_back() {
    let Some((engine, tok)) = start(EngineConfig {
        max_batch: 4,
        ctx_size: Some(160),
        prefill_chunk: 16,
        max_queue: 4,
        ..EngineConfig::default()
    }) else {
        return;
    };
    let m = engine.metrics.clone();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);

    // Six prompts for four slots, one long enough to take three prefill chunks, and budgets that
    // end at different steps: the last two join a running batch as others leave.
    let texts = [
        "The capital of France is",
        "Once upon a time, in a land far away, there lived a dragon who loved to read books about the history of the stars and the sea, and every night it would",
        "def fibonacci(n):",
        "A haiku about GPUs:",
        "1, 2, 3, 4,",
        "The three primary colors are",
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
    assert!(
        prompts[1].len() > 2 * 16,
        "the long prompt spans three chunks"
    );
    let budgets = [12, 9, 14, 6, 10, 8];
    let alone: Vec<Answer> = prompts
        .iter()
        .zip(budgets)
        .map(|(p, n)| finish(engine.submit(greedy(p, n))).unwrap())
        .collect();
    let cached_before = get(&m.prefix_cached_tokens);
    let receivers: Vec<_> = prompts
        .iter()
        .zip(budgets)
        .map(|(p, n)| engine.submit(greedy(p, n)))
        .collect();
    let batched: Vec<Answer> = receivers
        .into_iter()
        .map(|rx| finish(rx).unwrap())
        .collect();
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(
            a.tokens.len(),
            budgets[i],
            "prompt {i}: alone ran to its budget"
        );
        assert_eq!(a.finish, FinishReason::Length);
        assert_eq!(tok.decode(&a.tokens).unwrap(), a.text, "prompt {i}: text");
        same_or_near_tie(&prompts[i], &a.tokens, &b.tokens);
        assert_eq!(b.tokens.len(), budgets[i]);
    }
    // Every prompt ran alone first, so the batched run found prefixes in the slots.
    assert!(get(&m.prefix_cached_tokens) > cached_before);

    // Stop strings end the text before them.
    let stop = alone[0].text.chars().skip(4).take(3).collect::<String>();
    let mut r = greedy(&prompts[0], 12);
    r.stop = vec![stop.clone()];
    let stopped = finish(engine.submit(r)).unwrap();
    assert_eq!(stopped.finish, FinishReason::Stop);
    let want = &alone[0].text[..alone[0].text.find(&stop).unwrap()];
    assert_eq!(stopped.text, want);

    // A full queue refuses: four slots and four waiting places for ten long requests.
    let flood: Vec<_> = (0..10)
        .map(|_| engine.submit(greedy(&prompts[0], 100)))
        .collect();
    let mut open = Vec::new();
    let mut busy = 0;
    for mut rx in flood {
        match rx.blocking_recv() {
            Some(Event::Started { .. }) => open.push(rx),
            Some(Event::Failed(ApiError::Busy { limit: 4, .. })) => busy += 1,
            other => panic!("expected Started or Busy, got {other:?}"),
        }
    }
    assert_eq!((open.len(), busy), (8, 2));
    // Cancelled: read a little of half of them, then drop every receiver.
    for rx in open.iter_mut().take(4) {
        assert!(matches!(rx.blocking_recv(), Some(Event::Text(_))));
    }
    drop(open);
    let short = finish(engine.submit(greedy(&prompts[2], 3))).unwrap();
    same_or_near_tie(&prompts[2], &alone[2].tokens[..3], &short.tokens);
    wait_for("every slot and block free", || {
        get(&m.slots_used) == 0
            && get(&m.running) == 0
            && get(&m.waiting) == 0
            && get(&m.kv_blocks_used) == 0
    });
    assert_eq!(get(&m.requests_cancelled), 8);

    // Bad prompts are named errors, and the engine serves on after them.
    let long = vec![28u32; 160];
    match finish(engine.submit(greedy(&long, 1))) {
        Err(
            e @ ApiError::PromptTooLong {
                tokens: 160,
                capacity: 160,
            },
        ) => assert!(e.to_string().contains("160")),
        other => panic!("expected PromptTooLong, got {:?}", other.map(|a| a.tokens)),
    }
    assert!(matches!(
        finish(engine.submit(greedy(&[1, 999_999], 1))),
        Err(ApiError::BadRequest { .. })
    ));
    assert!(matches!(
        finish(engine.submit(greedy(&[], 1))),
        Err(ApiError::BadRequest { .. })
    ));
    let again = finish(engine.submit(greedy(&prompts[3], budgets[3]))).unwrap();
    assert_eq!(again.finish, FinishReason::Length);
}

/// A KV pool of 10 blocks of 16 positions for 4 slots: prompts that share a system prompt share
/// its blocks, requests that outgrow the pool are preempted and recomputed, and every answer is
/// still what the request gives alone.
#[test]
fn a_small_kv_pool_preempts_and_shares_without_changing_answers() {
    let Some((engine, tok)) = start(EngineConfig {
        max_batch: 4,
        ctx_size: Some(160),
        block_size: Some(16),
        kv_blocks: Some(10),
        prefill_chunk: 32,
        ..EngineConfig::default()
    }) else {
        return;
    };
    let m = engine.metrics.clone();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    // Counting runs on without an end of text, so every answer takes its whole budget.
    let system =
        "You are a careful assistant who writes out every number in order, separated by commas.";
    let prompts: Vec<Vec<u32>> = [3, 17, 40, 112, 250]
        .iter()
        .map(|k| {
            let text = format!("{system} Count from {k} to 500: {k}, {}, {},", k + 1, k + 2);
            tok.encode(&text).unwrap()
        })
        .collect();
    assert!(prompts[0].len() > 16, "the system prompt fills a block");
    let budget = 24;
    let alone: Vec<Answer> = prompts
        .iter()
        .map(|p| finish(engine.submit(greedy(p, budget))).unwrap())
        .collect();
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(
            a.tokens.len(),
            budget,
            "request {i} alone ran to its budget: {:?} {:?}",
            a.finish,
            a.text
        );
    }
    assert_eq!(get(&m.preemptions), 0, "one request at a time fits");
    let shared = 16 * (prompts.len() - 1) as u64;
    assert!(
        get(&m.prefix_cached_tokens) >= shared,
        "each later request shares the system prompt's first block"
    );
    // Five requests of up to 4 blocks each (prompt and 24 tokens) for a pool of 10.
    let receivers: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit(greedy(p, budget)))
        .collect();
    for (i, rx) in receivers.into_iter().enumerate() {
        let got = finish(rx).unwrap();
        assert_eq!(got.tokens.len(), budget, "request {i} ran to its budget");
        same_or_near_tie(&prompts[i], &alone[i].tokens, &got.tokens);
    }
    let preempted = get(&m.preemptions);
    eprintln!(
        "preemptions {preempted}, prefix cached {} of {} prompt tokens",
        get(&m.prefix_cached_tokens),
        get(&m.prompt_tokens)
    );
    assert!(preempted > 0, "the pool was too small for all four at once");
    wait_for("every block given back", || {
        get(&m.kv_blocks_used) == 0 && get(&m.running) == 0
    });
    // A lone prompt that takes the whole pool still runs.
    let long = finish(engine.submit(greedy(&vec![28u32; 150], 2))).unwrap();
    assert_eq!(long.tokens.len(), 2);
}

/// After the warm-up, serving compiles nothing more: requests alone and four at once, prompts
/// longer than a prefill chunk beside decode rows, run on the pipelines compiled before the
/// first request.
#[test]
fn warm_up_compiles_every_kernel_serving_needs() {
    let Some((engine, tok)) = start(EngineConfig {
        max_batch: 4,
        ctx_size: Some(160),
        prefill_chunk: 16,
        warmup: true,
        ..EngineConfig::default()
    }) else {
        return;
    };
    let m = engine.metrics.clone();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let warmed = get(&m.pipelines);
    assert!(warmed > 0, "the warm-up compiled the model's kernels");
    let prompts: Vec<Vec<u32>> = [
        "Hi",
        "The capital of France is",
        "Write a long list of fruit, one per line, starting with apples, pears and plums:",
        "Once upon a time, in a kingdom by the sea, there lived a baker who",
    ]
    .iter()
    .map(|p| tok.encode(p).unwrap())
    .collect();
    assert!(prompts[2].len() > 16, "a prompt takes more than one chunk");
    for p in &prompts {
        finish(engine.submit(greedy(p, 6))).unwrap();
    }
    let together: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit(greedy(p, 6)))
        .collect();
    for rx in together {
        finish(rx).unwrap();
    }
    assert_eq!(
        get(&m.pipelines),
        warmed,
        "no kernel compiled while serving"
    );
}
