//! Row kernels (norms, softmax, argmax), elementwise ops and embedding gathers against their CPU
//! references on ragged sizes. Tolerances are stated per test.

mod common;

use common::*;
use kiln_kernels::argmax::{Scan, argmax, argmax_ref, argmax_with};
use kiln_kernels::elementwise::{self, gelu_ref, silu_ref};
use kiln_kernels::embedding::{embedding, embedding_ref};
use kiln_kernels::norm::{layer_norm, layer_norm_ref, rms_norm, rms_norm_in_place, rms_norm_ref};
use kiln_kernels::softmax::{Causal, softmax, softmax_ref};
use kiln_kernels::{WeightFormat, Weights};
use kiln_runtime::DType;

/// Norms: |gpu − ref| ≤ 1e-5 + 1e-4 · |ref| (f32 statistics over up to 3072 values). Rows by
/// turns: an offset mean of 30 (layer norm's variance must be taken around the mean), zero mean
/// (RMS and standard deviation agree), and values near 1e-4, where eps = 1e-5 outweighs the mean
/// square (a norm that drops eps is off by ~30×).
#[test]
fn rms_and_layer_norm_match_reference() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(1);
    for (rows, d) in [(1, 1), (3, 7), (2, 256), (5, 257), (4, 576), (3, 3072)] {
        let mut x = rand_vec(&mut rng, rows * d, -2.0, 2.0);
        for (r, row) in x.chunks_mut(d).enumerate() {
            let mean = row.iter().sum::<f32>() / d as f32;
            for v in row.iter_mut() {
                *v = match r % 3 {
                    0 => *v + 30.0,
                    1 => *v - mean,
                    _ => *v * 1e-4,
                };
            }
        }
        let g = rand_vec(&mut rng, d, 0.5, 1.5);
        let b = rand_vec(&mut rng, d, -0.5, 0.5);
        let (xt, gt, bt) = (
            ctx.upload_f32(&x, &[rows, d]).unwrap(),
            ctx.upload_f32(&g, &[d]).unwrap(),
            ctx.upload_f32(&b, &[d]).unwrap(),
        );
        let (y1, y2) = (
            ctx.zeros(DType::F32, &[rows, d]).unwrap(),
            ctx.zeros(DType::F32, &[rows, d]).unwrap(),
        );
        let y3 = ctx.upload_f32(&x, &[rows, d]).unwrap();
        let mut rec = ctx.recorder();
        rms_norm(&mut rec, &xt, &gt, &y1, 1e-5).unwrap();
        layer_norm(&mut rec, &xt, &gt, &bt, &y2, 1e-5).unwrap();
        rms_norm_in_place(&mut rec, &y3, &gt, 1e-5).unwrap();
        rec.submit().unwrap();
        assert_eq!(
            ctx.read::<f32>(&y3).unwrap(),
            ctx.read::<f32>(&y1).unwrap(),
            "rms_norm in place {rows}x{d}"
        );
        assert_close(
            &format!("rms_norm {rows}x{d}"),
            &ctx.read(&y1).unwrap(),
            &rms_norm_ref(&x, &g, 1e-5),
            1e-5,
            1e-4,
        );
        assert_close(
            &format!("layer_norm {rows}x{d}"),
            &ctx.read(&y2).unwrap(),
            &layer_norm_ref(&x, &g, &b, 1e-5),
            1e-4,
            1e-4,
        );
    }
}

