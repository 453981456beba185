//! Outlier columns (LLM.int8() decomposition) in every matrix kernel, the calibration probe, and
//! reading weights back, against CPU references on ragged shapes. The matrix tolerance is the one
//! of `matrix.rs`: |gpu − ref| ≤ 2e-6 · K · max|x| · max|w| + 1e-6.

mod common;

use common::*;
use kiln_kernels::linear::{Input, Kernel, Output, linear, linear_by, matmul_ref};
use kiln_kernels::probe::{column_absmax, column_absmax_ref};
use kiln_kernels::weights::split_columns;
use kiln_kernels::{BlockOrder, DevicePlan, KernelError, WeightFormat, Weights, embedding};
use kiln_runtime::{Context, DType};
use rand::seq::SliceRandom;

/// `c` distinct random columns of `0..k`.
fn random_columns(rng: &mut rand::rngs::StdRng, k: usize, c: usize) -> Vec<u32> {
    let mut all: Vec<u32> = (0..k as u32).collect();
    all.shuffle(rng);
    all.truncate(c);
    all
}

/// Main part of `format` plus `c` outlier columns (large values), through `kernel`, against the
/// reference product with the outlier values added into their columns.
#[allow(clippy::too_many_arguments)]
fn check(
    ctx: &Context,
    seed: u64,
    format: WeightFormat,
    (m, n, k, c): (usize, usize, usize, usize),
    kernel: Option<Kernel>,
    bias: bool,
    part_rows: Option<usize>,
) {
    let mut rng = rng(seed);
    let host = random_weights(&mut rng, format, n, k);
    let cols = random_columns(&mut rng, k, c);
    let outliers = rand_vec(&mut rng, n * c, -10.0, 10.0);
    let x = rand_vec(&mut rng, m * k, -1.0, 1.0);
    let b = bias.then(|| rand_vec(&mut rng, n, -1.0, 1.0));
    let mut wf = host.dequantize();
    for r in 0..n {
        for (j, &col) in cols.iter().enumerate() {
            wf[r * k + col as usize] += outliers[r * c + j];
        }
    }
    let want = matmul_ref(&x, &wf, b.as_deref(), m, n, k);

    let w = upload_weights(ctx, &host, part_rows, b.as_deref());
    let w = w.with_outliers(ctx, &cols, &outliers).unwrap();
    assert_eq!(w.outliers().unwrap().columns(), &cols[..]);
    let xt = ctx.upload_f32(&x, &[m, k]).unwrap();
    let yt = ctx.upload_f32(&vec![f32::NAN; m * n], &[m, n]).unwrap();
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
        &format!("{kernel:?} {format:?} m{m} n{n} k{k} c{c} bias {bias} parts {part_rows:?}"),
        &got,
        &want,
        atol,
        0.0,
    );
}

#[test]
fn outlier_columns_add_in_every_matrix_kernel() {
    let Some(ctx) = test_context() else { return };
    let shapes = [
        (1, 1, 4, 1),
        (1, 37, 97, 3),
        (3, 61, 64, 64),
        (8, 130, 576, 7),
        (9, 70, 133, 2),
        (70, 65, 256, 11),
    ];
    for (i, &(m, n, k, c)) in shapes.iter().enumerate() {
        for (f, format) in formats_for(k).into_iter().enumerate() {
            let kernel = match (i + f) % 3 {
                0 => Some(Kernel::Matmul),
                1 if m <= 8 => Some(matvec_in(DevicePlan::of(ctx).matvec)),
                _ => None,
            };
            check(
                ctx,
                900 + i as u64,
                format,
                (m, n, k, c),
                kernel,
                f % 2 == 0,
                None,
            );
        }
    }
    // A matrix in row parts with one outlier table for all its rows.
    check(
        ctx,
        950,
        WeightFormat::Q8_0,
        (5, 131, 64, 5),
        None,
        true,
        Some(40),
    );
    check(
        ctx,
        951,
        WeightFormat::F32,
        (20, 131, 64, 5),
        None,
        false,
        Some(40),
    );
}

