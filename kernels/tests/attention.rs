//! RoPE, the KV store and attention (causal prefill and split decode, GQA) against the CPU
//! references.

mod common;

use common::*;
use kiln_kernels::KernelError;
use kiln_kernels::attention::{AttnShape, attention, attention_ref, kv_store, scratch_len};
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
        for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
            let cfg = Rope {
                heads,
                head_dim,
                rot_dims: rot,
                base: 10000.0,
                layout,
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
            rope_ref(&mut want, &pos, &cfg);
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
fn filled(
    ctx: &Context,
    seed: u64,
    shape: AttnShape,
) -> (Case, kiln_runtime::Tensor, kiln_runtime::Tensor) {
    let mut rng = rng(seed);
    let k = rand_vec(&mut rng, shape.cache_len(), -1.0, 1.0);
    let v = rand_vec(&mut rng, shape.cache_len(), -1.0, 1.0);
    let kt = ctx.upload_f32(&k, &[shape.cache_len()]).unwrap();
    let vt = ctx.upload_f32(&v, &[shape.cache_len()]).unwrap();
    (Case { shape, k, v }, kt, vt)
}

fn run_attention(
    ctx: &Context,
    case: &Case,
    kt: &kiln_runtime::Tensor,
    vt: &kiln_runtime::Tensor,
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
    let mut rec = ctx.recorder();
    attention(
        &mut rec, &s, &qt, &mt, max_keys, kt, vt, &out, &scratch, scale, split,
    )
    .unwrap();
    rec.submit().unwrap();
    let got = ctx.read::<f32>(&out).unwrap();
    let want = attention_ref(&s, q, meta, &case.k, &case.v, scale);
    assert_close(
        &format!("attention {s:?} rows {rows} max_keys {max_keys} split {split:?}"),
        &got,
        &want,
        2e-5,
        1e-4,
    );
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
            let (case, kt, vt) = filled(ctx, 20 + i as u64, shape);
            let q = rand_vec(&mut rng(t as u64), t * heads * head_dim, -1.0, 1.0);
            let meta: Vec<u32> = (0..t).flat_map(|r| [0, (p0 + r + 1) as u32]).collect();
            run_attention(ctx, &case, &kt, &vt, &q, &meta, None);
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
        let (case, kt, vt) = filled(ctx, 40 + i as u64, shape);
        let meta = [2u32, 1, 0, 700, 1, 333];
        let q = rand_vec(&mut rng(50 + i as u64), 3 * heads * head_dim, -1.0, 1.0);
        for split in [Some(64), Some(100), None] {
            run_attention(ctx, &case, &kt, &vt, &q, &meta, split);
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
    let kc = ctx.zeros(DType::F32, &[shape.cache_len()]).unwrap();
    let vc = ctx.zeros(DType::F32, &[shape.cache_len()]).unwrap();
    let mut rec = ctx.recorder();
    let (knt, vnt) = (
        ctx.upload_f32(&kn, &[t, 3, 5]).unwrap(),
        ctx.upload_f32(&vn, &[t, 3, 5]).unwrap(),
    );
    let st = ctx.upload(&slots, DType::U32, &[2 * t]).unwrap();
    kv_store(&mut rec, &shape, &knt, &vnt, &st, &kc, &vc).unwrap();
    rec.submit().unwrap();
    let (gk, gv) = (ctx.read::<f32>(&kc).unwrap(), ctx.read::<f32>(&vc).unwrap());
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
        kv_store(&mut rec, &shape, &short, &vnt, &st, &kc, &vc),
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
    let c = ctx.zeros(DType::F32, &[shape.cache_len()]).unwrap();
    let q = ctx.zeros(DType::F32, &[32]).unwrap();
    let meta = ctx.zeros(DType::U32, &[2]).unwrap();
    let mut rec = ctx.recorder();
    let err = attention(&mut rec, &shape, &q, &meta, 1, &c, &c, &q, &q, 1.0, None);
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
    let c = ctx.zeros(DType::F32, &[shape.cache_len()]).unwrap();
    let err = attention(&mut rec, &shape, &q, &meta, 5, &c, &c, &q, &q, 1.0, None);
    assert!(
        matches!(err, Err(KernelError::Shape { .. })),
        "more keys than the capacity"
    );
}
