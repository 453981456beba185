//! matmul (prefill) and matvec (decode) against the CPU reference, for every weight format, on
//! ragged shapes. Tolerance: |gpu − ref| ≤ 2e-6 · K · max|x| · max|w| + 1e-6 (f32 accumulation of K
//! products against an f64 reference); the reference dequantizes on the CPU independently.

mod common;

use common::*;
use kiln_kernels::elementwise::silu_ref;
use kiln_kernels::linear::{
    Input, Kernel, Layout, MAX_BATCH, Output, Store, linear, linear_by, matmul_ref, matmul_splits,
};
use kiln_kernels::{BlockOrder, DevicePlan, F16Read, KernelError, WeightFormat, Weights};
use kiln_runtime::{Context, DType};

/// One comparison: `kernel` (`None`: the one `linear` picks) on an `m × k` input against
/// `n × k` random weights of `format`.
struct Case {
    format: WeightFormat,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    kernel: Option<Kernel>,
    /// How f16 weights are read (`None`: the device's own choice).
    f16_read: Option<F16Read>,
    /// Store the weights in parts of this many rows (as a matrix over the binding limit is).
    part_rows: Option<usize>,
    /// The order of a block format's quants and scales (`None`: the device's own).
    block_order: Option<BlockOrder>,
}

fn check(ctx: &Context, seed: u64, case: Case) {
    let Case {
        format,
        m,
        n,
        k,
        bias,
        kernel,
        f16_read,
        part_rows,
        block_order,
    } = case;

    let mut rng = rng(seed);
    let host = random_weights(&mut rng, format, n, k);
    let x = rand_vec(&mut rng, m * k, -1.0, 1.0);
    let b = bias.then(|| rand_vec(&mut rng, n, -1.0, 1.0));
    let wf = host.dequantize();
    let want = matmul_ref(&x, &wf, b.as_deref(), m, n, k);

    let mut w = upload_weights_ordered(ctx, &host, part_rows, b.as_deref(), block_order);
    if let Some(read) = f16_read {
        w = w.force_f16_read(read);
    }
    let xt = ctx.upload_f32(&x, &[m, k]).unwrap();
    let yt = ctx.upload_f32(&vec![f32::NAN; m * n], &[m, n]).unwrap(); // poisoned: every element must be written
    let mut rec = ctx.recorder();
    let (input, output) = (Input::Rows(&xt), Output::write(&yt));
    match kernel {
        Some(kernel) => linear_by(&mut rec, input, &w, output, kernel).unwrap(),
        None => linear(&mut rec, input, &w, output).unwrap(),
    }
    rec.submit().unwrap();
    let got = ctx.read::<f32>(&yt).unwrap();
    let atol = 2e-6 * k as f32 * max_abs(&x) * max_abs(&wf) + 1e-6;
    assert_close(
        &format!(
            "{kernel:?} {format:?} m{m} n{n} k{k} bias {bias} f16 read {f16_read:?} parts of {part_rows:?} rows, block order {block_order:?}"
        ),
        &got,
        &want,
        atol,
        0.0,
    );
}

const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (9, 1, 64),
    (3, 5, 7),
    (17, 31, 64),
    (65, 67, 96),
    (64, 64, 64),
    (13, 129, 131),
    (71, 97, 160),
    (130, 200, 288),
    (33, 45, 512),
];

#[test]
fn matmul_matches_reference_for_every_format() {
    let Some(ctx) = test_context() else { return };
    for (i, &(m, n, k)) in MATMUL_SHAPES.iter().enumerate() {
        for format in formats_for(k) {
            for block_order in block_orders(format) {
                check(
                    ctx,
                    100 + i as u64,
                    Case {
                        format,
                        m,
                        n,
                        k,
                        bias: i % 2 == 1,
                        kernel: Some(Kernel::Matmul),
                        f16_read: None,
                        part_rows: None,
                        block_order,
                    },
                );
            }
        }
    }
}

