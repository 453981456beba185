//! RoPE (alone, and folded into the KV store), the KV store and attention (causal prefill and split decode, GQA) against the CPU
//! references.

mod common;

use common::*;
use kiln_kernels::KernelError;
use kiln_kernels::attention::{
    Attend, AttnShape, KEY_BLOCK, KvCache, KvFormat, NewRows, attention, attention_in,
    attention_ref, kv_store, kv_store_rope, scratch_len, store_and_attend_in,
};
use kiln_kernels::rope::{Rope, RopeLayout, rope, rope_ref};
use kiln_runtime::{Context, DType};

/// RoPE: |gpu − ref| ≤ tol with tol = 2e-5 for positions < 64 and 2e-3 up to 8191 (the f32 angle
/// itself carries ≈ pos · 6e-8 rad of error; the reference angle is f64).
#[test]
fn rope_matches_reference_in_both_layouts() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(10);
    for (t, heads, head_dim, rot, max_pos, tol) in [
        (1, 1, 2, 2, 1, 2e-5),
        (5, 3, 64, 64, 64, 2e-5),
        (7, 9, 64, 64, 8192, 2e-3),
        (3, 2, 96, 32, 64, 2e-5),
        (33, 4, 128, 128, 8192, 2e-3),
    ] {
        // Llama 3's per-pair divisors: 1 for fast pairs up to 32 for slow ones.
        let factors = rand_vec(&mut rng, rot / 2, 1.0, 32.0);
        let ft = ctx.upload_f32(&factors, &[rot / 2]).unwrap();
        for (layout, scaled) in [
            (RopeLayout::Interleaved, false),
            (RopeLayout::HalfSplit, false),
            (RopeLayout::Interleaved, true),
            (RopeLayout::HalfSplit, true),
        ] {
            let cfg = Rope {
                heads,
                head_dim,
                rot_dims: rot,
                base: 10000.0,
                layout,
                factors: scaled.then_some(&ft),
            };
            let x = rand_vec(&mut rng, t * heads * head_dim, -1.0, 1.0);
            let pos: Vec<u32> = (0..t)
                .map(|i| ((i * 2654435761usize) % max_pos) as u32)
                .collect();
            let xt = ctx.upload_f32(&x, &[t, heads, head_dim]).unwrap();
            let pt = ctx.upload(&pos, DType::U32, &[t]).unwrap();
            let mut rec = ctx.recorder();
            rope(&mut rec, &xt, &pt, &cfg).unwrap();
            rec.submit().unwrap();
            let mut want = x.clone();
            rope_ref(&mut want, &pos, &cfg, scaled.then_some(&factors[..]));
            assert_close(
                &format!("rope {cfg:?} t{t}"),
                &ctx.read(&xt).unwrap(),
                &want,
                tol,
                0.0,
            );
        }
    }
}

