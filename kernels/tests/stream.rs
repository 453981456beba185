//! Streaming bandwidth kernels against their CPU references on ragged lengths (scalar, vec4 and,
//! where SHADER_INT64 is granted, u64 variants; one workgroup to more than the grid covers in one
//! pass), and the GPU timer.

mod common;

use common::*;
use kiln_kernels::stream::{MAX_GROUPS, copy, read, read_partials, read_ref};
use kiln_runtime::{BindGroupCache, DType};

/// Copy is exact; the read kernel's sum is within 1e-5 · Σ|x| of the f64 sum (f32 partial sums).
#[test]
fn copy_and_read_match_reference() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(11);
    // 1, primes, vec4 and scalar lengths, and lengths past MAX_GROUPS · 256 (threads stride).
    for len in [
        1,
        3,
        4,
        97,
        256,
        1021,
        1024,
        4099,
        MAX_GROUPS * 256 * 4 + 12,
        MAX_GROUPS * 256 * 8 + 16,
        600_001,
    ] {
        // Whole numbers 1..=8: every partial sum is exact in f32 (under 2^24), so the read must
        // equal the reference exactly, and a dropped or doubled element changes it.
        let x: Vec<f32> = rand_vec(&mut rng, len, 0.0, 8.0)
            .iter()
            .map(|v| v.floor() + 1.0)
            .collect();
        let xt = ctx.upload_f32(&x, &[len]).unwrap();
        let yt = ctx.zeros(DType::F32, &[len]).unwrap();
        let partial = ctx.zeros(DType::F32, &[read_partials(len)]).unwrap();
        let mut rec = ctx.recorder();
        copy(&mut rec, &xt, &yt).unwrap();
        read(&mut rec, &xt, &partial).unwrap();
        rec.submit().unwrap();
        assert_eq!(ctx.read::<f32>(&yt).unwrap(), x, "copy of {len}");
        let sum: f64 = ctx
            .read::<f32>(&partial)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .sum();
        assert_eq!(sum, read_ref(&x), "read of {len}");
    }
}

#[test]
fn mismatched_lengths_are_errors() {
    let Some(ctx) = test_context() else { return };
    let x = ctx.zeros(DType::F32, &[10]).unwrap();
    let y = ctx.zeros(DType::F32, &[9]).unwrap();
    let mut rec = ctx.recorder();
    let e = copy(&mut rec, &x, &y).unwrap_err();
    assert!(e.to_string().contains("10 elements"), "{e}");
    let e = read(&mut rec, &x, &y).unwrap_err();
    assert!(e.to_string().contains("partial"), "{e}");
}

/// The timer returns one positive time per repetition, and a longer copy takes longer.
#[test]
fn timer_measures_recorded_work() {
    let Some(ctx) = test_context() else { return };
    let time = |len: usize| {
        let x = ctx.zeros(DType::F32, &[len]).unwrap();
        let y = ctx.zeros(DType::F32, &[len]).unwrap();
        ctx.time(3, |rec| copy(rec, &x, &y)).unwrap()
    };
    let (short, long) = (time(1 << 10), time(1 << 24));
    assert_eq!(short.seconds.len(), 3);
    assert!(short.seconds.iter().all(|&s| s > 0.0), "{short:?}");
    assert!(long.median() > short.median(), "{short:?} {long:?}");
    eprintln!(
        "{} clock: 4 KiB copy {:.1} us, 64 MiB copy {:.2} ms",
        short.clock,
        short.median() * 1e6,
        long.median() * 1e3
    );
}

/// A recorder made with a bind-group cache reuses the groups of a repeated dispatch (one entry
/// for the same buffers, wherever its parameters land), makes new ones for other buffers, and sees
/// new data and parameters in the reused ones. Its own context: tests running beside it would
/// take the shared context's pooled parameter chunks and change which one a step gets.
#[test]
fn cached_bind_groups_are_reused_and_stay_correct() {
    let Some(ctx) = &own_context(false) else {
        return;
    };
    let cache = BindGroupCache::new();
    let x = ctx.upload_f32(&[1.0, 2.0, 3.0], &[3]).unwrap();
    let y = ctx.zeros(DType::F32, &[3]).unwrap();
    let z = ctx.zeros(DType::F32, &[3]).unwrap();
    for round in 0..3 {
        let values = [round as f32, 5.0, -1.0];
        ctx.write(&x, &values).unwrap();
        let mut rec = ctx.recorder_cached(&cache);
        copy(&mut rec, &x, &y).unwrap();
        rec.submit().unwrap();
        assert_eq!(ctx.read::<f32>(&y).unwrap(), values, "round {round}");
        assert_eq!(cache.len(), 1, "round {round}");
    }
    let mut rec = ctx.recorder_cached(&cache);
    copy(&mut rec, &x, &y).unwrap();
    copy(&mut rec, &y, &z).unwrap();
    rec.submit().unwrap();
    assert_eq!(ctx.read::<f32>(&z).unwrap(), [2.0, 5.0, -1.0]);
    // The second copy binds other buffers.
    assert_eq!(cache.len(), 2);
    // The same launches in the other order place their parameters elsewhere in the chunk; the
    // offset is given at launch time, so the same two groups serve them.
    ctx.write(&x, &[7.0f32, 8.0, 9.0]).unwrap();
    let mut rec = ctx.recorder_cached(&cache);
    copy(&mut rec, &y, &z).unwrap();
    copy(&mut rec, &x, &y).unwrap();
    rec.submit().unwrap();
    assert_eq!(ctx.read::<f32>(&z).unwrap(), [2.0, 5.0, -1.0]);
    assert_eq!(ctx.read::<f32>(&y).unwrap(), [7.0, 8.0, 9.0]);
    assert_eq!(cache.len(), 2);
    cache.clear();
    assert!(cache.is_empty());
}
