//! Speculative decoding on SmolLM2-135M: greedy generation with drafts gives the ids plain
//! greedy decoding gives. Three prompts decoded as one batch (each sequence with its own drafts
//! and acceptance) under prompt lookup (`ngram`), self-drafting from the first 8 of 30 layers
//! (`layers:8`) and a draft model (`draft:` the same file, so it agrees nearly every time); and
//! the repeating prompt alone with an int8 KV cache (int8 keeps keys by whole groups, so
//! rejected drafts make it re-feed tokens). Drafts are both kept and rejected, so every
//! rollback path runs; a draft model with another vocabulary is a named error. A first difference is only
//! allowed where plain decoding's top-2 logits are within 0.05 (the verification pass is the
//! prefill path, whose f32 sums are ordered differently), and is reported.

use kiln_kernels::attention::KvFormat;
use kiln_model::fetch::ensure_default_model;
use kiln_model::generate::{GenerateConfig, Generation, generate};
use kiln_model::gguf::GgufFile;
use kiln_model::llama::Llama;
use kiln_model::quantize::Quant;
use kiln_model::session::{Output, Session};
use kiln_model::speculative::{SpecConfig, Speculation};
use kiln_model::tokenizer::Tokenizer;
use kiln_runtime::Context;
use kiln_runtime::testing::test_context;

const NEAR_TIE: f32 = 0.05;

/// A KV format, groups of prompts generated together, and the speculation modes to run on them.
type Case = (KvFormat, Vec<Vec<Vec<u32>>>, Vec<Speculation>);

const PROMPTS: &[&str] = &[
    // Repeating text: most drafts are kept.
    "Rewrite the list in upper case.\nnames: alice, bob, carol, dave, erin, frank, grace\n\
     upper case: ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE\n\
     names: alice, bob, carol, dave, erin, frank, grace\nupper case:",
    "def fibonacci(n):",
    "The capital of France is",
];

fn run(
    ctx: &Context,
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    kv: KvFormat,
    spec: Option<SpecConfig>,
) -> Vec<Generation> {
    // 64 new tokens; 32 under the GPU plan (see `speculation_gives_the_greedy_tokens`).
    let gpu_plan = std::env::var("KILN_PLAN").is_ok_and(|p| p == "gpu");
    let cfg = GenerateConfig {
        max_tokens: if gpu_plan { 32 } else { 64 },
        capacity: 512,
        kv,
        spec,
        ..GenerateConfig::default()
    };
    generate(ctx, model, tok, prompts, &cfg, |_, _| {})
        .unwrap()
        .0
}

/// Plain decoding's top-2 logit gap after `ids`.
fn top2_gap(ctx: &Context, model: &Llama, ids: &[u32]) -> f32 {
    let mut s = Session::new(ctx, model, 1, ids.len() + 1, ids.len()).unwrap();
    let rows: Vec<(usize, u32)> = ids.iter().map(|&t| (0, t)).collect();
    let mut l = s
        .step(ctx, model, &rows, &[ids.len() - 1], Output::Logits)
        .unwrap()
        .logits;
    l.sort_by(|a, b| b.total_cmp(a));
    l[0] - l[1]
}

