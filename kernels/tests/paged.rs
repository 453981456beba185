//! Paged KV caches: a cache whose sequences' blocks lie scattered over a larger pool (a shuffled
//! block table) stores, reads back and attends exactly as a contiguous cache does, in every
//! format, at block sizes from 1 position to 64, through every kernel; and full blocks one
//! sequence shares with another read the same for both while the sharer writes its own.

mod common;

use common::*;
use kiln_kernels::attention::{
    Attend, AttnShape, KvCache, KvFormat, NewRows, Paging, attend_supported, attention_in,
    attention_ref, kv_store_rope, scratch_len, store_and_attend_in,
};
use kiln_kernels::rope::{Rope, RopeLayout};
use kiln_runtime::{Context, DType, Tensor};
use rand::seq::SliceRandom;

const CAPACITY: usize = 150;
const N_SEQ: usize = 3;

/// A contiguous cache and a paged one, fed the same rows.
struct Pair {
    shape: AttnShape,
    rope: Rope<'static>,
    flat: KvCache,
    paged: KvCache,
    /// The paged cache's table, `[N_SEQ, width]`.
    table: Vec<u32>,
    /// Positions held per sequence.
    lens: [usize; N_SEQ],
}

impl Pair {
    fn new(ctx: &Context, shape: AttnShape, format: KvFormat, block: usize, seed: u64) -> Self {
        let width = Paging::width(block, CAPACITY);
        // Every sequence's blocks, scattered over a pool with a third more blocks than needed.
        let blocks = N_SEQ * width + N_SEQ * width / 3 + 1;
        let mut ids: Vec<u32> = (0..blocks as u32).collect();
        ids.shuffle(&mut rng(seed));
        let table = ids[..N_SEQ * width].to_vec();
        let paging = Paging::with_table(ctx, &shape, block, blocks, &table).unwrap();
        Self {
            shape,
            rope: Rope {
                heads: shape.heads,
                head_dim: shape.head_dim,
                rot_dims: shape.head_dim,
                base: 10000.0,
                layout: RopeLayout::HalfSplit,
                factors: None,
            },
            flat: KvCache::new(ctx, &shape, format).unwrap(),
            paged: KvCache::paged(ctx, &shape, format, &paging).unwrap(),
            table,
            lens: [0; N_SEQ],
        }
    }

    /// One step of new rows (`seqs[r]` takes its next position) stored and attended in both
    /// caches, the store folded into the attention where `fold`; the two outputs must be equal.
    fn step(&mut self, ctx: &Context, rng: &mut rand::rngs::StdRng, seqs: &[usize], fold: bool) {
        let s = self.shape;
        let r = seqs.len();
        let (mut slots, mut meta) = (Vec::new(), Vec::new());
        let mut seen = [false; N_SEQ];
        let mut sole = true;
        for &seq in seqs {
            sole &= !std::mem::replace(&mut seen[seq], true);
            slots.extend([seq as u32, self.lens[seq] as u32]);
            self.lens[seq] += 1;
            meta.extend([seq as u32, self.lens[seq] as u32]);
        }
        let max_keys = meta.chunks(2).map(|m| m[1] as usize).max().unwrap();
        let kv_row = s.kv_heads * s.head_dim;
        let up = |x: &[f32]| ctx.upload_f32(x, &[x.len()]).unwrap();
        let q = rand_vec(rng, r * s.heads * s.head_dim, -1.0, 1.0);
        let mut k = rand_vec(rng, r * kv_row, -1.0, 1.0);
        // A channel with large keys, as trained models have.
        for row in k.chunks_mut(s.head_dim) {
            row[0] *= 20.0;
        }
        let v = rand_vec(rng, r * kv_row, -2.0, 2.0);
        let (kt, vt) = (up(&k), up(&v));
        let st = ctx.upload(&slots, DType::U32, &[2 * r]).unwrap();
        let mt = ctx.upload(&meta, DType::U32, &[2 * r]).unwrap();
        let scratch = ctx
            .zeros(DType::F32, &[scratch_len(&s, r, max_keys, None).max(1)])
            .unwrap();
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let mut outs = Vec::new();
        for cache in [&self.flat, &self.paged] {
            let (qt, out) = (up(&q), up(&vec![f32::NAN; q.len()]));
            let rows = NewRows {
                q: &qt,
                k: &kt,
                v: &vt,
                slots: &st,
                meta: &mt,
                max_keys,
                sole,
            };
            let mut rec = ctx.recorder();
            let fold = fold && sole && cache.format != KvFormat::Int8;
            store_and_attend_in(
                &mut rec,
                &s,
                &rows,
                cache,
                &out,
                &scratch,
                scale,
                Some(&self.rope),
                fold,
            )
            .unwrap();
            rec.submit().unwrap();
            outs.push(ctx.read::<f32>(&out).unwrap());
        }
        same(
            &format!("{s:?} step {seqs:?} fold {fold}"),
            &outs[0],
            &outs[1],
        );
    }