/// Softmax: |gpu − ref| ≤ 1e-6 + 1e-4 · |ref|; masked entries exactly 0.
#[test]
fn softmax_matches_reference_with_and_without_causal_mask() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(2);
    for (rows, len) in [
        (1, 1),
        (3, 2),
        (2, 255),
        (4, 256),
        (3, 257),
        (5, 1000),
        (2, 5003),
    ] {
        // Large logits check stability: exp would overflow without subtracting the max.
        let x = rand_vec(&mut rng, rows * len, -60.0, 60.0);
        for (scale, causal) in [
            (1.0, None),
            (0.125, Some(Causal { offset: 0 })),
            (1.0, Some(Causal { offset: len / 2 })),
        ] {
            let xt = ctx.upload_f32(&x, &[rows, len]).unwrap();
            let yt = ctx.zeros(DType::F32, &[rows, len]).unwrap();
            let mut rec = ctx.recorder();
            softmax(&mut rec, &xt, &yt, len, scale, causal).unwrap();
            rec.submit().unwrap();
            let want = softmax_ref(&x, len, scale, causal);
            assert_close(
                &format!("softmax {rows}x{len} {causal:?}"),
                &ctx.read(&yt).unwrap(),
                &want,
                1e-6,
                1e-4,
            );
        }
    }
}

/// Elementwise: |gpu − ref| ≤ 1e-6 + 1e-5 · |ref| (GELU 2e-6 + 1e-5: tanh on GPUs is not exact).
#[test]
fn elementwise_ops_match_reference() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(3);
    for n in [1, 255, 256, 257, 4099, 100_003] {
        let a = rand_vec(&mut rng, n, -12.0, 12.0);
        let b = rand_vec(&mut rng, n, -3.0, 3.0);
        let (at, bt) = (
            ctx.upload_f32(&a, &[n]).unwrap(),
            ctx.upload_f32(&b, &[n]).unwrap(),
        );
        let outs: Vec<_> = (0..5)
            .map(|_| ctx.zeros(DType::F32, &[n]).unwrap())
            .collect();
        ctx.write(&outs[4], &b).unwrap();
        let mut rec = ctx.recorder();
        elementwise::gelu(&mut rec, &at, &outs[0]).unwrap();
        elementwise::silu(&mut rec, &at, &outs[1]).unwrap();
        elementwise::swiglu(&mut rec, &at, &bt, &outs[2]).unwrap();
        elementwise::add(&mut rec, &at, &bt, &outs[3]).unwrap();
        elementwise::accumulate(&mut rec, &outs[4], &at).unwrap();
        rec.submit().unwrap();
        let read = |i: usize| ctx.read::<f32>(&outs[i]).unwrap();
        assert_close(
            &format!("gelu {n}"),
            &read(0),
            &a.iter().map(|&v| gelu_ref(v)).collect::<Vec<_>>(),
            2e-6,
            1e-5,
        );
        assert_close(
            &format!("silu {n}"),
            &read(1),
            &a.iter().map(|&v| silu_ref(v)).collect::<Vec<_>>(),
            1e-6,
            1e-5,
        );
        let swiglu: Vec<f32> = a.iter().zip(&b).map(|(&g, &u)| silu_ref(g) * u).collect();
        assert_close(&format!("swiglu {n}"), &read(2), &swiglu, 1e-6, 1e-5);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_close(&format!("add {n}"), &read(3), &sum, 0.0, 0.0);
        assert_close(&format!("accumulate {n}"), &read(4), &sum, 0.0, 0.0);
    }
}

/// GELU saturates to x and 0 at large |x| without NaN.
#[test]
fn gelu_is_finite_at_extremes() {
    let Some(ctx) = test_context() else { return };
    let a = vec![-1e4f32, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4];
    let at = ctx.upload_f32(&a, &[a.len()]).unwrap();
    let yt = ctx.zeros(DType::F32, &[a.len()]).unwrap();
    let mut rec = ctx.recorder();
    elementwise::gelu(&mut rec, &at, &yt).unwrap();
    rec.submit().unwrap();
    assert_close(
        "gelu extremes",
        &ctx.read(&yt).unwrap(),
        &a.iter().map(|&v| gelu_ref(v)).collect::<Vec<_>>(),
        1e-6,
        1e-6,
    );
}