#[test]
fn speculation_gives_the_greedy_tokens() {
    let Some(ctx) = test_context() else { return };
    let path = ensure_default_model(|m| eprintln!("{m}")).expect("default model");
    let g = GgufFile::open(path).unwrap();
    let model = Llama::load(ctx, &g, Quant::None, |_, _| {}).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| tok.encode(p).unwrap()).collect();
    let mut totals: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let path_for_draft = ensure_default_model(|_| {}).unwrap();
    // All three prompts as one batch under every mode; the repeating one alone over int8 keys.
    // Under the GPU plan, whose kernels run several times slower on lavapipe, the batch under
    // prompt lookup only, over 32 tokens: the generation loop is the same code under both plans, and the GPU
    // plan's kernels are checked by the kernel and model tests.
    let gpu_plan = std::env::var("KILN_PLAN").is_ok_and(|p| p == "gpu");
    let mut cases: Vec<Case> = vec![
        (
            KvFormat::F32,
            vec![prompts.clone()],
            vec![
                Speculation::Ngram { n: 3 },
                Speculation::Layers { k: 8 },
                Speculation::Draft {
                    path: path_for_draft,
                },
            ],
        ),
        (
            KvFormat::Int8,
            vec![vec![prompts[0].clone()]],
            vec![Speculation::Ngram { n: 3 }],
        ),
    ];
    if gpu_plan {
        eprintln!("GPU plan: the batch under ngram only, 32 tokens");
        cases.truncate(1);
        cases[0].2.truncate(1);
    }
    for (kv, groups, modes) in cases {
        for group in groups {
            let plain = run(ctx, &model, &tok, &group, kv, None);
            for mode in &modes {
                let spec = SpecConfig {
                    mode: mode.clone(),
                    draft_tokens: 6,
                };
                let fast = run(ctx, &model, &tok, &group, kv, Some(spec));
                let (mut drafted, mut kept) = (0, 0);
                for (p, f) in plain.iter().zip(&fast) {
                    drafted += f.drafted;
                    kept += f.accepted;
                    let (a, b) = (&p.generated_ids, &f.generated_ids);
                    let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) else {
                        assert_eq!(
                            a.len(),
                            b.len(),
                            "{mode} {kv:?}: same tokens, other lengths"
                        );
                        continue;
                    };
                    let ids: Vec<u32> = p.prompt_ids.iter().chain(&a[..i]).copied().collect();
                    let gap = top2_gap(ctx, &model, &ids);
                    assert!(
                        gap < NEAR_TIE,
                        "{mode} {kv:?}: token {i} is {} with speculation and {} without (top-2 gap {gap})",
                        b[i],
                        a[i]
                    );
                    eprintln!("{mode} {kv:?}: first difference at token {i}, a near tie ({gap})");
                }
                eprintln!(
                    "{mode} {kv:?}, {} prompt(s): drafted {drafted}, kept {kept}",
                    group.len()
                );
                totals.entry(mode.to_string()).or_insert((0, 0)).0 += drafted;
                totals.get_mut(&mode.to_string()).unwrap().1 += kept;
            }
        }
    }
    for (mode, (drafted, kept)) in &totals {
        match mode.as_str() {
            // The same model as its own draft agrees but where a sequence ends inside a draft
            // (its rest is never checked) or the two paths' sums round a near tie apart.
            m if m.starts_with("draft:") => assert!(10 * kept >= 9 * drafted, "{mode}"),
            _ => assert!(
                *kept > 0 && drafted > kept,
                "{mode}: drafts both kept and rejected"
            ),
        }
    }
}

/// A draft model whose vocabulary is not the model's is refused, naming the draft file.
#[test]
fn draft_with_another_vocabulary_is_refused() {
    let Some(ctx) = test_context() else { return };
    let path = ensure_default_model(|m| eprintln!("{m}")).expect("default model");
    let g = GgufFile::open(&path).unwrap();
    let model = Llama::load(ctx, &g, Quant::None, |_, _| {}).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    // A small random model of 320 tokens, not SmolLM2's 49,152.
    let other = random_models();
    let draft = other.join("f16").join("model.gguf");
    let spec = SpecConfig {
        mode: Speculation::Draft {
            path: draft.clone(),
        },
        draft_tokens: 4,
    };
    let cfg = GenerateConfig {
        max_tokens: 8,
        capacity: 64,
        spec: Some(spec),
        ..GenerateConfig::default()
    };
    let prompt = vec![tok.encode("Hello").unwrap()];
    let e = generate(ctx, &model, &tok, &prompt, &cfg, |_, _| {})
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("vocabulary") && e.to_string().contains("model.gguf"),
        "{e}"
    );
}

/// Temperature of the sampled-speculation test: peaked enough that the drafted (argmax) token
/// carries much of the mass, so a wrong rule shows.
const TEMPERATURE: f32 = 0.25;

/// The small random checkpoints of `model/reference/llama_reference.py`, written once per test
/// process (it needs `python3 -m pip install numpy gguf`, as `.ci/run` does).
fn random_models() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-spec-models-{}", std::process::id()));
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/llama_reference.py");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "python3 -m pip install numpy gguf"
        );
        dir
    })
}

/// Softmax of `logits` / [`TEMPERATURE`] in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
    let t = TEMPERATURE as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let total: f64 = e.iter().sum();
    e.into_iter().map(|x| x / total).collect()
}