    /// Attention of `meta`'s rows over both caches with every kernel the device runs; all equal.
    fn attend_all(&self, ctx: &Context, q: &[f32], meta: &[u32], label: &str) -> Vec<f32> {
        let query = Query::new(ctx, self.shape, q, meta);
        let mut first: Option<Vec<f32>> = None;
        for kernel in [Attend::Keys, Attend::Rows, Attend::Lanes] {
            if !attend_supported(ctx, kernel, &self.flat) {
                continue;
            }
            let mut got = Vec::new();
            for cache in [&self.flat, &self.paged] {
                got.push(query.run(ctx, cache, kernel));
            }
            same(
                &format!("{label}: {kernel:?} attention, flat and paged"),
                &got[0],
                &got[1],
            );
            assert!(got[0].iter().all(|x| x.is_finite()), "{label}: {kernel:?}");
            first.get_or_insert(got.swap_remove(0));
        }
        first.expect("some kernel runs")
    }

    /// Rows `0..n` of sequence `seq` of a cache read back in sequence order.
    fn rows_of(&self, read: &(Vec<f32>, Vec<f32>), seq: usize, n: usize) -> Vec<f32> {
        let s = self.shape;
        let mut out = Vec::new();
        for h in 0..s.kv_heads {
            let at = (seq * s.kv_heads + h) * s.capacity * s.head_dim;
            out.extend_from_slice(&read.0[at..at + n * s.head_dim]);
            out.extend_from_slice(&read.1[at..at + n * s.head_dim]);
        }
        out
    }
}

fn store_rows(ctx: &Context, pair: &Pair, seq: usize, k: &[f32], v: &[f32], first: usize) {
    let s = pair.shape;
    let t = k.len() / (s.kv_heads * s.head_dim);
    let slots: Vec<u32> = (0..t)
        .flat_map(|i| [seq as u32, (first + i) as u32])
        .collect();
    let up = |x: &[f32]| -> Tensor { ctx.upload_f32(x, &[x.len()]).unwrap() };
    let q = up(&vec![0.0; t * s.heads * s.head_dim]);
    let mut rec = ctx.recorder();
    kv_store_rope(
        &mut rec,
        &s,
        (&q, &up(k)),
        &up(v),
        &ctx.upload(&slots, DType::U32, &[2 * t]).unwrap(),
        &pair.paged,
        &pair.rope,
    )
    .unwrap();
    rec.submit().unwrap();
}