/// Argmax, both scans: exact, first index on ties (also between the two loads of one wide
/// iteration, and inside one vec4), NaN never wins, over vocab-sized rows; lengths that are and
/// are not multiples of 4 and of the 1024-thread stride; 70,000 rows check grid folding.
#[test]
fn argmax_matches_reference() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(4);
    for (rows, len) in [
        (1, 1),
        (3, 7),
        (2, 257),
        (2, 4),
        (1, 4096),
        (3, 8196),
        (4, 49152),
        (1, 50257),
        (70_000, 3),
        (5_000, 8),
    ] {
        let mut x = rand_vec(&mut rng, rows * len, -5.0, 5.0);
        for row in x.chunks_mut(len) {
            if len > 10 {
                // Ties between maxima: the lower index must win.
                row[len / 3] = 9.0;
                row[len / 2] = 9.0;
                row[len - 1] = 9.0;
                row[1] = f32::NAN;
            }
            if len == 8196 {
                // Two loads of one wide iteration (quads j and j + 1024), and one vec4.
                row[4 * 5 + 2] = 11.0;
                row[4 * (5 + 1024)] = 11.0;
                row[4 * 5 + 3] = 11.0;
            }
        }
        let xt = ctx.upload_f32(&x, &[rows, len]).unwrap();
        for scan in [Scan::Scalar, Scan::Wide] {
            let out = ctx.zeros(DType::U32, &[rows]).unwrap();
            let mut rec = ctx.recorder();
            argmax_with(&mut rec, &xt, len, &out, scan).unwrap();
            rec.submit().unwrap();
            assert_eq!(
                ctx.read::<u32>(&out).unwrap(),
                argmax_ref(&x, len),
                "argmax {scan:?} {rows}x{len}"
            );
        }
    }
}

/// Embedding gather: every format; |gpu − ref| ≤ 1e-6 · |ref| (an FMA may round differently);
/// out-of-range ids give zero rows; 70,000 tokens check grid folding; a table stored in row parts
/// (as one over the binding limit is) gathers the same rows.
#[test]
fn embedding_gathers_every_format() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(5);
    for (vocab, k, t) in [
        (1, 1, 1),
        (11, 7, 5),
        (50, 64, 9),
        (300, 576, 33),
        (20, 512, 7),
        (40, 8, 70_000),
    ] {
        for format in formats_for(k) {
            let table = random_weights(&mut rng, format, vocab, k);
            let mut ids: Vec<u32> = (0..t).map(|i| ((i * 7919) % vocab) as u32).collect();
            ids[t / 2] = vocab as u32 + 3; // out of range
            let part_rows = vocab.div_ceil(3);
            let row_bytes = format.device_row_bytes(k) as u64;
            for w in [
                Weights::upload(ctx, &table).unwrap(),
                Weights::upload_in_parts(ctx, &table, part_rows as u64 * row_bytes).unwrap(),
            ] {
                let it = ctx.upload(&ids, DType::U32, &[t]).unwrap();
                let out = ctx.upload_f32(&vec![f32::NAN; t * k], &[t, k]).unwrap();
                let mut rec = ctx.recorder();
                embedding(&mut rec, &it, &w, &out).unwrap();
                rec.submit().unwrap();
                assert_close(
                    &format!("embedding {format:?} {vocab}x{k} t{t} parts of {part_rows}"),
                    &ctx.read(&out).unwrap(),
                    &embedding_ref(&ids, &table),
                    0.0,
                    1e-6,
                );
            }
        }
    }
}