/// The matmul with K split over workgroups and the parts added by a second launch: split
/// counts from 2 to the most, on K that splits unevenly (a short last split, K not a multiple
/// of 16 or 4), tile-ragged M and N, with and without bias, and in row parts.
#[test]
fn split_k_matmul_matches_reference() {
    let Some(ctx) = test_context() else { return };
    for (i, &(m, n, k, splits, part_rows)) in [
        (1, 3, 70, 2, None),
        (17, 31, 200, 3, None),
        (65, 67, 131, 16, None),
        (13, 129, 576, 9, Some(100)),
        (5, 70, 1536, 16, None),
        (70, 9, 96, 2, Some(4)),
    ]
    .iter()
    .enumerate()
    {
        for format in formats_for(k) {
            check(
                ctx,
                800 + i as u64,
                Case {
                    format,
                    m,
                    n,
                    k,
                    bias: i % 2 == 1,
                    kernel: Some(Kernel::MatmulSplitK(splits)),
                    f16_read: None,
                    part_rows,
                    block_order: None,
                },
            );
        }
    }
}

/// Both block orders for Q4_1 and Q8_0 (each device uses one of them), the device's for the
/// rest.
fn block_orders(format: WeightFormat) -> Vec<Option<BlockOrder>> {
    if matches!(format, WeightFormat::Q4_1 | WeightFormat::Q8_0) {
        vec![Some(BlockOrder::Interleaved), Some(BlockOrder::LaneTiles)]
    } else {
        vec![None]
    }
}

