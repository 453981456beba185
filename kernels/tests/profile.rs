//! Kernel profiles: every dispatch recorded while a profile is open is counted under its kernel
//! variant, the results stay correct, and nothing is counted once it is closed.

mod common;

use common::*;
use kiln_kernels::elementwise::add;
use kiln_kernels::norm::{rms_norm, rms_norm_ref};
use kiln_runtime::DType;

#[test]
fn profile_counts_each_dispatch_under_its_kernel() {
    let Some(ctx) = test_context() else { return };
    if !ctx.features.timestamps {
        assert!(ctx.profile_begin().is_err());
        return;
    }
    let x: Vec<f32> = (0..576).map(|i| (i % 13) as f32 - 6.0).collect();
    let gamma = vec![0.5f32; 576];
    let (xt, gt) = (
        ctx.upload_f32(&x, &[1, 576]).unwrap(),
        ctx.upload_f32(&gamma, &[576]).unwrap(),
    );
    let (sum, normed) = (
        ctx.zeros(DType::F32, &[1, 576]).unwrap(),
        ctx.zeros(DType::F32, &[1, 576]).unwrap(),
    );
    ctx.profile_begin().unwrap();
    let mut rec = ctx.recorder();
    add(&mut rec, &xt, &xt, &sum).unwrap();
    rms_norm(&mut rec, &sum, &gt, &normed, 1e-5).unwrap();
    add(&mut rec, &xt, &xt, &sum).unwrap();
    rec.submit().unwrap();
    let profile = ctx.profile_end();

    assert_eq!(profile.launches(), 3, "{profile:?}");
    assert_eq!(profile.unmeasured, 0);
    let kernels: Vec<(&str, usize)> = profile
        .kernels
        .iter()
        .map(|k| (k.kernel.as_str(), k.launches))
        .collect();
    assert_eq!(kernels, [("elementwise:add", 2), ("norm:rms_norm", 1)]);
    assert!(
        profile
            .kernels
            .iter()
            .all(|k| k.seconds.is_finite() && k.seconds >= 0.0)
    );
    assert!(profile.seconds() > 0.0);
    // Timed dispatches compute what untimed ones do.
    let doubled: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    assert_close("sum", &ctx.read::<f32>(&sum).unwrap(), &doubled, 0.0, 0.0);
    let want = rms_norm_ref(&doubled, &gamma, 1e-5);
    assert_close(
        "rms_norm",
        &ctx.read::<f32>(&normed).unwrap(),
        &want,
        1e-5,
        1e-4,
    );

    // Closed: nothing more is counted, and closing again returns an empty profile.
    let mut rec = ctx.recorder();
    add(&mut rec, &xt, &xt, &sum).unwrap();
    rec.submit().unwrap();
    assert_eq!(ctx.profile_end().launches(), 0);
}