struct Case {
    shape: AttnShape,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// A cache filled with random keys and values (as a previous prefill would leave it).
fn filled(ctx: &Context, seed: u64, shape: AttnShape) -> (Case, KvCache) {
    let mut rng = rng(seed);
    let k = rand_vec(&mut rng, shape.cache_len(), -1.0, 1.0);
    let v = rand_vec(&mut rng, shape.cache_len(), -1.0, 1.0);
    let cache = KvCache::from_f32(ctx, &shape, &k, &v).unwrap();
    (Case { shape, k, v }, cache)
}

fn run_attention(
    ctx: &Context,
    case: &Case,
    cache: &KvCache,
    q: &[f32],
    meta: &[u32],
    split: Option<usize>,
) -> Vec<f32> {
    let s = case.shape;
    let rows = meta.len() / 2;
    let max_keys = meta.chunks(2).map(|m| m[1] as usize).max().unwrap();
    let qt = ctx.upload_f32(q, &[rows, s.heads, s.head_dim]).unwrap();
    let mt = ctx.upload(meta, DType::U32, &[meta.len()]).unwrap();
    let out = ctx
        .upload_f32(&vec![f32::NAN; q.len()], &[q.len()])
        .unwrap();
    let scratch = ctx
        .zeros(DType::F32, &[scratch_len(&s, rows, max_keys, split).max(1)])
        .unwrap();
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let want = attention_ref(&s, q, meta, &case.k, &case.v, scale);
    // Every kernel the device runs, whichever it would pick.
    let mut got = Vec::new();
    for kernel in [Attend::Keys, Attend::Rows, Attend::Lanes] {
        if !kiln_kernels::attention::attend_supported(ctx, kernel, cache) {
            eprintln!(
                "not run: {kernel:?} attention for {s:?} {} KV (needs subgroups of 8 and a head size it divides)",
                cache.format
            );
            continue;
        }
        ctx.write(&out, &vec![f32::NAN; q.len()]).unwrap();
        let mut rec = ctx.recorder();
        attention_in(
            &mut rec, &s, &qt, &mt, max_keys, cache, &out, &scratch, scale, split, kernel,
        )
        .unwrap();
        rec.submit().unwrap();
        got = ctx.read::<f32>(&out).unwrap();
        assert_close(
            &format!("attention {kernel:?} {s:?} rows {rows} max_keys {max_keys} split {split:?}"),
            &got,
            &want,
            2e-5,
            1e-4,
        );
    }
    got
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (4, 2, 64),
    (9, 3, 64),
    (6, 2, 80),
    (2, 1, 256),
    (12, 12, 64),
];

/// Causal prefill: T query rows at positions p0 .. p0 + T over a cache that already holds p0
/// positions; |gpu − ref| ≤ 2e-5 + 1e-4 · |ref|.
#[test]
fn causal_prefill_matches_reference() {
    let Some(ctx) = test_context() else { return };
    for (i, &(heads, kv_heads, head_dim)) in SHAPES.iter().enumerate() {
        for (t, p0) in [(1, 0), (7, 0), (37, 5), (70, 130)] {
            let shape = AttnShape {
                heads,
                kv_heads,
                head_dim,
                capacity: 256,
                n_seq: 1,
            };
            let (case, cache) = filled(ctx, 20 + i as u64, shape);
            let meta: Vec<u32> = (0..t).flat_map(|r| [0, (p0 + r + 1) as u32]).collect();
            // Scores of a few tenths (a nearly even softmax) and, with queries 100x larger, of
            // about a hundred, past where exp overflows f32 unless the running max is right.
            for amp in [1.0, 100.0] {
                let q = rand_vec(&mut rng(t as u64), t * heads * head_dim, -amp, amp);
                run_attention(ctx, &case, &cache, &q, &meta, None);
            }
        }
    }
}

/// Batched decode: one row per sequence with different lengths; split over the keys (forced
/// 64-key splits, and the default plan) must agree with the unsplit reference.
#[test]
fn split_decode_matches_reference() {
    let Some(ctx) = test_context() else { return };
    for (i, &(heads, kv_heads, head_dim)) in SHAPES.iter().enumerate() {
        let shape = AttnShape {
            heads,
            kv_heads,
            head_dim,
            capacity: 700,
            n_seq: 3,
        };
        let (case, cache) = filled(ctx, 40 + i as u64, shape);
        let meta = [2u32, 1, 0, 700, 1, 333];
        let q = rand_vec(&mut rng(50 + i as u64), 3 * heads * head_dim, -1.0, 1.0);
        for split in [Some(64), Some(100), None] {
            run_attention(ctx, &case, &cache, &q, &meta, split);
        }
    }
}

/// The decode kernel for CPU adapters reads 32-byte items where SHADER_INT64 is granted (the
/// shared context on lavapipe) and 16-byte ones without: split decode on a device refusing it.
#[test]
fn decode_without_int64_matches_reference() {
    let Some(ctx) = &own_context(true) else {
        return;
    };
    for (i, &(heads, kv_heads, head_dim)) in [(9, 3, 64), (6, 2, 80), (2, 1, 4)].iter().enumerate()
    {
        let shape = AttnShape {
            heads,
            kv_heads,
            head_dim,
            capacity: 300,
            n_seq: 2,
        };
        let (case, cache) = filled(ctx, 60 + i as u64, shape);
        let meta = [1u32, 300, 0, 77];
        let q = rand_vec(&mut rng(70 + i as u64), 2 * heads * head_dim, -1.0, 1.0);
        for split in [Some(64), None] {
            run_attention(ctx, &case, &cache, &q, &meta, split);
        }
    }
}

/// kv_store writes rows exactly where their (sequence, position) slots say, and nothing else.
#[test]
fn kv_store_places_rows_at_their_slots() {
    let Some(ctx) = test_context() else { return };
    let shape = AttnShape {
        heads: 6,
        kv_heads: 3,
        head_dim: 5,
        capacity: 11,
        n_seq: 2,
    };
    let t = 4;
    let slots = [1u32, 3, 1, 4, 0, 9, 1, 10];
    let mut rng = rng(60);
    let kn = rand_vec(&mut rng, t * 15, -1.0, 1.0);
    let vn = rand_vec(&mut rng, t * 15, -1.0, 1.0);
    let cache = KvCache::new(ctx, &shape, KvFormat::F32).unwrap();
    let mut rec = ctx.recorder();
    let (knt, vnt) = (
        ctx.upload_f32(&kn, &[t, 3, 5]).unwrap(),
        ctx.upload_f32(&vn, &[t, 3, 5]).unwrap(),
    );
    let st = ctx.upload(&slots, DType::U32, &[2 * t]).unwrap();
    kv_store(&mut rec, &shape, &knt, &vnt, &st, &cache).unwrap();
    rec.submit().unwrap();
    let (gk, gv) = cache.read_f32(ctx).unwrap();
    let mut wk = vec![0f32; shape.cache_len()];
    let mut wv = wk.clone();
    for r in 0..t {
        let (seq, p) = (slots[2 * r] as usize, slots[2 * r + 1] as usize);
        for h in 0..3 {
            for d in 0..5 {
                let at = ((seq * 3 + h) * 11 + p) * 5 + d;
                wk[at] = kn[(r * 3 + h) * 5 + d];
                wv[at] = vn[(r * 3 + h) * 5 + d];
            }
        }
    }
    assert_eq!(gk, wk);
    assert_eq!(gv, wv);
    let mut rec = ctx.recorder();
    let short = ctx.zeros(DType::F32, &[3]).unwrap();
    assert!(matches!(
        kv_store(&mut rec, &shape, &short, &vnt, &st, &cache),
        Err(KernelError::Shape { .. })
    ));
}

/// kv_store_rope (RoPE folded into the store) leaves the cache and the queries as rope on both
/// then kv_store do, for every cache format and both pair layouts, over prefill and decode steps of
/// two sequences (crossing an int8 key block), with all or part of each head rotating.
#[test]
fn kv_store_rope_matches_rope_then_store() {
    let Some(ctx) = test_context() else { return };
    for (i, format) in [KvFormat::F32, KvFormat::F16, KvFormat::Int8]
        .into_iter()
        .enumerate()
    {
        let ft = ctx
            .upload_f32(&[1.0, 2.5, 8.0, 32.0, 1.0, 3.0, 7.0, 20.0], &[8])
            .unwrap();
        for (layout, rot, factors) in [
            (RopeLayout::Interleaved, 16, None),
            (RopeLayout::HalfSplit, 8, None),
            (RopeLayout::Interleaved, 16, Some(&ft)),
            (RopeLayout::HalfSplit, 8, Some(&ft)),
        ] {
            let shape = AttnShape {
                heads: 6,
                kv_heads: 2,
                head_dim: 16,
                capacity: 48,
                n_seq: 2,
            };
            let ft4 = ctx.upload_f32(&[1.0, 2.5, 8.0, 32.0], &[4]).unwrap();
            let cfg = Rope {
                heads: 6,
                head_dim: 16,
                rot_dims: rot,
                base: 10000.0,
                layout,
                factors: factors.map(|f| if rot == 16 { f } else { &ft4 }),
            };
            let (a, b) = (
                KvCache::new(ctx, &shape, format).unwrap(),
                KvCache::new(ctx, &shape, format).unwrap(),
            );
            let mut rng = rng(80 + i as u64);
            let mut lens = [0u32; 2];
            for seqs in [[0; 37].to_vec(), vec![0, 1, 1], vec![0, 1], vec![1]] {
                let t = seqs.len();
                let (slots, pos): (Vec<[u32; 2]>, Vec<u32>) = seqs
                    .iter()
                    .map(|&s| {
                        lens[s] += 1;
                        ([s as u32, lens[s] - 1], lens[s] - 1)
                    })
                    .unzip();
                let slots: Vec<u32> = slots.concat();
                let q = rand_vec(&mut rng, t * 6 * 16, -1.0, 1.0);
                let k = rand_vec(&mut rng, t * 2 * 16, -1.0, 1.0);
                let v = rand_vec(&mut rng, t * 2 * 16, -1.0, 1.0);
                let up = |x: &[f32], heads: usize| ctx.upload_f32(x, &[t, heads, 16]).unwrap();
                let (qa, ka, qb, kb, vt) = (up(&q, 6), up(&k, 2), up(&q, 6), up(&k, 2), up(&v, 2));
                let st = ctx.upload(&slots, DType::U32, &[2 * t]).unwrap();
                let pt = ctx.upload(&pos, DType::U32, &[t]).unwrap();
                let mut rec = ctx.recorder();
                rope(&mut rec, &qa, &pt, &cfg).unwrap();
                rope(&mut rec, &ka, &pt, &Rope { heads: 2, ..cfg }).unwrap();
                kv_store(&mut rec, &shape, &ka, &vt, &st, &a).unwrap();
                kv_store_rope(&mut rec, &shape, (&qb, &kb), &vt, &st, &b, &cfg).unwrap();
                rec.submit().unwrap();
                let label = format!(
                    "{format} {layout:?} rot {rot} factors {} step of {t} rows",
                    factors.is_some()
                );
                let (read_a, read_b) = (a.read_f32(ctx).unwrap(), b.read_f32(ctx).unwrap());
                // The same math in two shaders: equal up to f32 rounding, which a stored f16 or
                // int8 value can carry across one step (|k| < 1.5: an f16 step is under 2e-3,
                // an int8 key step under 1.5 / 127).
                let step = match format {
                    KvFormat::F32 => 1e-5,
                    KvFormat::F16 => 2e-3,
                    KvFormat::Int8 => 1.5 / 127.0,
                };
                assert_close(&format!("{label} keys"), &read_b.0, &read_a.0, step, 0.0);
                assert_close(&format!("{label} values"), &read_b.1, &read_a.1, 1e-6, 0.0);
                let (got_q, want_q) = (ctx.read::<f32>(&qb).unwrap(), ctx.read(&qa).unwrap());
                assert_close(&format!("{label} queries"), &got_q, &want_q, 1e-5, 0.0);
                // The keys in kb stay as they came: only the cache holds them turned.
                assert_eq!(ctx.read::<f32>(&kb).unwrap(), k);
            }
        }
    }
    let mut rec = ctx.recorder();
    let shape = AttnShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        capacity: 4,
        n_seq: 1,
    };
    let cache = KvCache::new(ctx, &shape, KvFormat::F32).unwrap();
    let x = |n: usize| ctx.zeros(DType::F32, &[n]).unwrap();
    let slots = ctx.upload(&[0u32, 0], DType::U32, &[2]).unwrap();
    let wrong = Rope {
        heads: 4,
        head_dim: 16,
        rot_dims: 16,
        base: 10000.0,
        layout: RopeLayout::Interleaved,
        factors: None,
    };
    assert!(matches!(
        kv_store_rope(
            &mut rec,
            &shape,
            (&x(32), &x(16)),
            &x(16),
            &slots,
            &cache,
            &wrong
        ),
        Err(KernelError::Shape { .. })
    ));
}