/// Sampled speculation keeps the model's distribution. On a small random model (320 tokens,
/// `llama_reference.py`'s f16 checkpoint) drafting for itself (`draft:` its own file, greedy
/// drafts), the second generated token at temperature 0.25 is checked against its exact
/// distribution, Σ over first tokens t of p(t) p(· | t), computed from the model's logits:
/// 2,048 samples, Pearson's chi-square over tokens expected at least 5 times (the rest pooled)
/// under the p = 0.001 critical value. Drawing a rejected draft's replacement from p with the
/// draft left in (the rule broken) fails it.
#[test]
fn sampled_speculation_keeps_the_distribution() {
    let Some(ctx) = test_context() else { return };
    let dir = random_models();
    let path = dir.join("f16").join("model.gguf");
    let g = GgufFile::open(&path).unwrap();
    let model = Llama::load(ctx, &g, Quant::None, |_, _| {}).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let vocab = model.cfg.n_vocab;
    let prompt: Vec<u32> = vec![5, 17, 42, 99, 7, 230];

    // Exact: p(t2) = Σ_t1 p(t1) p(t2 | t1), each t1 a step after the cached prompt.
    let mut s = Session::new(ctx, &model, 1, prompt.len() + 2, prompt.len()).unwrap();
    let rows: Vec<(usize, u32)> = prompt.iter().map(|&t| (0, t)).collect();
    let first = s.step(ctx, &model, &rows, &[prompt.len() - 1], Output::Logits);
    let p1 = softmax(&first.unwrap().logits);
    let mut p2 = vec![0.0f64; vocab];
    for (t1, &p) in p1.iter().enumerate() {
        s.truncate(0, prompt.len());
        let out = s.step(ctx, &model, &[(0, t1 as u32)], &[0], Output::Logits);
        for (t2, q) in softmax(&out.unwrap().logits).into_iter().enumerate() {
            p2[t2] += p * q;
        }
    }

    // Sampled with speculation: 48 batches of 64 sequences, each its own seed.
    let (batch, batches) = (64, 32);
    let mut counts = vec![0usize; vocab];
    let (mut drafted, mut kept) = (0, 0);
    for b in 0..batches {
        let cfg = GenerateConfig {
            max_tokens: 3,
            capacity: 16,
            sampler: kiln_model::sampling::SamplerConfig {
                temperature: TEMPERATURE,
                top_k: 0,
                top_p: 1.0,
                seed: 1000 * b as u64,
                ..Default::default()
            },
            spec: Some(SpecConfig {
                mode: Speculation::Draft { path: path.clone() },
                draft_tokens: 2,
            }),
            ..GenerateConfig::default()
        };
        let prompts = vec![prompt.clone(); batch];
        let (out, stats) = generate(ctx, &model, &tok, &prompts, &cfg, |_, _| {}).unwrap();
        drafted += stats.drafted;
        kept += stats.accepted;
        for g in out {
            counts[g.generated_ids[1] as usize] += 1;
        }
    }
    assert!(
        drafted >= batch * batches,
        "every second token is a checked draft"
    );
    let n = (batch * batches) as f64;
    let (mut x2, mut bins, mut pooled_p, mut pooled_c) = (0.0, 0, 0.0, 0usize);
    for (t, &p) in p2.iter().enumerate() {
        if n * p >= 5.0 {
            x2 += (counts[t] as f64 - n * p).powi(2) / (n * p);
            bins += 1;
        } else {
            pooled_p += p;
            pooled_c += counts[t];
        }
    }
    if n * pooled_p >= 5.0 {
        x2 += (pooled_c as f64 - n * pooled_p).powi(2) / (n * pooled_p);
        bins += 1;
    }
    // The chi-square quantile at p = 0.001 (Wilson–Hilferty).
    let df = (bins - 1) as f64;
    let critical = df * (1.0 - 2.0 / (9.0 * df) + 3.09 * (2.0 / (9.0 * df)).sqrt()).powi(3);
    eprintln!(
        "chi-square {x2:.1} over {bins} bins (critical {critical:.1}); drafts kept {kept} of {drafted}"
    );
    assert!(bins >= 5, "enough tokens likely enough to test");
    assert!(
        x2 < critical,
        "chi-square {x2} over {bins} bins, critical {critical}"
    );
}
