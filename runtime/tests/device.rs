//! Device-level checks on whatever adapter the environment selects (lavapipe on CI).

use kiln_runtime::testing::test_context;
use kiln_runtime::{DType, DeviceOptions, RuntimeError, device::parse_backends};

#[test]
fn upload_and_read_back_round_trip() {
    let Some(ctx) = test_context() else { return };
    // Odd byte counts exercise the 4-byte padding.
    for n in [1usize, 3, 7, 1021] {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
        let t = ctx.upload_bytes(&bytes).unwrap();
        assert_eq!(ctx.read::<u8>(&t).unwrap(), bytes);
    }
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let t = ctx.upload_f32(&data, &[10, 100]).unwrap();
    assert_eq!(ctx.read::<f32>(&t).unwrap(), data);
    let halves: Vec<half::f16> = (0..5).map(|i| half::f16::from_f32(i as f32)).collect();
    let t = ctx.upload(&halves, DType::F16, &[5]).unwrap();
    assert_eq!(ctx.read::<half::f16>(&t).unwrap(), halves);
}

#[test]
fn requests_real_limits_and_reports_features() {
    let Some(ctx) = test_context() else { return };
    let defaults = kiln_runtime::wgpu::Limits::default();
    assert!(ctx.limits.max_storage_buffer_binding_size >= defaults.max_storage_buffer_binding_size);
    assert!(!ctx.describe().is_empty());
    eprintln!(
        "features: {:?}, limits: storage binding {} B, buffer {} B, workgroup storage {} B",
        ctx.features,
        ctx.limits.max_storage_buffer_binding_size,
        ctx.limits.max_buffer_size,
        ctx.limits.max_compute_workgroup_storage_size
    );
}

#[test]
fn oversized_requests_name_the_limit() {
    let Some(ctx) = test_context() else { return };
    let too_big = ctx.limits.max_buffer_size as usize + 4;
    match ctx.zeros(DType::U8, &[too_big]) {
        Err(RuntimeError::LimitExceeded {
            limit,
            requested,
            max,
            ..
        }) => {
            assert_eq!(limit, "max_buffer_size");
            assert!(requested > max);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    assert_eq!(ctx.fold_grid(max).unwrap(), (max, 1));
    let (x, y) = ctx.fold_grid(max + 1).unwrap();
    assert!(x <= max && y == 2 && x * y > max);
    assert!(matches!(
        ctx.fold_grid(u32::MAX),
        Err(RuntimeError::LimitExceeded { .. })
    ));
}

#[test]
fn write_checks_the_byte_count() {
    let Some(ctx) = test_context() else { return };
    let t = ctx.zeros(DType::F32, &[4]).unwrap();
    assert!(matches!(
        ctx.write(&t, &[1.0f32; 3]),
        Err(RuntimeError::Shape { .. })
    ));
}

#[test]
fn backend_names_parse_and_unknown_ones_are_errors() {
    use kiln_runtime::wgpu::Backends;
    assert_eq!(parse_backends("vulkan").unwrap(), Backends::VULKAN);
    assert_eq!(
        parse_backends("Metal, dx12").unwrap(),
        Backends::METAL | Backends::DX12
    );
    assert!(matches!(
        parse_backends("cuda"),
        Err(RuntimeError::UnknownBackend(_))
    ));
    let opts = DeviceOptions {
        adapter: Some("no such adapter xyz".into()),
        ..Default::default()
    };
    assert!(matches!(
        kiln_runtime::Context::new(&opts),
        Err(RuntimeError::NoAdapter { .. })
    ));
}

/// Recordings alive at once (sessions on two threads) never share a scratch buffer; a later
/// recording reuses the one handed back, grown where it asks for more.
#[test]
fn scratch_is_one_recordings_alone() {
    let Some(ctx) = test_context() else { return };
    let (mut a, mut b) = (ctx.recorder(), ctx.recorder());
    let (sa, sb) = (a.scratch(100).unwrap(), b.scratch(100).unwrap());
    assert_ne!(sa.buffer(), sb.buffer());
    assert_eq!(
        a.scratch(50).unwrap().buffer(),
        sa.buffer(),
        "reused within a recording"
    );
    assert!(
        a.scratch(1000).unwrap().len() >= 1000,
        "grown by replacement"
    );
    drop((a, b));
    let mut c = ctx.recorder();
    assert!(
        c.scratch(10).unwrap().len() >= 1000,
        "the largest one handed back"
    );
}
