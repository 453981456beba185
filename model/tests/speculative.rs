//! Speculative decoding with prompt lookup (`ngram`) on SmolLM2-135M: greedy generation with
//! drafts gives the ids plain greedy decoding gives — alone and in a batch, with f32 and int8
//! KV caches (int8 keeps keys by whole groups, so rejected drafts make it re-feed tokens) — where
//! drafts are both kept and rejected, so every rollback path runs. A first difference is only
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
    let cfg = GenerateConfig {
        max_tokens: 64,
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
fn ngram_speculation_gives_the_greedy_tokens() {
    let Some(ctx) = test_context() else { return };
    let path = ensure_default_model(|m| eprintln!("{m}")).expect("default model");
    let g = GgufFile::open(path).unwrap();
    let model = Llama::load(ctx, &g, Quant::None, |_, _| {}).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| tok.encode(p).unwrap()).collect();
    let spec = SpecConfig {
        mode: Speculation::Ngram { n: 3 },
        draft_tokens: 6,
    };
    let (mut drafted, mut kept) = (0, 0);
    for kv in [KvFormat::F32, KvFormat::Int8] {
        // Each prompt alone, then all three as one batch.
        let mut groups: Vec<Vec<Vec<u32>>> = prompts.iter().map(|p| vec![p.clone()]).collect();
        groups.push(prompts.clone());
        for group in groups {
            let plain = run(ctx, &model, &tok, &group, kv, None);
            let fast = run(ctx, &model, &tok, &group, kv, Some(spec));
            for (p, f) in plain.iter().zip(&fast) {
                drafted += f.drafted;
                kept += f.accepted;
                let (a, b) = (&p.generated_ids, &f.generated_ids);
                let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) else {
                    assert_eq!(a.len(), b.len(), "{kv:?}: same tokens, different lengths");
                    continue;
                };
                let ids: Vec<u32> = p.prompt_ids.iter().chain(&a[..i]).copied().collect();
                let gap = top2_gap(ctx, &model, &ids);
                assert!(
                    gap < NEAR_TIE,
                    "{kv:?}: token {i} is {} with speculation and {} without (top-2 gap {gap})",
                    b[i],
                    a[i]
                );
                eprintln!("{kv:?}: first difference at token {i}, a near tie (gap {gap})");
            }
        }
    }
    eprintln!("drafted {drafted}, kept {kept}");
    assert!(
        kept > 0 && drafted > kept,
        "drafts must be both kept and rejected"
    );
}