/// Decode's store folded into the attention (one launch) leaves the cache and the output as the
/// store then the attention do (two launches), for f32 and f16 caches, with RoPE in both pair
/// layouts and without, over steps of distinct sequences, ragged heads and key ranges long enough
/// to split on every plan; the unfolded output also matches the f64 reference. Tolerances: keys
/// 1e-5 (f32) or one f16 step (2e-3), output 1e-5 + 1e-4 · |ref|.
#[test]
fn store_folded_into_attention_matches_store_then_attend() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(90);
    for (heads, kv_heads, head_dim, prompt) in [(1, 1, 2, 1), (9, 3, 64, 300), (6, 2, 18, 70)] {
        for format in [KvFormat::F32, KvFormat::F16] {
            let ropes = [
                None,
                Some((RopeLayout::Interleaved, head_dim)),
                Some((RopeLayout::HalfSplit, head_dim.min(8))),
            ];
            for rope_cfg in ropes {
                let shape = AttnShape {
                    heads,
                    kv_heads,
                    head_dim,
                    capacity: prompt + 4,
                    n_seq: 3,
                };
                let pairs = head_dim.min(8) / 2;
                let factors: Vec<f32> = (0..pairs).map(|i| 1.0 + 3.0 * i as f32).collect();
                let ft = ctx.upload_f32(&factors, &[pairs]).unwrap();
                let rope = rope_cfg.map(|(layout, rot_dims)| Rope {
                    heads,
                    head_dim,
                    rot_dims,
                    base: 10000.0,
                    layout,
                    // The half-split case divides its angles (Llama 3's scaling).
                    factors: (layout == RopeLayout::HalfSplit).then_some(&ft),
                });
                let label = format!("{format} {shape:?} rope {rope_cfg:?}");
                let (a, b) = (
                    KvCache::new(ctx, &shape, format).unwrap(),
                    KvCache::new(ctx, &shape, format).unwrap(),
                );
                let kv_row = kv_heads * head_dim;
                // Prompts: sequence s holds prompt - s positions, written alike to both caches.
                let mut lens = [0u32; 3];
                for (seq, len) in lens.iter_mut().enumerate() {
                    let t = prompt.saturating_sub(seq).max(1);
                    let slots: Vec<u32> = (0..t as u32).flat_map(|p| [seq as u32, p]).collect();
                    let k = rand_vec(&mut rng, t * kv_row, -1.0, 1.0);
                    let v = rand_vec(&mut rng, t * kv_row, -1.0, 1.0);
                    let (kt, vt) = (
                        ctx.upload_f32(&k, &[t * kv_row]).unwrap(),
                        ctx.upload_f32(&v, &[t * kv_row]).unwrap(),
                    );
                    let st = ctx.upload(&slots, DType::U32, &[2 * t]).unwrap();
                    let mut rec = ctx.recorder();
                    kv_store(&mut rec, &shape, &kt, &vt, &st, &a).unwrap();
                    kv_store(&mut rec, &shape, &kt, &vt, &st, &b).unwrap();
                    rec.submit().unwrap();
                    *len = t as u32;
                }
                // Two decode steps: sequences 2 and 0, then 0, 1 and 2.
                for seqs in [vec![2usize, 0], vec![0, 1, 2]] {
                    let r = seqs.len();
                    let mut slots = Vec::new();
                    let mut meta = Vec::new();
                    for &seq in &seqs {
                        slots.extend([seq as u32, lens[seq]]);
                        lens[seq] += 1;
                        meta.extend([seq as u32, lens[seq]]);
                    }
                    let max_keys = meta.chunks(2).map(|m| m[1] as usize).max().unwrap();
                    let q = rand_vec(&mut rng, r * heads * head_dim, -1.0, 1.0);
                    let k = rand_vec(&mut rng, r * kv_row, -1.0, 1.0);
                    let v = rand_vec(&mut rng, r * kv_row, -1.0, 1.0);
                    let up = |x: &[f32]| ctx.upload_f32(x, &[x.len()]).unwrap();
                    let (qa, qb, kt, vt) = (up(&q), up(&q), up(&k), up(&v));
                    let st = ctx.upload(&slots, DType::U32, &[2 * r]).unwrap();
                    let mt = ctx.upload(&meta, DType::U32, &[2 * r]).unwrap();
                    let nan = vec![f32::NAN; q.len()];
                    let (oa, ob) = (up(&nan), up(&nan));
                    let scratch = ctx
                        .zeros(DType::F32, &[scratch_len(&shape, r, max_keys, None).max(1)])
                        .unwrap();
                    let scale = 1.0 / (head_dim as f32).sqrt();
                    let mut rec = ctx.recorder();
                    for (fold, qt, cache, out) in [(false, &qa, &a, &oa), (true, &qb, &b, &ob)] {
                        let rows = NewRows {
                            q: qt,
                            k: &kt,
                            v: &vt,
                            slots: &st,
                            meta: &mt,
                            max_keys,
                            sole: true,
                        };
                        store_and_attend_in(
                            &mut rec,
                            &shape,
                            &rows,
                            cache,
                            out,
                            &scratch,
                            scale,
                            rope.as_ref(),
                            fold,
                        )
                        .unwrap();
                    }
                    rec.submit().unwrap();
                    let label = format!("{label} step {seqs:?}");
                    let (read_a, read_b) = (a.read_f32(ctx).unwrap(), b.read_f32(ctx).unwrap());
                    let step = match format {
                        KvFormat::F16 => 2e-3,
                        _ => 1e-5,
                    };
                    assert_close(&format!("{label} keys"), &read_b.0, &read_a.0, step, 0.0);
                    assert_close(&format!("{label} values"), &read_b.1, &read_a.1, 0.0, 0.0);
                    let turned: Vec<f32> = ctx.read(&qa).unwrap();
                    let want = attention_ref(&shape, &turned, &meta, &read_a.0, &read_a.1, scale);
                    let got_a: Vec<f32> = ctx.read(&oa).unwrap();
                    assert_close(&format!("{label} unfolded"), &got_a, &want, 1e-5, 1e-4);
                    let got_b: Vec<f32> = ctx.read(&ob).unwrap();
                    assert_close(&format!("{label} folded"), &got_b, &got_a, 1e-5, 1e-4);
                }
            }
        }
    }
    // A fold is refused where rows are not each their sequence's only new one.
    let shape = AttnShape {
        heads: 2,
        kv_heads: 1,
        head_dim: 8,
        capacity: 4,
        n_seq: 1,
    };
    let cache = KvCache::new(ctx, &shape, KvFormat::F32).unwrap();
    let x = |n: usize| ctx.zeros(DType::F32, &[n]).unwrap();
    let idx = ctx.upload(&[0u32, 0, 0, 1], DType::U32, &[4]).unwrap();
    let (q, k, out) = (x(32), x(16), x(32));
    let rows = NewRows {
        q: &q,
        k: &k,
        v: &k,
        slots: &idx,
        meta: &idx,
        max_keys: 2,
        sole: false,
    };
    let mut rec = ctx.recorder();
    let scratch = x(1);
    assert!(matches!(
        store_and_attend_in(
            &mut rec, &shape, &rows, &cache, &out, &scratch, 1.0, None, true
        ),
        Err(KernelError::Shape { .. })
    ));
}