/// Moving columns out and adding them back through the kernels gives the original product.
#[test]
fn split_columns_round_trips_through_the_kernels() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(960);
    let (m, n, k) = (4, 29, 83);
    let values = rand_vec(&mut rng, n * k, -1.0, 1.0);
    let x = rand_vec(&mut rng, m * k, -3.0, 3.0);
    let cols = random_columns(&mut rng, k, 6);
    let mut main = values.clone();
    let outliers = split_columns(&mut main, n, k, &cols);
    for r in 0..n {
        for (j, &c) in cols.iter().enumerate() {
            assert_eq!(main[r * k + c as usize], 0.0);
            assert_eq!(outliers[r * cols.len() + j], values[r * k + c as usize]);
        }
    }
    let host = kiln_kernels::HostWeights::f32(n, k, &main).unwrap();
    let w = Weights::upload(ctx, &host)
        .unwrap()
        .with_outliers(ctx, &cols, &outliers)
        .unwrap();
    let xt = ctx.upload_f32(&x, &[m, k]).unwrap();
    let yt = ctx.zeros(DType::F32, &[m, n]).unwrap();
    let mut rec = ctx.recorder();
    linear(&mut rec, Input::Rows(&xt), &w, Output::write(&yt)).unwrap();
    rec.submit().unwrap();
    let want = matmul_ref(&x, &values, None, m, n, k);
    let atol = 2e-6 * k as f32 * 3.0 + 1e-6;
    assert_close("split", &ctx.read::<f32>(&yt).unwrap(), &want, atol, 0.0);
}

/// The probe keeps the maximum |x| per column over every launch.
#[test]
fn column_absmax_matches_reference() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(970);
    for &(m, k) in &[(1, 1), (3, 7), (17, 257), (130, 576), (1, 1536)] {
        let a = rand_vec(&mut rng, m * k, -5.0, 5.0);
        let b = rand_vec(&mut rng, k, -9.0, 9.0);
        let probe = ctx.zeros(DType::F32, &[k]).unwrap();
        let mut rec = ctx.recorder();
        column_absmax(&mut rec, &ctx.upload_f32(&a, &[m, k]).unwrap(), k, &probe).unwrap();
        column_absmax(&mut rec, &ctx.upload_f32(&b, &[1, k]).unwrap(), k, &probe).unwrap();
        rec.submit().unwrap();
        let both: Vec<f32> = a.iter().chain(&b).copied().collect();
        assert_eq!(
            ctx.read::<f32>(&probe).unwrap(),
            column_absmax_ref(&both, k),
            "m{m} k{k}"
        );
    }
}

/// Weights read back from the device equal what was uploaded, for every format and block
/// order, split or not.
#[test]
fn weights_download_round_trips() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(980);
    let shapes = [
        (3, 64, None),
        (37, 96, Some(10)),
        (5, 7, Some(2)),
        (300, 64, Some(150)),
    ];
    for &(n, k, part_rows) in &shapes {
        for format in formats_for(k) {
            let mut orders = vec![BlockOrder::Interleaved];
            if matches!(format, WeightFormat::Q4_1 | WeightFormat::Q8_0) {
                orders.push(BlockOrder::LaneTiles);
            }
            for order in orders {
                let host = random_weights(&mut rng, format, n, k);
                let bias = rand_vec(&mut rng, n, -1.0, 1.0);
                let w = upload_weights_ordered(ctx, &host, part_rows, Some(&bias), Some(order));
                let (back, back_bias) = w.download(ctx).unwrap();
                assert_eq!(back.data, host.data, "{format:?} n{n} k{k} {order:?}");
                assert_eq!(back.scales, host.scales);
                assert_eq!(back.zeros, host.zeros);
                assert_eq!(back_bias.unwrap(), bias);
                if format.block_bytes().is_some() {
                    // The rows' own bytes and the bias, not the padding of the device's groups.
                    let want = n * format.row_bytes(k) + 4 * n;
                    assert_eq!(
                        w.size_bytes(),
                        want as u64,
                        "{format:?} n{n} k{k} {order:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_outlier_columns_are_typed_errors() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(990);
    let host = random_weights(&mut rng, WeightFormat::F32, 4, 8);
    let upload = || Weights::upload(ctx, &host).unwrap();
    for (cols, values) in [
        (vec![1, 1], vec![0.0; 8]),
        (vec![8], vec![0.0; 4]),
        (vec![2], vec![0.0; 3]),
        (vec![], vec![]),
    ] {
        assert!(
            matches!(
                upload().with_outliers(ctx, &cols, &values),
                Err(KernelError::Shape {
                    kernel: "outliers",
                    ..
                })
            ),
            "{cols:?}"
        );
    }
    // A gather would read the zeros left in outlier columns.
    let table = upload().with_outliers(ctx, &[3], &[1.0; 4]).unwrap();
    let ids = ctx.upload(&[0u32], DType::U32, &[1]).unwrap();
    let out = ctx.zeros(DType::F32, &[1, 8]).unwrap();
    let mut rec = ctx.recorder();
    assert!(embedding::embedding(&mut rec, &ids, &table, &out).is_err());
}
