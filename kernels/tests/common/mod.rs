//! Helpers shared by the kernel tests: seeded random data, random packed weights, comparisons.
#![allow(dead_code)]

use half::f16;
use kiln_kernels::linear::{Kernel, Layout};
use kiln_kernels::{BlockOrder, DevicePlan, HostWeights, WeightFormat, Weights};
use kiln_runtime::{Context, DeviceOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use kiln_runtime::testing::test_context;

/// A context of the test's own, the adapter the shared one uses with SHADER_INT64 refused when
/// `without_int64` (the u32 paths of the CPU layouts; lavapipe grants int64), or `None` where GPU
/// tests are skipped. Its own, too, where tests running beside it must not share its pools.
pub fn own_context(without_int64: bool) -> Option<Context> {
    let shared = test_context()?;
    eprintln!(
        "SHADER_INT64 granted to the shared context: {}",
        shared.features.int64
    );
    let mut options = DeviceOptions::from_env().unwrap();
    options.disable_int64 = without_int64;
    let ctx = Context::new(&options).unwrap();
    assert!(!without_int64 || !ctx.features.int64);
    Some(ctx)
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn rand_vec(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Random weights of `format` with `n` rows of `k` values: random quants and plausible scales.
pub fn random_weights(rng: &mut StdRng, format: WeightFormat, n: usize, k: usize) -> HostWeights {
    let half = |v: f32| f16::from_f32(v).to_le_bytes();
    match format {
        WeightFormat::F32 => HostWeights::f32(n, k, &rand_vec(rng, n * k, -1.0, 1.0)).unwrap(),
        WeightFormat::F16 => {
            let v: Vec<f16> = rand_vec(rng, n * k, -1.0, 1.0)
                .into_iter()
                .map(f16::from_f32)
                .collect();
            HostWeights::f16(n, k, &v).unwrap()
        }
        WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
            let mut data = Vec::new();
            for b in 0..n * k / 32 {
                // Scales of either sign, and now and then one of f16's subnormals (< 6.1e-5).
                let d = match b % 11 {
                    3 => -rng.random_range(0.002..0.05),
                    7 => rng.random_range(1e-6..5e-5),
                    _ => rng.random_range(0.002..0.05),
                };
                data.extend(half(d));
                if format == WeightFormat::Q4_1 {
                    data.extend(half(rng.random_range(-0.4..0.1)));
                }
                let quant_bytes = if format == WeightFormat::Q8_0 { 32 } else { 16 };
                data.extend((0..quant_bytes).map(|_| rng.random::<u8>()));
            }
            HostWeights::new(format, n, k, data).unwrap()
        }
        WeightFormat::BF16 => {
            let bits: Vec<u8> = rand_vec(rng, n * k, -1.0, 1.0)
                .into_iter()
                .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
            HostWeights::new(format, n, k, bits).unwrap()
        }
        WeightFormat::Q5_0
        | WeightFormat::Q5_1
        | WeightFormat::Q2_K
        | WeightFormat::Q3_K
        | WeightFormat::Q4_K
        | WeightFormat::Q5_K
        | WeightFormat::Q6_K => {
            let blocks = random_blocks(rng, format, n * k / format.block_values());
            HostWeights::new(format, n, k, blocks).unwrap()
        }
        WeightFormat::Int8 { group, zero_point } => {
            let q: Vec<i8> = (0..n * k).map(|_| rng.random::<i8>()).collect();
            let groups = n * k.div_ceil(group);
            let scales = rand_vec(rng, groups, 0.001, 0.02);
            let zeros = zero_point.then(|| {
                (0..groups)
                    .map(|_| rng.random_range(-20i32..20) as f32)
                    .collect()
            });
            HostWeights::int8(n, k, group, &q, scales, zeros).unwrap()
        }
    }
}

/// A plausible magnitude for a block format's d.
fn scale_size(format: WeightFormat) -> f32 {
    match format {
        WeightFormat::Q2_K => 0.02,
        WeightFormat::Q3_K => 0.005,
        WeightFormat::Q4_K | WeightFormat::Q5_K => 0.002,
        WeightFormat::Q6_K => 0.0005,
        _ => 0.05,
    }
}

/// `count` GGUF blocks of `format`: every quant and scale byte random (or, with `patterned`,
/// block j < 256 all bytes j, so that every bit pattern of every field appears), the f16
/// super-scales plausible, of either sign, now and then subnormal.
pub fn blocks_of(rng: &mut StdRng, format: WeightFormat, count: usize, patterned: bool) -> Vec<u8> {
    let size = format.block_bytes().unwrap();
    let (halves, scale) = (format.scale_fields(), scale_size(format));
    let mut data = Vec::with_capacity(count * size);
    for b in 0..count {
        let mut block: Vec<u8> = if patterned && b < 256 {
            vec![b as u8; size]
        } else {
            (0..size).map(|_| rng.random::<u8>()).collect()
        };
        for (i, &at) in halves.iter().enumerate() {
            let v = match (b + i) % 11 {
                3 => -rng.random_range(0.1..1.0) * scale,
                7 => rng.random_range(1e-6..5e-5),
                _ => rng.random_range(0.1..1.0) * scale,
            };
            block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
        data.extend(block);
    }
    data
}

/// `count` random GGUF blocks of a format the device keeps whole ([`blocks_of`]).
pub fn random_blocks(rng: &mut StdRng, format: WeightFormat, count: usize) -> Vec<u8> {
    blocks_of(rng, format, count, false)
}

/// The formats that can hold rows of `k` values.
pub fn formats_for(k: usize) -> Vec<WeightFormat> {
    let mut f = vec![
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Int8 {
            group: k,
            zero_point: false,
        },
    ];
    if k.is_multiple_of(4) && k > 4 {
        f.push(WeightFormat::Int8 {
            group: 4 * k.div_ceil(8).div_ceil(4).max(1),
            zero_point: true,
        });
    }
    if k.is_multiple_of(32) {
        f.extend([
            WeightFormat::Q8_0,
            WeightFormat::Q4_0,
            WeightFormat::Q4_1,
            WeightFormat::Q5_0,
            WeightFormat::Q5_1,
        ]);
    }
    if k.is_multiple_of(256) {
        f.extend([
            WeightFormat::Q2_K,
            WeightFormat::Q3_K,
            WeightFormat::Q4_K,
            WeightFormat::Q5_K,
            WeightFormat::Q6_K,
        ]);
    }
    f.push(WeightFormat::BF16);
    f
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let ok = err <= atol + rtol * w.abs();
        if !ok || g.is_nan() != w.is_nan() {
            let excess = if err.is_nan() { f32::INFINITY } else { err };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: element {i}: got {} want {} (err {err}, atol {atol}, rtol {rtol})",
            got[i], want[i]
        );
    }
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `host` on the device, in row parts of `part_rows` rows when given (as matrices over the
/// binding limit are stored), with `bias` when given.
pub fn upload_weights(
    ctx: &Context,
    host: &HostWeights,
    part_rows: Option<usize>,
    bias: Option<&[f32]>,
) -> Weights {
    upload_weights_ordered(ctx, host, part_rows, bias, None)
}

/// [`upload_weights`] with a block format's scales in `order` (`None`: the device's order).
pub fn upload_weights_ordered(
    ctx: &Context,
    host: &HostWeights,
    part_rows: Option<usize>,
    bias: Option<&[f32]>,
    order: Option<BlockOrder>,
) -> Weights {
    let limit = match part_rows {
        Some(rows) => (rows * host.format.device_row_bytes(host.k)) as u64,
        None => ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size),
    };
    let order = order.unwrap_or(DevicePlan::of(ctx).block_order(host.format.has_lane_tiles()));
    let mut w = Weights::upload_ordered(ctx, host, limit, order).unwrap();
    if let Some(b) = bias {
        w = w.with_bias(ctx, b).unwrap();
    }
    w
}

/// Every kernel the device runs for a product, `None` standing for `linear`'s own pick: the
/// matmul and the mat-vec in every supported layout (folding norms where the layout can).
pub fn kernels_of(ctx: &Context) -> Vec<Option<Kernel>> {
    let mut all = vec![None, Some(Kernel::Matmul), Some(Kernel::MatmulSplitK(3))];
    for layout in Layout::ALL {
        if layout.supported(ctx) {
            all.push(Some(matvec_in(layout)));
        } else {
            eprintln!("not run: matvec layout {layout:?} (no subgroups of 8)");
        }
    }
    all
}

/// The mat-vec in `layout`, folding an RMSNorm where the layout can.
pub fn matvec_in(layout: Layout) -> Kernel {
    Kernel::Matvec {
        layout,
        fold_norm: true,
    }
}