#[test]
fn attention_rejects_bad_shapes() {
    let Some(ctx) = test_context() else { return };
    let shape = AttnShape {
        heads: 4,
        kv_heads: 3,
        head_dim: 8,
        capacity: 4,
        n_seq: 1,
    };
    let zeros = vec![0f32; shape.cache_len()];
    let c = KvCache::from_f32(ctx, &shape, &zeros, &zeros).unwrap();
    let q = ctx.zeros(DType::F32, &[32]).unwrap();
    let meta = ctx.zeros(DType::U32, &[2]).unwrap();
    let mut rec = ctx.recorder();
    let err = attention(&mut rec, &shape, &q, &meta, 1, &c, &q, &q, 1.0, None);
    assert!(
        matches!(
            err,
            Err(KernelError::Shape {
                kernel: "attention",
                ..
            })
        ),
        "kv_heads must divide heads"
    );
    let shape = AttnShape {
        kv_heads: 2,
        ..shape
    };
    let zeros = vec![0f32; shape.cache_len()];
    let c = KvCache::from_f32(ctx, &shape, &zeros, &zeros).unwrap();
    let err = attention(&mut rec, &shape, &q, &meta, 5, &c, &q, &q, 1.0, None);
    assert!(
        matches!(err, Err(KernelError::Shape { .. })),
        "more keys than the capacity"
    );
}