/// A binding over max_storage_buffer_binding_size is a typed error naming the limit (checked where
/// the limit is small enough to allocate past it, as on lavapipe's 128 MiB).
#[test]
fn oversized_binding_names_the_limit() {
    if test_context().is_none() {
        return;
    }
    // A device asked for a 1 MiB binding limit, which every adapter can give.
    let mut options = kiln_runtime::DeviceOptions::from_env().unwrap();
    options.max_storage_binding = Some(1 << 20);
    let ctx = &kiln_runtime::Context::new(&options).unwrap();
    let max = ctx.limits.max_storage_buffer_binding_size;
    assert_eq!(max, 1 << 20);
    let len = (max / 4 + 1) as usize;
    let x = ctx.zeros(DType::F32, &[len]).unwrap();
    let out = ctx.zeros(DType::U32, &[1]).unwrap();
    let mut rec = ctx.recorder();
    match argmax(&mut rec, &x, len, &out) {
        Err(kiln_kernels::KernelError::Runtime(kiln_runtime::RuntimeError::LimitExceeded {
            limit,
            requested,
            ..
        })) => {
            assert_eq!(limit, "max_storage_buffer_binding_size");
            assert!(requested > max);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

/// Blocks kept whole grow on the device (a Q6_K block of 210 bytes takes 212): a table whose
/// GGUF bytes would fill the binding limit is cut into parts by the padded size, and gathers
/// within it. 5000 rows of one Q6_K block are 1,050,000 GGUF bytes against a 1 MiB limit.
#[test]
fn padded_blocks_part_within_the_binding_limit() {
    if test_context().is_none() {
        return;
    }
    let mut options = kiln_runtime::DeviceOptions::from_env().unwrap();
    options.max_storage_binding = Some(1 << 20);
    let ctx = &kiln_runtime::Context::new(&options).unwrap();
    let (vocab, k) = (5000, 256);
    let table = random_weights(&mut rng(70), WeightFormat::Q6_K, vocab, k);
    let w = Weights::upload(ctx, &table).unwrap();
    let ids: Vec<u32> = vec![0, 4945, 4946, 4999];
    let it = ctx.upload(&ids, DType::U32, &[ids.len()]).unwrap();
    let out = ctx.zeros(DType::F32, &[ids.len(), k]).unwrap();
    let mut rec = ctx.recorder();
    embedding(&mut rec, &it, &w, &out).unwrap();
    rec.submit().unwrap();
    assert_close(
        "Q6_K table in parts",
        &ctx.read(&out).unwrap(),
        &embedding_ref(&ids, &table),
        0.0,
        1e-6,
    );
}

/// A recording submitted in pieces as it is recorded (`Recorder::submit_every`, the GPU plan's
/// decode step) computes what one submit does: softmaxes of one input, each with its own scale
/// (so each launch reads its own parameters, and each run other scales than the run before,
/// whose parameters the reused uniform chunks still hold), match the reference within 1e-6,
/// also when the first half has run to its end before the second is recorded.
#[test]
fn recording_submitted_in_pieces_matches_one_submit() {
    let Some(ctx) = test_context() else { return };
    let (rows, len, steps) = (3, 37, 12);
    let x = rand_vec(&mut rng(60), rows * len, -3.0, 3.0);
    let xt = ctx.upload_f32(&x, &[rows, len]).unwrap();
    for (run, every) in [None, Some(1), Some(2), Some(5)].into_iter().enumerate() {
        let scale = |i: usize| 0.5 + 0.3 * i as f32 + 0.1 * run as f32;
        let ys: Vec<_> = (0..steps)
            .map(|_| ctx.zeros(DType::F32, &[rows, len]).unwrap())
            .collect();
        let mut rec = ctx.recorder();
        if let Some(n) = every {
            rec.submit_every(n);
        }
        for (i, y) in ys.iter().enumerate() {
            if i == steps / 2 {
                ctx.device
                    .poll(kiln_runtime::wgpu::PollType::wait_indefinitely())
                    .unwrap();
            }
            softmax(&mut rec, &xt, y, len, scale(i), None).unwrap();
        }
        rec.submit().unwrap();
        for (i, y) in ys.iter().enumerate() {
            assert_close(
                &format!("launch {i} with a submit every {every:?} launches"),
                &ctx.read::<f32>(y).unwrap(),
                &softmax_ref(&x, len, scale(i), None),
                1e-6,
                0.0,
            );
        }
    }
}