#[test]
fn paged_caches_store_and_attend_as_contiguous_ones() {
    let Some(ctx) = test_context() else { return };
    let cases = [
        (KvFormat::F32, vec![1, 4, 16, 64]),
        (KvFormat::F16, vec![2, 16, 32]),
        (KvFormat::Int8, vec![32, 64]),
    ];
    let mut seed = 500;
    for (format, blocks) in cases {
        for block in blocks {
            for &(heads, kv_heads, head_dim) in &[(6, 2, 64), (3, 3, 8)] {
                seed += 1;
                let shape = AttnShape {
                    heads,
                    kv_heads,
                    head_dim,
                    capacity: CAPACITY,
                    n_seq: N_SEQ,
                };
                let label = format!("{format} KV, blocks of {block}, {shape:?}");
                let mut pair = Pair::new(ctx, shape, format, block, seed);
                let mut rng = rng(seed);
                // A prefill that leaves a block open, two sequences interleaved, then decode
                // steps (every other one with the store folded into the attention).
                pair.step(ctx, &mut rng, &[0; 45], false);
                pair.step(ctx, &mut rng, &[0, 1].repeat(13), false);
                for i in 0..60 {
                    let seqs = if i < 30 { vec![1, 0, 2] } else { vec![0] };
                    pair.step(ctx, &mut rng, &seqs, i % 2 == 1);
                }
                let (flat, paged) = (
                    pair.flat.read_f32(ctx).unwrap(),
                    pair.paged.read_f32(ctx).unwrap(),
                );
                for (seq, &len) in pair.lens.iter().enumerate() {
                    same(
                        &format!("{label}: sequence {seq} read back"),
                        &pair.rows_of(&flat, seq, len),
                        &pair.rows_of(&paged, seq, len),
                    );
                }
                // Decode rows of every sequence and causal prefill rows of sequence 0.
                let mut meta: Vec<u32> = (0..N_SEQ)
                    .flat_map(|s| [s as u32, pair.lens[s] as u32])
                    .collect();
                meta.extend((0..40).flat_map(|r| [0u32, (30 + r) as u32]));
                let q = rand_vec(&mut rng, meta.len() / 2 * heads * head_dim, -1.0, 1.0);
                pair.attend_all(ctx, &q, &meta, &label);

                // Sequence 2 starts over sharing sequence 0's full blocks, then writes its own.
                let width = Paging::width(block, CAPACITY);
                let shared = pair.lens[0] / block;
                let mut table = pair.table.clone();
                for j in 0..shared {
                    table[2 * width + j] = pair.table[j];
                }
                pair.paged.paging.write_table(ctx, &table).unwrap();
                let n = shared * block;
                let tail = 5;
                let row = kv_heads * head_dim;
                let own_k = rand_vec(&mut rng, tail * row, -1.0, 1.0);
                let own_v = rand_vec(&mut rng, tail * row, -1.0, 1.0);
                store_rows(ctx, &pair, 2, &own_k, &own_v, n);
                let paged = pair.paged.read_f32(ctx).unwrap();
                same(
                    &format!("{label}: shared blocks read alike"),
                    &pair.rows_of(&paged, 2, n),
                    &pair.rows_of(&paged, 0, n),
                );
                same(
                    &format!("{label}: the sharer's writes left sequence 0 alone"),
                    &pair.rows_of(&flat, 0, pair.lens[0]),
                    &pair.rows_of(&paged, 0, pair.lens[0]),
                );
                let meta = [
                    2u32,
                    (n + tail) as u32,
                    0,
                    pair.lens[0] as u32,
                    2,
                    (n + 1) as u32,
                ];
                let q = rand_vec(&mut rng, 3 * heads * head_dim, -1.0, 1.0);
                attend_paged(ctx, &pair, &q, &meta, &paged, &format!("{label}, shared"));
            }
        }
    }
}

/// Attention of `meta`'s rows over the paged cache with every kernel the device runs, against
/// the reference over the cache as read back: |gpu − ref| ≤ 2e-5 + 1e-4 · |ref|.
fn attend_paged(
    ctx: &Context,
    pair: &Pair,
    q: &[f32],
    meta: &[u32],
    read: &(Vec<f32>, Vec<f32>),
    label: &str,
) {
    let query = Query::new(ctx, pair.shape, q, meta);
    let want = attention_ref(&pair.shape, q, meta, &read.0, &read.1, query.scale);
    for kernel in [Attend::Keys, Attend::Rows, Attend::Lanes] {
        if !attend_supported(ctx, kernel, &pair.paged) {
            continue;
        }
        assert_close(
            &format!("{label}: {kernel:?}"),
            &query.run(ctx, &pair.paged, kernel),
            &want,
            2e-5,
            1e-4,
        );
    }
}

/// Query rows uploaded once for attention over several caches and kernels.
struct Query {
    shape: AttnShape,
    q: Tensor,
    meta: Tensor,
    max_keys: usize,
    scratch: Tensor,
    scale: f32,
}

impl Query {
    fn new(ctx: &Context, shape: AttnShape, q: &[f32], meta: &[u32]) -> Self {
        let max_keys = meta.chunks(2).map(|m| m[1] as usize).max().unwrap();
        let scratch = scratch_len(&shape, meta.len() / 2, max_keys, Some(64)).max(1);
        Self {
            shape,
            q: ctx.upload_f32(q, &[q.len()]).unwrap(),
            meta: ctx.upload(meta, DType::U32, &[meta.len()]).unwrap(),
            max_keys,
            scratch: ctx.zeros(DType::F32, &[scratch]).unwrap(),
            scale: 1.0 / (shape.head_dim as f32).sqrt(),
        }
    }

    /// The attention of these rows over `cache` with `kernel`, in splits of 64 keys.
    fn run(&self, ctx: &Context, cache: &KvCache, kernel: Attend) -> Vec<f32> {
        let n = self.q.len();
        let out = ctx.upload_f32(&vec![f32::NAN; n], &[n]).unwrap();
        let mut rec = ctx.recorder();
        attention_in(
            &mut rec,
            &self.shape,
            &self.q,
            &self.meta,
            self.max_keys,
            cache,
            &out,
            &self.scratch,
            self.scale,
            Some(64),
            kernel,
        )
        .unwrap();
        rec.submit().unwrap();
        ctx.read::<f32>(&out).unwrap()
    }
}

/// Bitwise equality, naming the first value that differs.
fn same(label: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{label}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!("{label}: value {i} of {} is {} and {}", a.len(), a[i], b[i]);
    }
}