#[test]
fn matvec_matches_reference_for_every_format_and_batch() {
    let Some(ctx) = test_context() else { return };
    let shapes: &[(usize, usize)] = &[
        (1, 1),
        (7, 13),
        (37, 96),
        (9, 64),
        (192, 64),
        (1000, 576),
        (129, 1031),
        (257, 1536),
    ];
    for (i, &(n, k)) in shapes.iter().enumerate() {
        let mut formats = formats_for(k);
        if k.is_multiple_of(32) && k > 64 {
            // int8 read by 32-value blocks, with a last group cut short where 64 ∤ K.
            formats.push(WeightFormat::Int8 {
                group: 64,
                zero_point: true,
            });
        }
        for format in formats {
            // Every batch size a launch takes on the smaller shapes, and past MAX_BATCH rows
            // (8 rows per launch) on all.
            let batches: Vec<usize> = if n * k <= 37 * 96 {
                (1..=MAX_BATCH).chain([2 * MAX_BATCH + 3]).collect()
            } else {
                vec![1, 3, MAX_BATCH, 2 * MAX_BATCH + 3]
            };
            for b in batches {
                for layout in Layout::ALL {
                    if !layout.supported(ctx) {
                        eprintln!("not run: matvec layout {layout:?} (no subgroups of 8)");
                        continue;
                    }
                    for block_order in block_orders(format) {
                        check(
                            ctx,
                            200 + i as u64 * 10 + b as u64,
                            Case {
                                format,
                                m: b,
                                n,
                                k,
                                bias: (i + b) % 2 == 0,
                                kernel: Some(matvec_in(layout)),
                                f16_read: None,
                                part_rows: None,
                                block_order,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// `Output::add` (through `linear`, and the matmul and every mat-vec layout directly) adds the
/// product and bias to what y holds: the residual add fused into the store.
#[test]
fn residual_add_stores_add_to_y() {
    let Some(ctx) = test_context() else { return };
    for (i, &(m, n, k)) in [(1, 7, 13), (3, 129, 96), (19, 37, 64)].iter().enumerate() {
        for format in formats_for(k) {
            let mut rng = rng(700 + i as u64);
            let host = random_weights(&mut rng, format, n, k);
            let x = rand_vec(&mut rng, m * k, -1.0, 1.0);
            let bias = rand_vec(&mut rng, n, -1.0, 1.0);
            let y0 = rand_vec(&mut rng, m * n, -1.0, 1.0);
            let wf = host.dequantize();
            let mut want = matmul_ref(&x, &wf, Some(&bias), m, n, k);
            for (v, y) in want.iter_mut().zip(&y0) {
                *v += y;
            }
            let w = upload_weights(ctx, &host, None, Some(&bias));
            let xt = ctx.upload_f32(&x, &[m, k]).unwrap();
            for kernel in kernels_of(ctx) {
                let yt = ctx.upload_f32(&y0, &[m, n]).unwrap();
                let mut rec = ctx.recorder();
                let (input, output) = (Input::Rows(&xt), Output::add(&yt));
                match kernel {
                    Some(kernel) => linear_by(&mut rec, input, &w, output, kernel).unwrap(),
                    None => linear(&mut rec, input, &w, output).unwrap(),
                }
                rec.submit().unwrap();
                let got = ctx.read::<f32>(&yt).unwrap();
                let atol = 2e-6 * k as f32 * max_abs(&x) * max_abs(&wf) + 1e-5;
                assert_close(
                    &format!("{kernel:?} add {format:?} m{m} n{n} k{k}"),
                    &got,
                    &want,
                    atol,
                    0.0,
                );
            }
        }
    }
}

/// A gated input (`Input::SwiGlu`) through `linear`, the matmul (made first) and the mat-vec in
/// every layout (made as it reads): y (+)= (silu(gate) ⊙ up) · Wᵀ against the reference of the
/// activation made on the CPU, over batches that chunk (19 rows).
#[test]
fn gated_input_matches_reference() {
    let Some(ctx) = test_context() else { return };
    for (i, &(m, n, k)) in [(1, 7, 13), (3, 129, 96), (19, 37, 64)].iter().enumerate() {
        for format in formats_for(k) {
            let mut rng = rng(800 + i as u64);
            let host = random_weights(&mut rng, format, n, k);
            let gate = rand_vec(&mut rng, m * k, -4.0, 4.0);
            let up = rand_vec(&mut rng, m * k, -1.0, 1.0);
            let y0 = rand_vec(&mut rng, m * n, -1.0, 1.0);
            let act: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(&g, &u)| silu_ref(g) * u)
                .collect();
            let wf = host.dequantize();
            let product = matmul_ref(&act, &wf, None, m, n, k);
            let w = upload_weights(ctx, &host, None, None);
            let (gt, ut) = (
                ctx.upload_f32(&gate, &[m, k]).unwrap(),
                ctx.upload_f32(&up, &[m, k]).unwrap(),
            );
            let scratch = ctx.zeros(DType::F32, &[m * k]).unwrap();
            let mut runs: Vec<(Option<Kernel>, Store)> = vec![(None, Store::Write)];
            runs.extend(kernels_of(ctx).into_iter().map(|k| (k, Store::Add)));
            for (kernel, store) in runs {
                let yt = ctx.upload_f32(&y0, &[m, n]).unwrap();
                let mut rec = ctx.recorder();
                let input = Input::SwiGlu {
                    gate: &gt,
                    up: &ut,
                    act: &scratch,
                };
                let output = Output::split(&[&yt], store);
                match kernel {
                    Some(kernel) => linear_by(&mut rec, input, &w, output, kernel).unwrap(),
                    None => linear(&mut rec, input, &w, output).unwrap(),
                }
                rec.submit().unwrap();
                let want: Vec<f32> = match store {
                    Store::Write => product.clone(),
                    Store::Add => product.iter().zip(&y0).map(|(p, y)| p + y).collect(),
                };
                let atol = 2e-6 * k as f32 * max_abs(&act) * max_abs(&wf) + 1e-5;
                assert_close(
                    &format!("{kernel:?} {store:?} {format:?} m{m} n{n} k{k}"),
                    &ctx.read::<f32>(&yt).unwrap(),
                    &want,
                    atol,
                    0.0,
                );
            }
        }
    }
}

/// The shared context reads block weights as u64 where SHADER_INT64 is granted (lavapipe grants
/// it); a device refusing it checks the u32 reads of the CPU layouts.
#[test]
fn matvec_matches_reference_without_int64() {
    let Some(ctx) = own_context(true) else { return };
    for (i, &(n, k)) in [(7usize, 32usize), (129, 1031), (257, 576)]
        .iter()
        .enumerate()
    {
        for format in formats_for(k) {
            for b in [1, 3] {
                for layout in [Layout::Rows, Layout::RowsShared] {
                    if !layout.supported(&ctx) {
                        eprintln!("not run: matvec layout {layout:?} (no subgroups of 8)");
                        continue;
                    }
                    for block_order in block_orders(format) {
                        check(
                            &ctx,
                            500 + i as u64 * 10 + b as u64,
                            Case {
                                format,
                                m: b,
                                n,
                                k,
                                bias: b == 3,
                                kernel: Some(matvec_in(layout)),
                                f16_read: None,
                                part_rows: None,
                                block_order,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// Every way of reading f16 the device runs (native halves, packed words, quads), through the mat-vec (1 and 4 rows) and the matmul (70 rows).
#[test]
fn f16_weights_match_through_every_read() {
    let Some(ctx) = test_context() else { return };
    let reads = [F16Read::Native, F16Read::Packed, F16Read::Quads];
    for (m, n, k) in [(1, 33, 17), (4, 64, 96), (70, 45, 36), (1, 7, 1028)] {
        for read in reads.into_iter().filter(|r| r.supported(ctx, k)) {
            check(
                ctx,
                300 + m as u64,
                Case {
                    format: WeightFormat::F16,
                    m,
                    n,
                    k,
                    bias: false,
                    kernel: None,
                    f16_read: Some(read),
                    part_rows: None,
                    block_order: None,
                },
            );
        }
    }
    eprintln!(
        "f16 reads run: {:?}",
        reads
            .iter()
            .filter(|r| r.supported(ctx, 96))
            .collect::<Vec<_>>()
    );
}

/// `linear` takes decode rows (≤ 8) through a mat-vec kernel on every plan, and more rows of a
/// block format through the row-wise mat-vec on the CPU plan and the tiled matmul on the GPU plan:
/// the kernels each recording launched say which ran. Then the values at SmolLM2's decode shape.
#[test]
fn linear_routes_by_row_count_and_large_decode_shape_matches() {
    let Some(ctx) = test_context() else { return };
    let plan = DevicePlan::of(ctx);
    let w = upload_weights(
        ctx,
        &random_weights(&mut rng(402), WeightFormat::Q8_0, 96, 576),
        None,
        None,
    );
    for m in [1, MAX_BATCH, MAX_BATCH + 1, 40] {
        let (x, y) = (
            ctx.zeros(DType::F32, &[m, 576]).unwrap(),
            ctx.zeros(DType::F32, &[m, 96]).unwrap(),
        );
        let mut rec = ctx.recorder();
        linear(&mut rec, Input::Rows(&x), &w, Output::write(&y)).unwrap();
        let want = match (m <= MAX_BATCH, plan.kind) {
            (true, kiln_runtime::PlanKind::Gpu) => vec![("matvec_gpu", "matvec_gpu")],
            // The GPU plan splits K over this product's two tiles, and adds the splits up.
            (false, kiln_runtime::PlanKind::Gpu) => {
                assert!(
                    matmul_splits(ctx, m, &w) > 1,
                    "{m} rows of 96 x 576 unsplit"
                );
                vec![("matmul", "matmul"), ("matmul_reduce", "matmul_reduce")]
            }
            // As many mat-vec launches as its passes over the rows take.
            (_, kiln_runtime::PlanKind::Cpu) => vec![("matvec", "matvec"); rec.launched().len()],
        };
        assert!(
            !want.is_empty() && rec.launched() == want,
            "{m} rows on the {} plan launched {:?}, not {want:?}",
            plan.kind,
            rec.launched()
        );
    }
    // SmolLM2's FFN down projection at decode (Q4_1, 576 x 1536) and a prefill-sized batch.
    check(
        ctx,
        400,
        Case {
            format: WeightFormat::Q4_1,
            m: 1,
            n: 576,
            k: 1536,
            bias: false,
            kernel: None,
            f16_read: None,
            part_rows: None,
            block_order: None,
        },
    );
    check(
        ctx,
        401,
        Case {
            format: WeightFormat::Q8_0,
            m: MAX_BATCH + 1,
            n: 96,
            k: 576,
            bias: true,
            kernel: None,
            f16_read: None,
            part_rows: None,
            block_order: None,
        },
    );
}

/// Matrices stored in row parts (how one over the binding limit is kept): each part's launch
/// writes its own columns, for prefill and decode, with a bias split alongside.
#[test]
fn split_matrices_match_reference() {
    let Some(ctx) = test_context() else { return };
    for (i, &(m, n, k, part_rows)) in [
        (1, 97, 64, 10),
        (3, 130, 96, 64),
        (MAX_BATCH, 65, 32, 1),
        (70, 131, 64, 50),
        (9, 200, 160, 199),
    ]
    .iter()
    .enumerate()
    {
        for format in formats_for(k) {
            // Both kernels explicitly: which one `linear` picks depends on the device.
            let plan = DevicePlan::of(ctx);
            for kernel in [Kernel::Matmul, matvec_in(plan.matvec)] {
                check(
                    ctx,
                    500 + i as u64,
                    Case {
                        format,
                        m,
                        n,
                        k,
                        bias: i % 2 == 0,
                        kernel: Some(kernel),
                        f16_read: None,
                        part_rows: Some(part_rows),
                        block_order: None,
                    },
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(9);
    let host = random_weights(&mut rng, WeightFormat::F32, 4, 8);
    let w = Weights::upload(ctx, &host).unwrap();
    let x = ctx.zeros(DType::F32, &[3, 7]).unwrap();
    let y = ctx.zeros(DType::F32, &[3, 4]).unwrap();
    let mut rec = ctx.recorder();
    assert!(matches!(
        linear_by(
            &mut rec,
            Input::Rows(&x),
            &w,
            Output::write(&y),
            Kernel::Matmul
        ),
        Err(KernelError::Shape {
            kernel: "linear",
            ..
        })
    ));
    // y one row short, for every kernel.
    let x = ctx.zeros(DType::F32, &[MAX_BATCH + 1, 8]).unwrap();
    let y = ctx.zeros(DType::F32, &[MAX_BATCH, 4]).unwrap();
    for kernel in kernels_of(ctx) {
        let output = Output::write(&y);
        let result = match kernel {
            Some(kernel) => linear_by(&mut rec, Input::Rows(&x), &w, output, kernel),
            None => linear(&mut rec, Input::Rows(&x), &w, output),
        };
        assert!(
            matches!(
                result,
                Err(KernelError::Shape {
                    kernel: "linear",
                    ..
                })
            ),
            "{kernel:?}"
        );
    }
    assert!(rec.launched().is_empty());
    // Q4 blocks need rows that are a multiple of 32.
    assert!(kiln_kernels::HostWeights::new(WeightFormat::Q4_1, 2, 48, vec![0; 60]).is_err());
    assert!(kiln_kernels::HostWeights::new(WeightFormat::Q8_0, 2, 64, vec![0; 135]).is_err());
    // Lane tiles hold Q4_1 and Q8_0 only.
    let q4_0 = random_weights(&mut rng, WeightFormat::Q4_0, 3, 64);
    assert!(matches!(
        Weights::upload_ordered(ctx, &q4_0, 1 << 20, BlockOrder::LaneTiles),
        Err(KernelError::Shape {
            kernel: "weights",
            ..
        })
    ));
}

/// An input made before a projection — the RMSNorm (`Input::RmsNorm`), the LayerNorm
/// (`Input::LayerNorm`) and GELU (`Input::Gelu`) — through `linear` (by the device plan's
/// choice), the matmul, and the mat-vec in every layout (folded where the layout can, with no
/// launch of its own) against the reference input then product, on rows that make a norm
/// matter: zero-mean, tiny (where eps dominates), large with a large mean (where a one-pass
/// variance would cancel), and random, over batches that chunk (11 rows), K that is not a
/// multiple of 4 (the padded reads), into one output and into a stacked pair. The RMSNorm also
/// takes one row and a 1000-row matrix.
#[test]
fn folded_inputs_match_input_then_product() {
    let Some(ctx) = test_context() else { return };
    let eps = 1e-5;
    // Each shape is many pipeline variants (a minute of compiling on lavapipe when cold): the
    // LayerNorm and GELU take the shapes that reach every path (3 and 8 + 3 rows, K = 37).
    for (i, &(m, n, k, all)) in [
        (1, 7, 32, false),
        (3, 129, 96, true),
        (3, 5, 37, true),
        (11, 37, 576, true),
        (2, 1000, 576, false),
    ]
    .iter()
    .enumerate()
    {
        let mut rng = rng(900 + i as u64);
        // Row r: 0 zero-mean, 1 tiny (|x| ~ 1e-4, eps visible), 2 large (~30), the rest random.
        let x: Vec<f32> = (0..m * k)
            .map(|j| match (j / k) % 4 {
                0 => {
                    if j % 2 == 0 {
                        1.5
                    } else {
                        -1.5
                    }
                }
                1 => 1e-4 * ((j % 7) as f32 - 3.0),
                2 => 30.0 + (j % 5) as f32,
                _ => rng_value(j),
            })
            .collect();
        let gamma = rand_vec(&mut rng, k, -2.0, 2.0);
        let beta = rand_vec(&mut rng, k, -1.0, 1.0);
        let xt = ctx.upload_f32(&x, &[m, k]).unwrap();
        let gt = ctx.upload_f32(&gamma, &[k]).unwrap();
        let bt = ctx.upload_f32(&beta, &[k]).unwrap();
        let h = ctx.zeros(DType::F32, &[m, k]).unwrap();
        let made = [
            (
                "rms_norm",
                kiln_kernels::norm::rms_norm_ref(&x, &gamma, eps),
                Input::RmsNorm {
                    x: &xt,
                    gamma: &gt,
                    eps,
                    normed: &h,
                },
            ),
            (
                "layer_norm",
                kiln_kernels::norm::layer_norm_ref(&x, &gamma, &beta, eps),
                Input::LayerNorm {
                    x: &xt,
                    gamma: &gt,
                    beta: &bt,
                    eps,
                    normed: &h,
                },
            ),
            (
                "gelu",
                x.iter()
                    .map(|&v| kiln_kernels::elementwise::gelu_ref(v))
                    .collect(),
                Input::Gelu { x: &xt, act: &h },
            ),
        ];
        for format in formats_for(k) {
            let host = random_weights(&mut rng, format, n, k);
            let wf = host.dequantize();
            let w = upload_weights(ctx, &host, None, None);
            let cut = n / 3;
            let (y, y0, y1) = (
                ctx.zeros(DType::F32, &[m, n]).unwrap(),
                ctx.zeros(DType::F32, &[m, cut]).unwrap(),
                ctx.zeros(DType::F32, &[m, n - cut]).unwrap(),
            );
            for (name, input_ref, input) in made.iter().take(if all { 3 } else { 1 }) {
                let want = matmul_ref(input_ref, &wf, None, m, n, k);
                let atol = 2e-6 * k as f32 * max_abs(input_ref) * max_abs(&wf) + 1e-5;
                for kernel in kernels_of(ctx) {
                    for split in [false, true] {
                        let ys: Vec<&kiln_runtime::Tensor> =
                            if split { vec![&y0, &y1] } else { vec![&y] };
                        let mut rec = ctx.recorder();
                        let output = Output::split(&ys, Store::Write);
                        match kernel {
                            Some(kernel) => {
                                linear_by(&mut rec, *input, &w, output, kernel).unwrap()
                            }
                            None => linear(&mut rec, *input, &w, output).unwrap(),
                        }
                        // Folded where the kernel can: no launch of its own for the input.
                        if let Some(kernel) = kernel {
                            let folds = matches!(kernel, Kernel::Matvec { layout, .. } if layout.folds_norm());
                            let apart = rec
                                .launched()
                                .iter()
                                .any(|&(s, e)| s == "norm" || e == "gelu");
                            assert_eq!(apart, !folds, "{name} {kernel:?}");
                        }
                        rec.submit().unwrap();
                        let got = if split {
                            let (a, b) =
                                (ctx.read::<f32>(&y0).unwrap(), ctx.read::<f32>(&y1).unwrap());
                            (0..m)
                                .flat_map(|r| {
                                    a[r * cut..(r + 1) * cut]
                                        .iter()
                                        .chain(&b[r * (n - cut)..(r + 1) * (n - cut)])
                                        .copied()
                                        .collect::<Vec<_>>()
                                })
                                .collect()
                        } else {
                            ctx.read::<f32>(&y).unwrap()
                        };
                        assert_close(
                            &format!("{name} {kernel:?} split {split} {format:?} m{m} n{n} k{k}"),
                            &got,
                            &want,
                            atol,
                            0.0,
                        );
                    }
                }
            }
        }
    }
}

/// A deterministic value in [-1, 1) for element j.
fn rng_value(j: usize) -> f32 {
    ((j * 7919) % 2003) as f32 / 1001.5 - 1.0
}
