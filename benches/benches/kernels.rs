//! Criterion microbenchmarks of every kernel family a decode or prefill step spends its time in
//! (mat-vec per weight format and layout, stacked projections in one launch against apart,
//! matmul, norms, softmax, argmax, RoPE, attention, the elementwise ops, embedding gathers, KV
//! stores, outlier columns, and the stream ceiling) at the shapes of SmolLM2-135M, GPT-2 124M and
//! a 1B-class Llama layer (Llama 3.2 1B: width 2048, FFN 8192, 32 heads, 8 KV heads).
//!
//!     cargo bench -p kiln-benches --bench kernels [-- FILTER]
//!
//! Each measurement records the launches into submits of up to 256 launches, each between two GPU
//! timestamps where the device grants them, otherwise timed by the wall clock of submit + wait
//! (printed at the start). Throughput is bytes (weights, activations and KV read, results written
//! once) or, for the prefill matmul, elements = floating-point operations (criterion's elem/s is
//! then FLOP/s).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_benches::roofline::{
    GPT2_FC, LLAMA_1B_FFN_UP, MatrixShape, SMOLLM2_FFN_DOWN, SMOLLM2_FFN_UP, formats,
    synthetic_weights,
};
use kiln_kernels::attention::{
    AttnShape, KvCache, KvFormat, attention, kv_store, kv_store_rope, scratch_len,
};
use kiln_kernels::linear::{Input, Kernel, Layout, Output, Store, linear, linear_by};
use kiln_kernels::rope::{Rope, RopeLayout, rope};
use kiln_kernels::{
    DevicePlan, HostWeights, KernelError, WeightFormat, Weights, argmax, elementwise, embedding,
    norm, probe, softmax, stream,
};
use kiln_runtime::{Context, DType, Recorder, Stopwatch, Tensor};

/// Launches per submit at most, so a fast kernel's many iterations do not make one huge command buffer.
const PER_SUBMIT: u64 = 256;

struct Bench {
    ctx: Context,
    watch: Stopwatch,
}

impl Bench {
    fn new() -> Self {
        let ctx = Context::from_env().expect("a GPU adapter (see KILN_BACKEND / KILN_ADAPTER)");
        let watch = ctx.stopwatch().expect("stopwatch");
        eprintln!("kernels on {} (clock: {})", ctx.describe(), watch.clock());
        Self { ctx, watch }
    }

