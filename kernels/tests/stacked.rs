//! Stacked matrices: projections of one input stacked by rows (`HostWeights::stack`) and run as
//! one launch whose columns go to each projection's own output (`Output::split`), against the CPU
//! reference of every projection apart. Every kernel (matmul, each mat-vec layout, `linear`),
//! both stores, with bias, in row parts, and with outlier columns. Tolerance as in
//! `tests/matrix.rs`: 2e-6 · K · max|x| · max|w| + 1e-5.

mod common;

use common::*;
use kiln_kernels::linear::{
    Input, Kernel, MAX_BATCH, Output, Store, linear, linear_by, matmul_ref,
};
use kiln_kernels::{HostWeights, KernelError, WeightFormat, Weights};
use kiln_runtime::{Context, DType};

/// Kernels to run a stack of `m` rows through on this device: the mat-vec layouts up to three
/// launches' rows.
fn kernels(ctx: &Context, m: usize) -> Vec<Option<Kernel>> {
    let mut all = kernels_of(ctx);
    if m > 3 * MAX_BATCH {
        all.retain(|k| !matches!(k, Some(Kernel::Matvec { .. })));
    }
    all
}

/// Options of one stacked case.
struct Stack<'a> {
    widths: &'a [usize],
    bias: bool,
    store: Store,
    part_rows: Option<usize>,
    outlier_cols: usize,
}

/// Stacks random `[n_i, k]` matrices of `format`, runs `m` input rows through every kernel and
/// compares each output with the product of its own matrix.
fn check(ctx: &Context, seed: u64, format: WeightFormat, m: usize, k: usize, s: Stack<'_>) {
    let mut rng = rng(seed);
    let hosts: Vec<HostWeights> = s
        .widths
        .iter()
        .map(|&n| random_weights(&mut rng, format, n, k))
        .collect();
    let host = HostWeights::stack(&hosts).unwrap();
    let n = host.n;
    assert_eq!(n, s.widths.iter().sum::<usize>());
    let x = rand_vec(&mut rng, m * k, -1.0, 1.0);
    let bias = s.bias.then(|| rand_vec(&mut rng, n, -1.0, 1.0));
    let mut wf = host.dequantize();
    let cols: Vec<u32> = (0..s.outlier_cols as u32)
        .map(|j| (j * 7 + 3) % k as u32)
        .collect();
    let kept = rand_vec(&mut rng, n * cols.len(), -10.0, 10.0);
    for r in 0..n {
        for (j, &c) in cols.iter().enumerate() {
            wf[r * k + c as usize] += kept[r * cols.len() + j];
        }
    }
    // The reference is each projection apart: rows of the stack, with their share of the bias.
    let mut want = Vec::new();
    let mut row0 = 0;
    for &w in s.widths {
        let part = &wf[row0 * k..(row0 + w) * k];
        let b = bias.as_ref().map(|b| &b[row0..row0 + w]);
        want.push(matmul_ref(&x, part, b, m, w, k));
        row0 += w;
    }
    let y0: Vec<Vec<f32>> = s
        .widths
        .iter()
        .map(|&w| rand_vec(&mut rng, m * w, -1.0, 1.0))
        .collect();
    if s.store == Store::Add {
        for (want, y0) in want.iter_mut().zip(&y0) {
            want.iter_mut().zip(y0).for_each(|(v, y)| *v += y);
        }
    }

    let mut wt = upload_weights(ctx, &host, s.part_rows, bias.as_deref());
    if !cols.is_empty() {
        wt = wt.with_outliers(ctx, &cols, &kept).unwrap();
    }
    let xt = ctx.upload_f32(&x, &[m, k]).unwrap();
    let atol = 2e-6 * k as f32 * max_abs(&x) * max_abs(&wf) + 1e-5;
    for kernel in kernels(ctx, m) {
        let ys: Vec<_> = s
            .widths
            .iter()
            .zip(&y0)
            .map(|(&w, y0)| match s.store {
                // Poisoned: every element must be written.
                Store::Write => ctx.upload_f32(&vec![f32::NAN; m * w], &[m, w]).unwrap(),
                Store::Add => ctx.upload_f32(y0, &[m, w]).unwrap(),
            })
            .collect();
        let refs: Vec<_> = ys.iter().collect();
        let mut rec = ctx.recorder();
        let (input, output) = (Input::Rows(&xt), Output::split(&refs, s.store));
        match kernel {
            Some(kernel) => linear_by(&mut rec, input, &wt, output, kernel),
            None => linear(&mut rec, input, &wt, output),
        }
        .unwrap();
        rec.submit().unwrap();
        for (i, (y, want)) in ys.iter().zip(&want).enumerate() {
            assert_close(
                &format!(
                    "{kernel:?} {format:?} m{m} k{k} widths {:?} output {i} {:?} bias {} parts {:?} outliers {}",
                    s.widths, s.store, s.bias, s.part_rows, s.outlier_cols
                ),
                &ctx.read::<f32>(y).unwrap(),
                want,
                atol,
                0.0,
            );
        }
    }
}

