//! Timing a kernel alongside the peak stream: one kernel run per copy, and a usable ceiling.

use kiln_benches::roofline::PeakStream;
use kiln_kernels::elementwise::add;
use kiln_runtime::DType;
use kiln_runtime::testing::test_context;

#[test]
fn kernels_are_timed_between_copies_of_the_peak_stream() {
    let Some(ctx) = test_context() else { return };
    let peak = PeakStream::new(ctx, 1 << 20).unwrap();
    assert_eq!(peak.bytes(), 2 << 20);
    let a = ctx.upload_f32(&[1.0; 256], &[256]).unwrap();
    let out = ctx.zeros(DType::F32, &[256]).unwrap();
    let mut runs = 0;
    let (t, ceiling) = peak
        .alongside(ctx, 3, |rec| {
            runs += 1;
            add(rec, &a, &a, &out)
        })
        .unwrap();
    // One warm-up run, then one per repetition.
    assert_eq!(runs, 4);
    assert_eq!(t.seconds.len(), 3);
    assert!(t.seconds.iter().all(|s| *s > 0.0), "{t:?}");
    assert!(ceiling.is_finite() && ceiling > 0.0, "{ceiling}");
    assert_eq!(ctx.read::<f32>(&out).unwrap(), vec![2.0; 256]);
}
