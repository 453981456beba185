//! Llama-family checkpoints in the GGUF tensor types people download, against the independent
//! float64 reference (`model/reference/llama_reference.py`): random blocks of every type in one
//! file (Q2_K .. Q6_K, Q5_0, Q5_1, Q8_0, Q4_0, Q4_1, BF16, F16, an untied head), all F16 with a
//! tied head, all BF16 (norm weights too), Qwen2 (q/k/v biases, half-split RoPE, tied head) and
//! Qwen3 (per-head q/k RMSNorm, heads of 96 wider than n_embd / n_head) in a Q4_K/Q8_0/Q6_K mix,
//! Llama 3's RoPE scaling (`rope_freqs.weight`, base 500000) and linear RoPE scaling; and the
//! same families as Hugging Face folders (config.json, safetensors in bf16 over three shards with
//! Llama 3's `rope_scaling`, f16 with a tied head, f32 over two shards). Kiln's logits at every prompt position and every
//! decode step must match within LOGIT_TOL, and its 16 greedy tokens the reference's (or differ
//! first where the reference's top-2 gap is a near tie). The script runs once per test process
//! (it needs `python3 -m pip install numpy gguf`, as `.ci/run` does).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_model::ModelError;
use kiln_model::gguf::GgufFile;
use kiln_model::llama::Llama;
use kiln_model::quantize::Quant;
use kiln_model::session::{Output, Session};
use kiln_runtime::testing::test_context;
use serde_json::Value;

/// Largest |kiln − reference| allowed on a logit (f32 on the GPU against float64).
const LOGIT_TOL: f32 = 1e-3;

fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-llama-reference-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/llama_reference.py");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .status()
            .expect("running python3");
        assert!(
            status.success(),
            "{} failed: python3 -m pip install numpy gguf",
            script.display()
        );
        dir
    })
}

fn expected(case: &str) -> Value {
    let text = std::fs::read_to_string(reference_dir().join(case).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
}

/// The largest |got − want| over a row, asserted within LOGIT_TOL.
fn check_row(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: vocabulary");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(worst <= LOGIT_TOL, "{what}: a logit is off by {worst}");
    worst
}

/// Loads `case` as `quant` and checks it against its reference.
fn check_case(case: &str, quant: Quant) {
    let Some(ctx) = test_context() else { return };
    let fx = expected(case);
    let dir = reference_dir().join(case);
    let model = if dir.join("model.gguf").exists() {
        let g = GgufFile::open(dir.join("model.gguf")).unwrap();
        Llama::load(ctx, &g, quant, |_, _| {}).unwrap()
    } else {
        Llama::load_hf(ctx, &dir, quant, |_, _| {}).unwrap()
    };
    let vocab = model.cfg.n_vocab;
    let prompt = ids(&fx["prompt"]);
    let what = format!("{case} as {quant}");

    let mut s = Session::new(ctx, &model, 1, 64, 16).unwrap();
    let rows: Vec<(usize, u32)> = prompt.iter().map(|&t| (0, t)).collect();
    let all: Vec<usize> = (0..rows.len()).collect();
    let out = s.step(ctx, &model, &rows, &all, Output::Logits).unwrap();
    let mut worst = 0f32;
    for (i, want) in fx["logits"].as_array().unwrap().iter().enumerate() {
        let got = &out.logits[i * vocab..][..vocab];
        worst = worst.max(check_row(
            &format!("{what} position {i}"),
            got,
            &floats(want),
        ));
    }

    // Greedy tokens from Kiln's own logits; a first difference only at a near tie.
    let want = ids(&fx["greedy"]);
    let gaps = floats(&fx["top2_gaps"]);
    let mut got = vec![argmax(&out.logits[(prompt.len() - 1) * vocab..][..vocab])];
    while got.len() < want.len() {
        let last = *got.last().unwrap();
        let step = s.step(ctx, &model, &[(0, last)], &[0], Output::Argmax);
        got.push(step.unwrap().tokens[0]);
    }
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        assert!(
            gaps[i] < 2.0 * LOGIT_TOL,
            "{what}: greedy token {i} is {} (reference {}, top-2 gap {})",
            got[i],
            want[i],
            gaps[i]
        );
        eprintln!(
            "{what}: greedy diverged at token {i}, a near tie ({})",
            gaps[i]
        );
    }

    // Every decode step's logits with the reference's tokens fed back.
    let mut t = Session::new(ctx, &model, 1, 64, 16).unwrap();
    t.step(ctx, &model, &rows, &[], Output::Logits).unwrap();
    for (i, step) in fx["step_logits"].as_array().unwrap().iter().enumerate() {
        let out = t.step(ctx, &model, &[(0, want[i])], &[0], Output::Logits);
        let got = out.unwrap().logits;
        worst = worst.max(check_row(&format!("{what} step {i}"), &got, &floats(step)));
    }
    eprintln!("{what}: largest logit error {worst}");
}