#[test]
fn stacked_projections_match_each_apart() {
    let Some(ctx) = test_context() else { return };
    // (m, widths, k): one and two outputs, one-row outputs, ragged widths, SmolLM2's q/k/v
    // proportions (9:3:3 heads), and 19 rows (the mat-vec in three launches, or the matmul).
    let cases: &[(usize, &[usize], usize)] = &[
        (1, &[1, 1, 1], 32),
        (1, &[37], 64),
        (2, &[17, 9], 96),
        (1, &[72, 24, 24], 64),
        (MAX_BATCH, &[13, 5, 11], 160),
        (19, &[40, 24, 24], 64),
    ];
    for (i, &(m, widths, k)) in cases.iter().enumerate() {
        for (f, format) in formats_for(k).into_iter().enumerate() {
            let store = if (i + f) % 2 == 0 {
                Store::Write
            } else {
                Store::Add
            };
            let stack = Stack {
                widths,
                bias: (i + f) % 3 == 0,
                store,
                part_rows: None,
                outlier_cols: 0,
            };
            check(ctx, 1200 + i as u64, format, m, k, stack);
        }
    }
}

/// A stack stored in row parts (a part boundary inside an output) and with outlier columns,
/// whose launch also cuts its columns over the outputs.
#[test]
fn stacked_projections_in_parts_and_with_outliers() {
    let Some(ctx) = test_context() else { return };
    for (i, format) in [WeightFormat::F32, WeightFormat::Q8_0, WeightFormat::Q4_1]
        .into_iter()
        .enumerate()
    {
        for (j, &(m, part_rows, outlier_cols)) in [
            (1, Some(16), 0),
            (3, None, 5),
            (MAX_BATCH, Some(24), 3),
            (19, Some(40), 2),
        ]
        .iter()
        .enumerate()
        {
            let stack = Stack {
                widths: &[20, 31, 18],
                bias: j % 2 == 1,
                store: if i % 2 == 0 { Store::Add } else { Store::Write },
                part_rows,
                outlier_cols,
            };
            check(ctx, 1300 + (4 * i + j) as u64, format, m, 64, stack);
        }
    }
}

#[test]
fn bad_stacks_are_typed_errors() {
    let Some(ctx) = test_context() else { return };
    let mut rng = rng(13);
    let q8 = random_weights(&mut rng, WeightFormat::Q8_0, 4, 64);
    let q4 = random_weights(&mut rng, WeightFormat::Q4_1, 4, 64);
    let wide = random_weights(&mut rng, WeightFormat::Q8_0, 4, 96);
    for bad in [&[][..], &[q8.clone(), q4][..], &[q8.clone(), wide][..]] {
        assert!(matches!(
            HostWeights::stack(bad),
            Err(KernelError::Shape {
                kernel: "weights",
                ..
            })
        ));
    }
    let w = Weights::upload(ctx, &HostWeights::stack(&[q8.clone(), q8]).unwrap()).unwrap();
    let x = ctx.zeros(DType::F32, &[2, 64]).unwrap();
    let y = |n: usize| ctx.zeros(DType::F32, &[2, n]).unwrap();
    let (a, b, c, d) = (y(4), y(3), y(1), y(4));
    let mut rec = ctx.recorder();
    // Widths that do not add up to the 8 rows, and more outputs than a launch binds.
    for ys in [&[&a, &b][..], &[&a, &a, &c, &d][..], &[][..]] {
        let output = Output::split(ys, Store::Write);
        let err = linear(&mut rec, Input::Rows(&x), &w, output).unwrap_err();
        assert!(
            matches!(err, KernelError::Shape { .. }),
            "{} outputs: {err}",
            ys.len()
        );
    }
    assert!(rec.launched().is_empty());
    // The widths that do cut the 8 rows.
    let output = Output::split(&[&a, &d], Store::Write);
    linear(&mut rec, Input::Rows(&x), &w, output).unwrap();
}