/// f16 and int8 caches filled over several steps as generation fills them (a prefill that leaves
/// a key block open, rows of two sequences interleaved, then single-row decode steps that
/// complete blocks) decode back within their rounding bounds: f16 to 2⁻¹¹ relative; int8 values
/// to half a step of their position's absmax scale, int8 keys to half a step of their block's
/// per-channel scale once the block is full and exactly while it is open. Attention over the
/// quantized cache then matches the reference over the decoded values (2e-5 + 1e-4 · |ref|).
#[test]
fn quantized_caches_round_trip_and_attend() {
    let Some(ctx) = test_context() else { return };
    for format in [KvFormat::F16, KvFormat::Int8] {
        for &(heads, kv_heads, head_dim) in &[(6, 2, 64), (3, 3, 8), (4, 1, 4)] {
            let shape = AttnShape {
                heads,
                kv_heads,
                head_dim,
                capacity: 150,
                n_seq: 2,
            };
            let cache = KvCache::new(ctx, &shape, format).unwrap();
            let row = kv_heads * head_dim;
            let mut rng = rng(70 + head_dim as u64);
            let (mut truth_k, mut truth_v) =
                (vec![0f32; shape.cache_len()], vec![0f32; shape.cache_len()]);
            let mut lens = [0usize; 2];
            // (sequence of each new row) per step.
            let mut steps: Vec<Vec<usize>> = vec![vec![0; 45], [0, 1].repeat(13)];
            steps.extend((0..60).map(|i| if i < 30 { vec![0, 1] } else { vec![0] }));
            for seqs in steps {
                let t = seqs.len();
                let mut kn = rand_vec(&mut rng, t * row, -1.0, 1.0);
                let vn = rand_vec(&mut rng, t * row, -2.0, 2.0);
                // A channel with large keys, as trained models have.
                for r in 0..t * kv_heads {
                    kn[r * head_dim] *= 20.0;
                }
                let mut slots = Vec::new();
                for (r, &seq) in seqs.iter().enumerate() {
                    let pos = lens[seq];
                    lens[seq] += 1;
                    slots.extend([seq as u32, pos as u32]);
                    for h in 0..kv_heads {
                        let at = ((seq * kv_heads + h) * shape.capacity + pos) * head_dim;
                        let from = (r * kv_heads + h) * head_dim;
                        truth_k[at..at + head_dim].copy_from_slice(&kn[from..from + head_dim]);
                        truth_v[at..at + head_dim].copy_from_slice(&vn[from..from + head_dim]);
                    }
                }
                let mut rec = ctx.recorder();
                kv_store(
                    &mut rec,
                    &shape,
                    &ctx.upload_f32(&kn, &[t * row]).unwrap(),
                    &ctx.upload_f32(&vn, &[t * row]).unwrap(),
                    &ctx.upload(&slots, DType::U32, &[2 * t]).unwrap(),
                    &cache,
                )
                .unwrap();
                rec.submit().unwrap();
            }
            let (k, v) = cache.read_f32(ctx).unwrap();
            let name = format!("{format} cache {shape:?}");
            for (seq, &len) in lens.iter().enumerate() {
                for h in 0..kv_heads {
                    let head = (seq * kv_heads + h) * shape.capacity;
                    for pos in 0..len {
                        let at = (head + pos) * head_dim;
                        let vmax = truth_v[at..at + head_dim]
                            .iter()
                            .fold(0f32, |m, x| m.max(x.abs()));
                        let block = pos / KEY_BLOCK;
                        let sealed = (block + 1) * KEY_BLOCK <= len;
                        for d in 0..head_dim {
                            let (tk, tv) = (truth_k[at + d], truth_v[at + d]);
                            let (kb, vb) = match format {
                                KvFormat::Int8 => {
                                    let kmax = (block * KEY_BLOCK..(block + 1) * KEY_BLOCK)
                                        .map(|j| truth_k[(head + j) * head_dim + d].abs())
                                        .fold(0f32, f32::max);
                                    let k_step = if sealed { kmax / 127.0 } else { 0.0 };
                                    (k_step * 0.501, vmax / 127.0 * 0.501)
                                }
                                _ => (tk.abs() / 2048.0, tv.abs() / 2048.0),
                            };
                            let (ek, ev) = ((k[at + d] - tk).abs(), (v[at + d] - tv).abs());
                            assert!(
                                ek <= kb + 1e-7,
                                "{name}: key seq {seq} head {h} pos {pos} dim {d}: {} for {tk} (bound {kb}, block sealed {sealed})",
                                k[at + d]
                            );
                            assert!(
                                ev <= vb + 1e-7,
                                "{name}: value seq {seq} head {h} pos {pos} dim {d}: {} for {tv} (bound {vb})",
                                v[at + d]
                            );
                        }
                    }
                }
            }
            // Decode rows for both sequences, and causal prefill rows of sequence 0.
            let mut meta = vec![0u32, lens[0] as u32, 1, lens[1] as u32];
            meta.extend((0..40).flat_map(|r| [0u32, (30 + r) as u32]));
            let rows = meta.len() / 2;
            let q = rand_vec(&mut rng, rows * heads * head_dim, -1.0, 1.0);
            let case = Case {
                shape,
                k: k.clone(),
                v: v.clone(),
            };
            let got = run_attention(ctx, &case, &cache, &q, &meta, Some(64));
            let exact = attention_ref(
                &shape,
                &q,
                &meta,
                &truth_k,
                &truth_v,
                1.0 / (head_dim as f32).sqrt(),
            );
            let worst = got
                .iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Over the values as stored (read back), the kernel is exact to f32 rounding.
            let scale = 1.0 / (head_dim as f32).sqrt();
            let stored = attention_ref(&shape, &q, &meta, &k, &v, scale);
            assert_close(
                &format!("{name} over its stored values"),
                &got,
                &stored,
                1e-4,
                1e-4,
            );
            // Against the unquantized cache: keys off by at most dk move each score by at most
            // d = scale * max sum|q| * dk, each softmax weight by a factor within e^(±2d), and
            // values off by at most dv: |out - exact| <= dv + (e^(2d) - 1) * max|v|.
            // Over the positions written (the rest of the cache is never attended).
            let written = |seq: usize, h: usize| {
                let head = (seq * kv_heads + h) * shape.capacity * head_dim;
                head..head + lens[seq] * head_dim
            };
            let max_diff = |a: &[f32], b: &[f32]| {
                (0..2)
                    .flat_map(|seq| (0..kv_heads).map(move |h| written(seq, h)))
                    .flat_map(|r| a[r.clone()].iter().zip(&b[r]).map(|(x, y)| (x - y).abs()))
                    .fold(0f32, f32::max)
            };
            let (dk, dv) = (max_diff(&k, &truth_k), max_diff(&v, &truth_v));
            let q_sum = q
                .chunks(head_dim)
                .map(|h| h.iter().map(|x| x.abs()).sum::<f32>())
                .fold(0f32, f32::max);
            let vmax = truth_v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let bound = dv + ((2.0 * scale * q_sum * dk).exp() - 1.0) * vmax + 1e-4;
            eprintln!(
                "{name}: attention differs from the unquantized cache's by at most {worst} (bound {bound})"
            );
            assert!(worst <= bound, "{name}: {worst} over the bound {bound}");
        }
    }
}