#[test]
fn every_gguf_type_in_one_file_matches_reference() {
    check_case("kquant_mix", Quant::None);
}

/// `--quant f32` converts every type on the host (the CPU dequantizers) before upload.
#[test]
fn every_gguf_type_converted_to_f32_matches_reference() {
    check_case("kquant_mix", Quant::F32);
}

#[test]
fn f16_file_with_tied_head_matches_reference() {
    check_case("f16", Quant::None);
}

#[test]
fn bf16_file_matches_reference() {
    check_case("bf16", Quant::None);
}

#[test]
fn qwen2_with_qkv_biases_matches_reference() {
    check_case("qwen2", Quant::None);
}

#[test]
fn qwen3_with_head_norms_matches_reference() {
    check_case("qwen3", Quant::None);
}

/// Llama 3's RoPE frequency scaling from the file's `rope_freqs.weight`.
#[test]
fn llama3_with_rope_scaling_matches_reference() {
    check_case("llama3", Quant::None);
}

/// Linear RoPE scaling from the metadata (`rope.scaling.type` linear, factor 4).
#[test]
fn linear_rope_scaling_matches_reference() {
    check_case("linear_rope", Quant::None);
}

#[test]
fn hf_llama3_bf16_in_shards_matches_reference() {
    check_case("hf_llama3_bf16_shards", Quant::None);
}

#[test]
fn hf_qwen2_f16_matches_reference() {
    check_case("hf_qwen2_f16", Quant::None);
}

#[test]
fn hf_qwen3_f32_in_shards_matches_reference() {
    check_case("hf_qwen3_f32", Quant::None);
}

/// Each family in F16 GGUF and in a bf16 Hugging Face folder, as well as in its K-quant mix.
#[test]
fn qwen_in_f16_gguf_and_bf16_folders_match_reference() {
    for case in ["qwen2_f16", "qwen3_f16", "hf_qwen2_bf16", "hf_qwen3_bf16"] {
        check_case(case, Quant::None);
    }
}

/// A copy of reference folder `case` to break.
fn copy_case(case: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(reference_dir().join(case)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

/// Broken Hugging Face folders are typed errors naming the file and what is wrong: a shard the
/// index lists but the folder lacks, a config whose sizes contradict the tensors, a bf16 tensor
/// whose bytes do not match its shape, an unsupported rope_scaling type.
#[test]
fn malformed_hf_folders_are_named_errors() {
    let Some(ctx) = test_context() else { return };
    let load = |dir: &Path| {
        Llama::load_hf(ctx, dir, Quant::None, |_, _| {})
            .err()
            .unwrap()
    };

    let missing = copy_case("hf_llama3_bf16_shards");
    std::fs::remove_file(missing.path().join("model-00002-of-00003.safetensors")).unwrap();
    let e = load(missing.path());
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
    assert!(
        e.to_string().contains("model-00002-of-00003.safetensors"),
        "{e}"
    );

    let contradicting = copy_case("hf_qwen2_f16");
    let config = contradicting.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    json["intermediate_size"] = 640.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let e = load(contradicting.path());
    assert!(
        matches!(&e, ModelError::TensorShape { tensor, .. } if tensor.contains("mlp")),
        "{e}"
    );

    // The first tensor of a bf16 shard claims two bytes fewer than its shape needs.
    let short = copy_case("hf_llama3_bf16_shards");
    let shard = short.path().join("model-00001-of-00003.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let first = header.as_object_mut().unwrap().values_mut().next().unwrap();
    let end = first["data_offsets"][1].as_u64().unwrap();
    first["data_offsets"][1] = (end - 2).into();
    let mut text = header.to_string().into_bytes();
    text.resize(n, b' ');
    let mut broken = bytes[..8].to_vec();
    broken.extend(text);
    broken.extend(&bytes[8 + n..]);
    std::fs::write(&shard, broken).unwrap();
    let e = load(short.path());
    assert!(
        e.to_string().contains("model-00001-of-00003.safetensors")
            && e.to_string().contains("not a valid safetensors file"),
        "{e}"
    );

    let yarn = copy_case("hf_qwen2_f16");
    let config = yarn.path().join("config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    std::fs::write(&config, json.to_string()).unwrap();
    let e = load(yarn.path());
    assert!(
        e.to_string().contains("yarn") && e.to_string().contains("config.json"),
        "{e}"
    );
}
