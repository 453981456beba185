//! The report's JSON carries the fields the README promises, and its markdown the tables, for
//! measurements made up here (the runner itself is exercised by `kiln-bench --quick` in CI).

use kiln_benches::models::{Batch, KvPoint, ModelResult, Prefill, StepProfile};
use kiln_benches::report::Report;
use kiln_benches::roofline::{Bandwidth, KernelResult, formats, synthetic_weights};
use kiln_benches::speculative::SpecResult;
use kiln_runtime::testing::test_context;
use kiln_runtime::{KernelTime, Profile};

fn report() -> Report {
    Report {
        quick: true,
        bandwidth: Bandwidth {
            copy_gbps: 4.0,
            read_gbps: 2.0,
            buffer_bytes: 1 << 25,
        },
        kernels: vec![KernelResult {
            kernel: "matvec q4_1".into(),
            shape: "SmolLM2-135M ffn_up 1536x576".into(),
            bytes: 1_000_000,
            flops: 2_000_000,
            seconds: 0.001,
            peak_alongside_gbps: Some(2.0),
        }],
        models: vec![ModelResult {
            name: "model.gguf".into(),
            weight_bytes: 96_000_000,
            prefill: vec![Prefill {
                tokens: 32,
                tokens_per_s: 5.0,
            }],
            decode_tokens_per_s: 2.0,
            decode_ahead_tokens_per_s: 2.5,
            decode_record_seconds: 0.004,
            decode_launches: 153,
            bytes_per_token: 100_000_000,
            batches: vec![Batch {
                batch: 4,
                tokens_per_s: 6.0,
                step_ms: 666.0,
            }],
            kv_curve: vec![KvPoint {
                length: 64,
                cached_tokens_per_s: 2.0,
                uncached_tokens_per_s: 0.1,
            }],
            decode_profile: Some(StepProfile {
                steps: 2,
                profile: Profile {
                    kernels: vec![
                        KernelTime::new("matvec:matvec", "BATCH=1,W_Q4_1=1", 60, 0.03),
                        KernelTime::new("norm:rms_norm", "default", 2, 0.002),
                        KernelTime::new("matvec:matvec", "BATCH=1,W_Q4_1=1,X_GLU=1", 60, 0.05),
                        KernelTime::new("matvec:matvec", "BATCH=1,W_Q8_0=1", 2, 0.01),
                    ],
                    unmeasured: 0,
                },
                wall_seconds: 1.2,
            }),
            prefill_profiles: vec![(
                32,
                StepProfile {
                    steps: 1,
                    profile: Profile {
                        kernels: vec![
                            KernelTime::new("matmul:matmul", "W_Q4_1=1,SPLIT_K=1", 90, 0.004),
                            KernelTime::new("matmul_reduce:matmul_reduce", "default", 90, 0.001),
                        ],
                        unmeasured: 0,
                    },
                    wall_seconds: 0.02,
                },
            )],
        }],
        peers: vec![],
        speculative: vec![SpecResult {
            prompt: "free text",
            mode: "ngram:3".into(),
            tokens_per_s: 30.0,
            plain_tokens_per_s: 20.0,
            drafted: 40,
            accepted: 30,
            tokens_per_step: 2.5,
        }],
    }
}

