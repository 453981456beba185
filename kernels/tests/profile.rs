//! Kernel profiles: every dispatch recorded while a profile is open is counted under its kernel
//! variant, the results stay correct, and nothing is counted once it is closed; with the
//! timestamps inside the pass and, where that is refused, between passes.

mod common;

use common::*;
use kiln_kernels::elementwise::add;
use kiln_kernels::norm::{rms_norm, rms_norm_ref};
use kiln_runtime::{Context, DType, DeviceOptions};

fn profile_counts_each_dispatch_under_its_kernel(ctx: &Context) {
    if !ctx.features.timestamps {
        assert!(ctx.profile_begin().is_err());
        return;
    }
    let x: Vec<f32> = (0..64 * 576).map(|i| (i % 13) as f32 - 6.0).collect();
    let gamma = vec![0.5f32; 576];
    let (xt, gt) = (
        ctx.upload_f32(&x, &[64, 576]).unwrap(),
        ctx.upload_f32(&gamma, &[576]).unwrap(),
    );
    let (sum, normed) = (
        ctx.zeros(DType::F32, &[64, 576]).unwrap(),
        ctx.zeros(DType::F32, &[64, 576]).unwrap(),
    );
    ctx.profile_begin().unwrap();
    // Five submits of three dispatches: the time each takes less a timestamp's own cost is
    // near zero for a small kernel on a noisy machine, not for all fifteen.
    for _ in 0..5 {
        let mut rec = ctx.recorder();
        add(&mut rec, &xt, &xt, &sum).unwrap();
        rms_norm(&mut rec, &sum, &gt, &normed, 1e-5).unwrap();
        add(&mut rec, &xt, &xt, &sum).unwrap();
        rec.submit().unwrap();
    }
    // Timing work does not go into the profile.
    ctx.time(2, |rec| add(rec, &xt, &xt, &sum)).unwrap();
    let profile = ctx.profile_end();

    assert_eq!(profile.launches(), 15, "{profile:?}");
    assert_eq!(profile.unmeasured, 0);
    let kernels: Vec<(&str, usize)> = profile
        .kernels
        .iter()
        .map(|k| (k.kernel.as_str(), k.launches))
        .collect();
    assert_eq!(kernels, [("elementwise:add", 10), ("norm:rms_norm", 5)]);
    assert!(
        profile
            .kernels
            .iter()
            .all(|k| k.seconds.is_finite() && k.seconds >= 0.0)
    );
    assert!(profile.seconds() > 0.0, "{profile:?}");
    // Timed dispatches compute what untimed ones do.
    let doubled: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    assert_close("sum", &ctx.read::<f32>(&sum).unwrap(), &doubled, 0.0, 0.0);
    let want = rms_norm_ref(&doubled, &gamma, 1e-5);
    let got = ctx.read::<f32>(&normed).unwrap();
    assert_close("rms_norm", &got, &want, 1e-5, 1e-4);

    // Closed: nothing more is counted, and closing again returns an empty profile.
    let mut rec = ctx.recorder();
    add(&mut rec, &xt, &xt, &sum).unwrap();
    rec.submit().unwrap();
    assert_eq!(ctx.profile_end().launches(), 0);
}

#[test]
fn profile_with_timestamps_inside_the_pass() {
    let Some(ctx) = own_context(false) else {
        return;
    };
    eprintln!("timestamps inside passes: {}", ctx.features.pass_timestamps);
    profile_counts_each_dispatch_under_its_kernel(&ctx);
}

#[test]
fn profile_with_timestamps_between_passes() {
    if test_context().is_none() {
        return;
    }
    let mut options = DeviceOptions::from_env().unwrap();
    options.disable_pass_timestamps = true;
    let ctx = Context::new(&options).unwrap();
    assert!(!ctx.features.pass_timestamps);
    profile_counts_each_dispatch_under_its_kernel(&ctx);
}