    /// Total time of `iters` launches of `launch`.
    fn time(
        &self,
        iters: u64,
        launch: &mut dyn FnMut(&mut Recorder<'_>) -> Result<(), KernelError>,
    ) -> Duration {
        // Warm-up outside the measurement: pipelines compile on first use.
        self.watch
            .measure(&self.ctx, |rec| launch(rec))
            .expect("launch");
        let mut total = 0.0;
        let mut left = iters;
        while left > 0 {
            let n = left.min(PER_SUBMIT);
            total += self
                .watch
                .measure(&self.ctx, |rec| {
                    for _ in 0..n {
                        launch(rec)?;
                    }
                    Ok::<(), KernelError>(())
                })
                .expect("launch");
            left -= n;
        }
        Duration::from_secs_f64(total)
    }

    fn ramp(&self, n: usize) -> Tensor {
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        self.ctx.upload_f32(&v, &[n]).unwrap()
    }

    fn zeros(&self, n: usize) -> Tensor {
        self.ctx.zeros(DType::F32, &[n]).unwrap()
    }
}

fn matrices(c: &mut Criterion, b: &Bench) {
    let shapes: [MatrixShape; 3] = [SMOLLM2_FFN_UP, GPT2_FC, LLAMA_1B_FFN_UP];
    let mut g = c.benchmark_group("matvec");
    for (label, n, k) in shapes {
        let (x, y) = (b.ramp(k), b.zeros(n));
        // K-quants' 256-value blocks do not fit SmolLM2's rows of 576: those run at the others.
        for (name, format) in formats().into_iter().filter(|f| f.1.check_k(k).is_ok()) {
            let w = Weights::upload(&b.ctx, &synthetic_weights(format, n, k).unwrap()).unwrap();
            g.throughput(Throughput::Bytes(w.size_bytes() + 4 * (n + k) as u64));
            // Every layout side by side; the models use the device plan's (DevicePlan::matvec).
            for layout in Layout::ALL {
                if !layout.supported(&b.ctx) {
                    continue;
                }
                g.bench_function(
                    BenchmarkId::new(format!("{name} {layout:?}"), format!("{label} {n}x{k}")),
                    |bench| {
                        bench.iter_custom(|iters| {
                            b.time(iters, &mut |rec| {
                                let out = Output::write(&y);
                                linear_by(rec, Input::Rows(&x), &w, out, matvec_in(layout))
                            })
                        })
                    },
                );
            }
        }
    }
    g.finish();

    // Projections of one input stacked into one launch (the models' q|k|v and gate|up) against
    // the same matrices launched apart, in the device's layout.
    let mut g = c.benchmark_group("stacked");
    let layout = DevicePlan::of(&b.ctx).matvec;
    for (label, widths) in [
        ("SmolLM2 q|k|v", vec![576usize, 192, 192]),
        ("SmolLM2 gate|up", vec![1536, 1536]),
    ] {
        let k = 576;
        let x = b.ramp(k);
        let ys: Vec<Tensor> = widths.iter().map(|&n| b.zeros(n)).collect();
        let ys: Vec<&Tensor> = ys.iter().collect();
        for (name, format) in [("q8_0", WeightFormat::Q8_0), ("q4_1", WeightFormat::Q4_1)] {
            let parts: Vec<_> = widths
                .iter()
                .map(|&n| synthetic_weights(format, n, k).unwrap())
                .collect();
            let stacked = HostWeights::stack(&parts).unwrap();
            let w = Weights::upload(&b.ctx, &stacked).unwrap();
            let apart: Vec<Weights> = parts
                .iter()
                .map(|h| Weights::upload(&b.ctx, h).unwrap())
                .collect();
            let n = stacked.n;
            g.throughput(Throughput::Bytes(w.size_bytes() + 4 * (n + k) as u64));
            let id =
                |how: &str| BenchmarkId::new(format!("{name} {how}"), format!("{label} {n}x{k}"));
            g.bench_function(id("stacked"), |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| {
                        let out = Output::split(&ys, Store::Write);
                        linear_by(rec, Input::Rows(&x), &w, out, matvec_in(layout))
                    })
                })
            });
            g.bench_function(id("apart"), |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| {
                        for (w, y) in apart.iter().zip(&ys) {
                            let out = Output::write(y);
                            linear_by(rec, Input::Rows(&x), w, out, matvec_in(layout))?;
                        }
                        Ok(())
                    })
                })
            });
        }
    }
    g.finish();

    // Batched decode: several sequences' rows through one pass over the weights in the plan's
    // layout (elem/s is FLOP/s); a server's step at 1, 4, 8 and 16 running sequences.
    let mut g = c.benchmark_group("decode_rows");
    for (label, n, k) in [SMOLLM2_FFN_UP, SMOLLM2_FFN_DOWN] {
        for (name, format) in [("q4_1", WeightFormat::Q4_1), ("q8_0", WeightFormat::Q8_0)] {
            let w = Weights::upload(&b.ctx, &synthetic_weights(format, n, k).unwrap()).unwrap();
            for m in [1usize, 4, 8, 16] {
                let (x, y) = (b.ramp(m * k), b.zeros(m * n));
                g.throughput(Throughput::Elements((2 * m * n * k) as u64));
                g.bench_function(
                    BenchmarkId::new(name, format!("{label} {m}x{n}x{k}")),
                    |bench| {
                        bench.iter_custom(|iters| {
                            b.time(iters, &mut |rec| {
                                let out = Output::write(&y);
                                linear_by(rec, Input::Rows(&x), &w, out, matvec_in(layout))
                            })
                        })
                    },
                );
            }
        }
    }
    g.finish();

    // The plan's matmul, and K forced unsplit and in 8, at a short and a long prompt.
    let mut g = c.benchmark_group("matmul");
    for (m, (label, n, k)) in [32, 128].into_iter().flat_map(|m| shapes.map(|s| (m, s))) {
        let x = b.ctx.upload_f32(&vec![0.5; m * k], &[m, k]).unwrap();
        let y = b.ctx.zeros(DType::F32, &[m, n]).unwrap();
        for (name, format) in formats()
            .into_iter()
            .filter(|f| ["f32", "f16", "q4_1", "int8-channel"].contains(&f.0))
        {
            let w = Weights::upload(&b.ctx, &synthetic_weights(format, n, k).unwrap()).unwrap();
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            for (how, kernel) in [
                ("", Kernel::Matmul),
                (" unsplit", Kernel::MatmulSplitK(1)),
                (" K in 8", Kernel::MatmulSplitK(8)),
            ] {
                g.bench_function(
                    BenchmarkId::new(format!("{name}{how}"), format!("{label} {m}x{n}x{k}")),
                    |bench| {
                        bench.iter_custom(|iters| {
                            b.time(iters, &mut |rec| {
                                let out = Output::write(&y);
                                linear_by(rec, Input::Rows(&x), &w, out, kernel)
                            })
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

fn rows(c: &mut Criterion, b: &Bench) {
    let rows = 128;
    let mut g = c.benchmark_group("norm");
    for (label, d) in [("SmolLM2", 576), ("GPT-2", 768), ("Llama-1B", 2048)] {
        let (x, gamma, beta, y) = (b.ramp(rows * d), b.ramp(d), b.ramp(d), b.zeros(rows * d));
        g.throughput(Throughput::Bytes((2 * rows * d * 4) as u64));
        g.bench_function(
            BenchmarkId::new("rms_norm", format!("{label} {rows}x{d}")),
            |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| norm::rms_norm(rec, &x, &gamma, &y, 1e-5))
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("layer_norm", format!("{label} {rows}x{d}")),
            |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| {
                        norm::layer_norm(rec, &x, &gamma, &beta, &y, 1e-5)
                    })
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("vocab");
    for (label, vocab) in [("SmolLM2", 49152), ("GPT-2", 50257), ("Llama-1B", 128256)] {
        let (x, y) = (b.ramp(vocab), b.zeros(vocab));
        let best = b.ctx.zeros(DType::U32, &[1]).unwrap();
        g.throughput(Throughput::Bytes((2 * vocab * 4) as u64));
        g.bench_function(
            BenchmarkId::new("softmax", format!("{label} {vocab}")),
            |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| {
                        softmax::softmax(rec, &x, &y, vocab, 1.0, None)
                    })
                })
            },
        );
        g.throughput(Throughput::Bytes((vocab * 4) as u64));
        for scan in [argmax::Scan::Scalar, argmax::Scan::Wide] {
            g.bench_function(
                BenchmarkId::new(format!("argmax {scan:?}"), format!("{label} {vocab}")),
                |bench| {
                    bench.iter_custom(|iters| {
                        b.time(iters, &mut |rec| {
                            argmax::argmax_with(rec, &x, vocab, &best, scan)
                        })
                    })
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("rope");
    for (label, heads, head_dim) in [("SmolLM2", 9, 64), ("Llama-1B", 32, 64)] {
        let t = 128;
        let x = b.ramp(t * heads * head_dim);
        let pos = b
            .ctx
            .upload(&(0..t as u32).collect::<Vec<_>>(), DType::U32, &[t])
            .unwrap();
        let cfg = Rope {
            heads,
            head_dim,
            rot_dims: head_dim,
            base: 10000.0,
            layout: RopeLayout::HalfSplit,
            factors: None,
        };
        g.throughput(Throughput::Bytes((2 * t * heads * head_dim * 4) as u64));
        g.bench_function(
            BenchmarkId::new("rope", format!("{label} {t}x{heads}x{head_dim}")),
            |bench| bench.iter_custom(|iters| b.time(iters, &mut |rec| rope(rec, &x, &pos, &cfg))),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("stream");
    let n = 8 << 20;
    let (x, y) = (b.zeros(n), b.zeros(n));
    let partial = b.zeros(stream::read_partials(n));
    g.throughput(Throughput::Bytes(8 * n as u64));
    g.bench_function("copy 32 MiB", |bench| {
        bench.iter_custom(|iters| b.time(iters, &mut |rec| stream::copy(rec, &x, &y)))
    });
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.bench_function("read 32 MiB", |bench| {
        bench.iter_custom(|iters| b.time(iters, &mut |rec| stream::read(rec, &x, &partial)))
    });
    g.finish();
}

fn attention_benches(c: &mut Criterion, b: &Bench) {
    let mut g = c.benchmark_group("attention");
    for (label, heads, kv_heads, head_dim) in [
        ("SmolLM2", 9, 3, 64),
        ("GPT-2", 12, 12, 64),
        ("Llama-1B", 32, 8, 64),
    ] {
        for (kind, rows, keys) in [
            ("decode", 1, 128),
            ("decode", 1, 512),
            ("decode", 1, 2048),
            ("prefill", 128, 128),
        ] {
            let shape = AttnShape {
                heads,
                kv_heads,
                head_dim,
                capacity: keys,
                n_seq: 1,
            };
            for format in [KvFormat::F32, KvFormat::F16] {
                let cache = KvCache::new(&b.ctx, &shape, format).unwrap();
                let q = b.ramp(rows * heads * head_dim);
                let out = b.zeros(rows * heads * head_dim);
                // Decode reads every key; prefill row r is causal over keys 0..=keys-rows+r.
                let meta: Vec<u32> = (0..rows)
                    .flat_map(|r| [0, (keys - rows + r + 1) as u32])
                    .collect();
                let meta = b.ctx.upload(&meta, DType::U32, &[2 * rows]).unwrap();
                let scratch = b.zeros(scratch_len(&shape, rows, keys, None).max(1));
                let scale = 1.0 / (head_dim as f32).sqrt();
                g.throughput(Throughput::Bytes(
                    cache.size_bytes() + 8 * (rows * heads * head_dim) as u64,
                ));
                let id = BenchmarkId::new(
                    format!("{kind} KV {format}"),
                    format!("{label} {rows}x{keys} keys"),
                );
                g.bench_function(id, |bench| {
                    bench.iter_custom(|iters| {
                        b.time(iters, &mut |rec| {
                            attention(
                                rec, &shape, &q, &meta, keys, &cache, &out, &scratch, scale, None,
                            )
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

/// The small launches of a step: activations, embedding gathers, KV stores and outlier columns.
fn glue(c: &mut Criterion, b: &Bench) {
    let mut g = c.benchmark_group("elementwise");
    for (label, rows, d) in [
        ("SmolLM2 ffn", 1, 1536),
        ("SmolLM2 ffn", 128, 1536),
        ("GPT-2 mlp", 128, 3072),
    ] {
        let (x, u, y) = (b.ramp(rows * d), b.ramp(rows * d), b.zeros(rows * d));
        let shape = format!("{label} {rows}x{d}");
        g.throughput(Throughput::Bytes((3 * rows * d * 4) as u64));
        g.bench_function(BenchmarkId::new("swiglu", &shape), |bench| {
            bench
                .iter_custom(|iters| b.time(iters, &mut |rec| elementwise::swiglu(rec, &x, &u, &y)))
        });
        g.bench_function(BenchmarkId::new("add", &shape), |bench| {
            bench.iter_custom(|iters| b.time(iters, &mut |rec| elementwise::add(rec, &x, &u, &y)))
        });
        g.throughput(Throughput::Bytes((2 * rows * d * 4) as u64));
        g.bench_function(BenchmarkId::new("gelu", &shape), |bench| {
            bench.iter_custom(|iters| b.time(iters, &mut |rec| elementwise::gelu(rec, &x, &y)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("embedding");
    for (label, format, vocab, d) in [
        ("SmolLM2 q8_0", WeightFormat::Q8_0, 49152, 576),
        ("GPT-2 f32", WeightFormat::F32, 50257, 768),
    ] {
        let table = Weights::upload(&b.ctx, &synthetic_weights(format, vocab, d).unwrap()).unwrap();
        for t in [1usize, 128] {
            let ids: Vec<u32> = (0..t as u32).map(|i| i * 7919 % vocab as u32).collect();
            let ids = b.ctx.upload(&ids, DType::U32, &[t]).unwrap();
            let out = b.zeros(t * d);
            // Each gathered row is read once and written once as f32.
            let row_bytes = table.size_bytes() / vocab as u64;
            g.throughput(Throughput::Bytes(t as u64 * (row_bytes + 4 * d as u64)));
            g.bench_function(
                BenchmarkId::new("gather", format!("{label} {t} ids")),
                |bench| {
                    bench.iter_custom(|iters| {
                        b.time(iters, &mut |rec| {
                            embedding::embedding(rec, &ids, &table, &out)
                        })
                    })
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("kv_store");
    for (label, kv_heads, head_dim) in [("SmolLM2", 3, 64), ("Llama-1B", 8, 64)] {
        let shape = AttnShape {
            heads: 3 * kv_heads,
            kv_heads,
            head_dim,
            capacity: 512,
            n_seq: 1,
        };
        for format in [KvFormat::F32, KvFormat::F16, KvFormat::Int8] {
            let cache = KvCache::new(&b.ctx, &shape, format).unwrap();
            for t in [1usize, 128] {
                let row = kv_heads * head_dim;
                let (k_new, v_new) = (b.ramp(t * row), b.ramp(t * row));
                let slots: Vec<u32> = (0..t as u32).flat_map(|p| [0, p]).collect();
                let slots = b.ctx.upload(&slots, DType::U32, &[2 * t]).unwrap();
                // f32 rows read; the cache's own bytes for those rows written.
                let written = cache.size_bytes() * t as u64 / shape.capacity as u64;
                g.throughput(Throughput::Bytes(8 * (t * row) as u64 + written));
                g.bench_function(
                    BenchmarkId::new(format!("KV {format}"), format!("{label} {t} rows")),
                    |bench| {
                        bench.iter_custom(|iters| {
                            b.time(iters, &mut |rec| {
                                kv_store(rec, &shape, &k_new, &v_new, &slots, &cache)
                            })
                        })
                    },
                );
                // With the layer's RoPE folded in (keys as stored, queries in place), as Llama
                // runs it: the same bytes plus the queries read and written.
                let q = b.ramp(t * shape.heads * head_dim);
                let rope = Rope {
                    heads: shape.heads,
                    head_dim,
                    rot_dims: head_dim,
                    base: 10000.0,
                    layout: RopeLayout::Interleaved,
                    factors: None,
                };
                g.throughput(Throughput::Bytes(
                    8 * (t * row + t * shape.heads * head_dim) as u64 + written,
                ));
                g.bench_function(
                    BenchmarkId::new(format!("KV {format} + RoPE"), format!("{label} {t} rows")),
                    |bench| {
                        bench.iter_custom(|iters| {
                            b.time(iters, &mut |rec| {
                                let qk = (&q, &k_new);
                                kv_store_rope(rec, &shape, qk, &v_new, &slots, &cache, &rope)
                            })
                        })
                    },
                );
            }
        }
    }
    g.finish();

    let mut g = c.benchmark_group("outliers");
    let (n, k, cols) = (1536usize, 576usize, [3u32, 77, 200, 401, 575]);
    let values: Vec<f32> = (0..n * cols.len()).map(|i| (i % 13) as f32 - 6.0).collect();
    let w = Weights::upload(
        &b.ctx,
        &synthetic_weights(
            WeightFormat::Int8 {
                group: k,
                zero_point: false,
            },
            n,
            k,
        )
        .unwrap(),
    )
    .unwrap()
    .with_outliers(&b.ctx, &cols, &values)
    .unwrap();
    for rows in [1usize, 128] {
        let (x, y, probe) = (b.ramp(rows * k), b.zeros(rows * n), b.zeros(k));
        g.throughput(Throughput::Bytes((rows * k * 4 + k * 4) as u64));
        g.bench_function(
            BenchmarkId::new("column_absmax", format!("SmolLM2 {rows}x{k}")),
            |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| probe::column_absmax(rec, &x, k, &probe))
                })
            },
        );
        // The whole int8 mat-vec with 5 outlier columns added back, against the plain one above.
        g.throughput(Throughput::Bytes(
            w.size_bytes() + 4 * (rows * (n + k)) as u64,
        ));
        g.bench_function(
            BenchmarkId::new(
                "int8 matvec + 5 columns",
                format!("SmolLM2 ffn_up {rows}x{n}x{k}"),
            ),
            |bench| {
                bench.iter_custom(|iters| {
                    b.time(iters, &mut |rec| {
                        linear(rec, Input::Rows(&x), &w, Output::write(&y))
                    })
                })
            },
        );
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    let b = Bench::new();
    matrices(c, &b);
    rows(c, &b);
    attention_benches(c, &b);
    glue(c, &b);
}

criterion_group! {
    name = kernels;
    // Few, short samples: a software adapter takes milliseconds per launch.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = all
}
criterion_main!(kernels);

/// The mat-vec in `layout` (norms are not folded: these inputs are plain rows).
fn matvec_in(layout: Layout) -> Kernel {
    Kernel::Matvec {
        layout,
        fold_norm: false,
    }
}