#[test]
fn json_and_markdown_hold_the_promised_fields() {
    let Some(ctx) = test_context() else { return };
    let r = report();
    let v = r.to_json(ctx);
    for key in ["name", "vendor", "device_type", "backend", "driver"] {
        assert!(v["adapter"][key].is_string(), "adapter.{key} in {v}");
    }
    assert_eq!(v["peak_bandwidth_gbps"], 4.0);
    let m = &v["models"][0];
    assert_eq!(m["prefill_tokens_per_s"], 5.0);
    assert_eq!(m["decode_tokens_per_s"], 2.0);
    assert_eq!(m["decode_ahead_tokens_per_s"], 2.5);
    assert_eq!(m["decode_launches"], 153);
    assert_eq!(m["bytes_per_token"], 100_000_000);
    // 100 MB per token at 2 tokens/s is 0.2 GB/s, 5% of the 4 GB/s peak.
    assert!((m["decode_fraction_of_peak_bandwidth"].as_f64().unwrap() - 0.05).abs() < 1e-12);
    assert!((v["kernels"][0]["gbps"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    // 1 GB/s against the peak copy's 2 GB/s over the same repetitions.
    let paired = v["kernels"][0]["fraction_of_peak_alongside"]
        .as_f64()
        .unwrap();
    assert!((paired - 0.5).abs() < 1e-12);
    assert!(v["limits"]["max_storage_buffer_binding_size"].is_u64());
    let md = r.to_markdown(ctx, "kiln-bench --quick");
    assert!(
        md.contains(
            "| matvec q4_1 | SmolLM2-135M ffn_up 1536x576 | 1000.0 | 1.00 | 25% | 50% | 2.00 |"
        ),
        "{md}"
    );
    assert!(md.contains("| 64 | 2.00 | 0.10 |"), "{md}");
    assert!(
        md.contains(
            "| decode (batch 1) run ahead, greedy steps chained on the GPU | 2.50 tokens/s |"
        ) && md.contains("| kernel launches per decode step | 153 |"),
        "{md}"
    );
    // Per step: the two q4_1 mat-vec variants summed (0.08 s over 2 steps, 40 of the 46 ms),
    // most time first, the other kernels apart.
    let p = &m["decode_profile"];
    assert_eq!(p["steps"], 2);
    assert!((p["gpu_seconds_per_step"].as_f64().unwrap() - 0.046).abs() < 1e-12);
    assert_eq!(p["kernels"][0]["weight_format"], "q4_1");
    assert_eq!(p["kernels"][0]["launches_per_step"], 60.0);
    assert!((p["wall_seconds_per_step"].as_f64().unwrap() - 0.6).abs() < 1e-12);
    assert!(
        md.contains("| matvec:matvec | q4_1 | 60 | 40000 | 667 | 87.0% |"),
        "{md}"
    );
    assert!(
        md.contains("| matvec:matvec | q8_0 | 1 | 5000 | 5000 | 10.9% |"),
        "{md}"
    );
    assert!(
        md.contains("| norm:rms_norm |  | 1 | 1000 | 1000 | 2.2% |"),
        "{md}"
    );
    let p = &m["prefill_profiles"][0];
    assert_eq!(p["tokens"], 32);
    assert!((p["gpu_seconds"].as_f64().unwrap() - 0.005).abs() < 1e-12);
    assert_eq!(p["kernels"][0]["weight_format"], "q4_1");
    assert!(md.contains("### Prefill of 32 tokens by kernel"), "{md}");
    assert!(
        md.contains("| matmul:matmul | q4_1 | 90 | 4000 | 44 | 80.0% |"),
        "{md}"
    );
    // Speculation: 30 against 20 tokens/s, 30 of 40 drafts kept.
    let spec = &v["speculative"][0];
    assert_eq!(spec["speedup"], 1.5);
    assert_eq!(spec["acceptance_rate"], 0.75);
    assert!(
        md.contains("| free text | ngram:3 | 30.00 | 20.00 | 1.50× | 30 of 40 (75%) | 2.50 |"),
        "{md}"
    );
    // 600 ms a step profiled against 500 ms unprofiled (2 tokens/s): 100 ms over 62 launches.
    assert!(
        md.contains("took 600.00 ms of wall time against 500.00 ms unprofiled, 1613 µs more"),
        "{md}"
    );
}

/// The synthetic weights the benchmarks time are valid in every format at every benchmark shape.
#[test]
fn synthetic_weights_are_valid() {
    for (name, format) in formats() {
        for (n, k) in [(1536, 576), (3072, 768), (5, 64), (7, 512)] {
            // K-quant rows hold whole 256-value super-blocks.
            if format.check_k(k).is_err() {
                continue;
            }
            let w = synthetic_weights(format, n, k).unwrap_or_else(|e| panic!("{name}: {e}"));
            w.validate().unwrap();
            assert!(w.dequantize().iter().all(|v| v.is_finite()), "{name}");
        }
    }
}

/// llama-bench's JSON (the fields the runner reads, as llama.cpp writes them) becomes a peer row.
#[test]
fn llama_bench_json_is_read() {
    let json = r#"[
      {"build_commit": "0c1e570", "backends": "Vulkan", "gpu_info": "llvmpipe", "n_prompt": 32,
       "n_gen": 0, "avg_ts": 20.5, "stddev_ts": 1.0},
      {"build_commit": "0c1e570", "backends": "Vulkan", "gpu_info": "llvmpipe", "n_prompt": 0,
       "n_gen": 8, "avg_ts": 3.25, "stddev_ts": 0.1}
    ]"#;
    let p = kiln_benches::peer::parse(json).unwrap();
    assert_eq!(p.name, "llama.cpp 0c1e570 (Vulkan)");
    assert_eq!((p.prompt_tokens, p.gen_tokens), (32, 8));
    assert_eq!(
        (p.prefill_tokens_per_s, p.decode_tokens_per_s),
        (20.5, 3.25)
    );
    assert!(kiln_benches::peer::parse("[]").is_err());
    assert!(kiln_benches::peer::parse("not json").is_err());
}
