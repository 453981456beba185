//! Kernel throughput against the device's measured bandwidth. Each kernel runs at a model's
//! shapes; its bytes and FLOPs are counted from its arguments (weights, activations read and
//! results written once), and it is timed with a [`kiln_runtime::Stopwatch`] (GPU timestamps
//! where granted). The matrix kernels are timed alternately with the peak stream
//! ([`PeakStream`]), so each repetition starts with cold caches, as every matrix of a decode step
//! does, and the two are measured under the same load of the machine.

use anyhow::Result;
use half::f16;
use kiln_kernels::DevicePlan;
use kiln_kernels::argmax::{Scan, argmax_with};
use kiln_kernels::elementwise::silu;
use kiln_kernels::linear::{Input, Kernel, Layout, Output, linear_by, matmul_splits};
use kiln_kernels::norm::rms_norm;
use kiln_kernels::softmax::softmax;
use kiln_kernels::stream;
use kiln_kernels::{HostWeights, WeightFormat, Weights};
use kiln_runtime::{Context, DType, Recorder, Tensor, Timings};

/// One kernel measured at one shape.
#[derive(Clone, Debug)]
pub struct KernelResult {
    /// Family and variant, e.g. `matvec q4_1`.
    pub kernel: String,
    /// Where the shape comes from and its sizes, e.g. `SmolLM2 ffn_up 1536x576`.
    pub shape: String,
    pub bytes: u64,
    pub flops: u64,
    /// Median seconds per launch.
    pub seconds: f64,
    /// The peak stream's bandwidth timed alternately with this kernel ([`PeakStream::alongside`]):
    /// its own ceiling, side by side.
    pub peak_alongside_gbps: Option<f64>,
}

impl KernelResult {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    pub fn gflops(&self) -> f64 {
        self.flops as f64 / self.seconds / 1e9
    }
}

/// The device's streaming bandwidth (bytes read plus bytes written per second).
#[derive(Clone, Debug)]
pub struct Bandwidth {
    pub copy_gbps: f64,
    pub read_gbps: f64,
    /// Bytes of the buffer streamed.
    pub buffer_bytes: u64,
}

impl Bandwidth {
    /// The better of the two: the ceiling for the roofline.
    pub fn peak_gbps(&self) -> f64 {
        self.copy_gbps.max(self.read_gbps)
    }

    /// The better of two measurements of each.
    pub fn best(&self, other: &Bandwidth) -> Bandwidth {
        Bandwidth {
            copy_gbps: self.copy_gbps.max(other.copy_gbps),
            read_gbps: self.read_gbps.max(other.read_gbps),
            buffer_bytes: self.buffer_bytes,
        }
    }
}

/// The streaming copy of the peak measurement, kept to time kernels alongside it.
pub struct PeakStream {
    x: Tensor,
    y: Tensor,
}

impl PeakStream {
    /// Buffers of up to `bytes` each (less if the device's binding limit is smaller).
    pub fn new(ctx: &Context, bytes: u64) -> Result<Self> {
        let limit = ctx.limits.max_storage_buffer_binding_size;
        let len = (bytes.min(limit) / 16 * 4) as usize;
        Ok(Self {
            x: ctx.zeros(DType::F32, &[len])?,
            y: ctx.zeros(DType::F32, &[len])?,
        })
    }

    /// Bytes one copy moves (read plus written).
    pub fn bytes(&self) -> u64 {
        2 * self.x.size_bytes()
    }

    pub fn copy(&self, rec: &mut Recorder<'_>) -> kiln_kernels::Result<()> {
        stream::copy(rec, &self.x, &self.y)
    }

    /// `reps` timings of `record`, each right after one of the copy: the copy (larger than the
    /// caches) leaves them cold, and the median copy bandwidth over the same stretch of time is
    /// the ceiling the kernel is held to. Returns the kernel's timings and that bandwidth.
    pub fn alongside(
        &self,
        ctx: &Context,
        reps: usize,
        mut record: impl FnMut(&mut Recorder<'_>) -> kiln_kernels::Result<()>,
    ) -> Result<(Timings, f64)> {
        let watch = ctx.stopwatch()?;
        watch.measure(ctx, |rec| self.copy(rec))?;
        watch.measure(ctx, &mut record)?;
        let (mut kernel, mut copies) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps {
            copies.push(watch.measure(ctx, |rec| self.copy(rec))?);
            kernel.push(watch.measure(ctx, &mut record)?);
        }
        let clock = watch.clock();
        let copies = Timings {
            clock,
            seconds: copies,
        };
        let kernel = Timings {
            clock,
            seconds: kernel,
        };
        Ok((kernel, self.bytes() as f64 / copies.median() / 1e9))
    }
}

/// Streams `peak`'s buffers: a copy, and a read of one of them.
pub fn bandwidth(
    ctx: &Context,
    peak: &PeakStream,
    reps: usize,
) -> Result<(Bandwidth, Vec<KernelResult>)> {
    let (x, y) = (&peak.x, &peak.y);
    let len = x.len();
    let partial = ctx.zeros(DType::F32, &[stream::read_partials(len)])?;
    let size = 4 * len as u64;
    let copy = ctx.time(reps, |rec| stream::copy(rec, x, y))?;
    let read = ctx.time(reps, |rec| stream::read(rec, x, &partial))?;
    let shape = format!("{} MiB", size >> 20);
    let results = vec![
        result("stream copy", &shape, 2 * size, 0, &copy),
        result("stream read", &shape, size, 0, &read),
    ];
    let bw = Bandwidth {
        copy_gbps: results[0].gbps(),
        read_gbps: results[1].gbps(),
        buffer_bytes: size,
    };
    Ok((bw, results))
}

fn result(kernel: &str, shape: &str, bytes: u64, flops: u64, t: &Timings) -> KernelResult {
    KernelResult {
        kernel: kernel.to_string(),
        shape: shape.to_string(),
        bytes,
        flops,
        seconds: t.median(),
        peak_alongside_gbps: None,
    }
}

/// A matrix shape of a named model: (label, rows n, columns k).
pub type MatrixShape = (&'static str, usize, usize);

/// SmolLM2-135M's feed-forward up and down projections and tied LM head.
pub const SMOLLM2_FFN_UP: MatrixShape = ("SmolLM2-135M ffn_up", 1536, 576);
pub const SMOLLM2_FFN_DOWN: MatrixShape = ("SmolLM2-135M ffn_down", 576, 1536);
pub const SMOLLM2_HEAD: MatrixShape = ("SmolLM2-135M output", 49152, 576);
/// SmolLM2-135M's gate and up projections stacked into one matrix, as the model runs them.
pub const SMOLLM2_GATE_UP: MatrixShape = ("SmolLM2-135M ffn_gate+ffn_up stacked", 3072, 576);
/// GPT-2 124M's MLP up projection.
pub const GPT2_FC: MatrixShape = ("GPT-2 124M mlp.c_fc", 3072, 768);
/// A 1B-class Llama layer (Llama 3.2 1B: width 2048, FFN 8192).
pub const LLAMA_1B_FFN_UP: MatrixShape = ("Llama-1B ffn_up", 8192, 2048);

/// Every weight format the matrix kernels read, with its report name.
pub fn formats() -> Vec<(&'static str, WeightFormat)> {
    vec![
        ("f32", WeightFormat::F32),
        ("f16", WeightFormat::F16),
        ("q8_0", WeightFormat::Q8_0),
        ("q4_0", WeightFormat::Q4_0),
        ("q4_1", WeightFormat::Q4_1),
        ("q5_0", WeightFormat::Q5_0),
        ("q5_1", WeightFormat::Q5_1),
        ("q2_k", WeightFormat::Q2_K),
        ("q3_k", WeightFormat::Q3_K),
        ("q4_k", WeightFormat::Q4_K),
        ("q5_k", WeightFormat::Q5_K),
        ("q6_k", WeightFormat::Q6_K),
        ("bf16", WeightFormat::BF16),
        (
            "int8-channel",
            WeightFormat::Int8 {
                group: 0,
                zero_point: false,
            },
        ),
        (
            "int8-zp-g64",
            WeightFormat::Int8 {
                group: 64,
                zero_point: true,
            },
        ),
    ]
}

/// Deterministic weights of `format` (values in ±1, plausible scales; group 0 means per row).
pub fn synthetic_weights(format: WeightFormat, n: usize, k: usize) -> Result<HostWeights> {
    let byte = |i: usize| (i.wrapping_mul(2654435761) >> 13) as u8;
    let value = |i: usize| byte(i) as f32 / 127.5 - 1.0;
    let half = |v: f32| f16::from_f32(v).to_le_bytes();
    Ok(match format {
        WeightFormat::F32 => HostWeights::f32(n, k, &(0..n * k).map(value).collect::<Vec<_>>())?,
        WeightFormat::F16 => HostWeights::f16(
            n,
            k,
            &(0..n * k)
                .map(|i| f16::from_f32(value(i)))
                .collect::<Vec<_>>(),
        )?,
        WeightFormat::Int8 { group, zero_point } => {
            let group = if group == 0 { k } else { group };
            let q: Vec<i8> = (0..n * k).map(|i| byte(i) as i8).collect();
            let groups = n * k.div_ceil(group);
            HostWeights::int8(
                n,
                k,
                group,
                &q,
                vec![0.01; groups],
                zero_point.then(|| vec![3.0; groups]),
            )?
        }
        WeightFormat::BF16 => {
            let bits = (0..n * k).flat_map(|i| ((value(i).to_bits() >> 16) as u16).to_le_bytes());
            HostWeights::new(format, n, k, bits.collect())?
        }
        whole if !whole.split_blocks() => {
            // Every quant and scale byte pseudo-random, the f16 super-scales small.
            let size = whole.block_bytes().unwrap_or(0);
            let mut data: Vec<u8> = (0..n * k / whole.block_values() * size).map(byte).collect();
            for block in data.chunks_mut(size) {
                for (i, &at) in whole.scale_fields().iter().enumerate() {
                    let v = if i == 0 { 0.001 } else { 0.0005 };
                    block[at..at + 2].copy_from_slice(&half(v));
                }
            }
            HostWeights::new(whole, n, k, data)?
        }
        block => {
            let mut data = Vec::new();
            for b in 0..n * k / kiln_kernels::weights::BLOCK {
                data.extend(half(0.01));
                if block == WeightFormat::Q4_1 {
                    data.extend(half(-0.1));
                }
                let quants = if block == WeightFormat::Q8_0 { 32 } else { 16 };
                data.extend((0..quants).map(|j| byte(b * 32 + j)));
            }
            HostWeights::new(block, n, k, data)?
        }
    })
}

/// `rows` activation rows times weights of each format at `shape`, through the kernel the models
/// use for that many rows on this device ([`Kernel::pick`]), timed alongside `peak`. Where the
/// plan splits the matmul's K, the unsplit matmul is timed beside it.
pub fn matrix(
    ctx: &Context,
    peak: &PeakStream,
    shape: MatrixShape,
    rows: usize,
    formats: &[(&'static str, WeightFormat)],
    reps: usize,
) -> Result<Vec<KernelResult>> {
    let (label, n, k) = shape;
    let x = ctx.upload_f32(&vec![0.5; rows * k], &[rows, k])?;
    let y = ctx.zeros(DType::F32, &[rows, n])?;
    let mut out = Vec::new();
    for &(name, format) in formats {
        // K-quant rows hold whole 256-value super-blocks: not every shape fits every format.
        if format.check_k(k).is_err() {
            continue;
        }
        let w = Weights::upload(ctx, &synthetic_weights(format, n, k)?)?;
        let kernels = match Kernel::pick(ctx, rows, &w) {
            Kernel::Matmul => match matmul_splits(ctx, rows, &w) {
                1 => vec![(Kernel::Matmul, "matmul".to_string())],
                s => vec![
                    (Kernel::Matmul, format!("matmul K in {s}")),
                    (Kernel::MatmulSplitK(1), "matmul unsplit".to_string()),
                ],
            },
            picked => vec![(picked, "matvec".to_string())],
        };
        for (kernel, kernel_name) in kernels {
            let bytes = w.size_bytes() + 4 * (rows * (n + k)) as u64;
            let (t, ceiling) = peak.alongside(ctx, reps, |rec| {
                linear_by(rec, Input::Rows(&x), &w, Output::write(&y), kernel)
            })?;
            let shape = format!("{label} {n}x{k}, {rows} row(s)");
            let flops = (2 * rows * n * k) as u64;
            out.push(KernelResult {
                peak_alongside_gbps: Some(ceiling),
                ..result(&format!("{kernel_name} {name}"), &shape, bytes, flops, &t)
            });
        }
    }
    Ok(out)
}

/// One activation row times weights of each format at `shape` through every mat-vec layout the
/// device runs (the models use [`DevicePlan::matvec`]), side by side, timed alongside `peak`.
pub fn layouts(
    ctx: &Context,
    peak: &PeakStream,
    shape: MatrixShape,
    formats: &[(&'static str, WeightFormat)],
    reps: usize,
) -> Result<Vec<KernelResult>> {
    let (label, n, k) = shape;
    let x = ctx.upload_f32(&vec![0.5; k], &[1, k])?;
    let y = ctx.zeros(DType::F32, &[1, n])?;
    let mut out = Vec::new();
    for &(name, format) in formats {
        let w = Weights::upload(ctx, &synthetic_weights(format, n, k)?)?;
        for layout in Layout::ALL {
            if !layout.supported(ctx) {
                continue;
            }
            let bytes = w.size_bytes() + 4 * (n + k) as u64;
            let kernel = Kernel::Matvec {
                layout,
                fold_norm: false,
            };
            let (t, ceiling) = peak.alongside(ctx, reps, |rec| {
                linear_by(rec, Input::Rows(&x), &w, Output::write(&y), kernel)
            })?;
            out.push(KernelResult {
                peak_alongside_gbps: Some(ceiling),
                ..result(
                    &format!("matvec {name} {layout:?}"),
                    &format!("{label} {n}x{k}, 1 row(s)"),
                    bytes,
                    (2 * n * k) as u64,
                    &t,
                )
            });
        }
        // The RMSNorm before a projection, as its own launch and folded into the mat-vec's read
        // (`DevicePlan::fold_norm` picks one), in the device's layout where it can fold.
        let layout = DevicePlan::of(ctx).matvec;
        if layout.folds_norm() {
            let (gamma, h) = (
                ctx.upload_f32(&vec![1.5; k], &[k])?,
                ctx.zeros(DType::F32, &[1, k])?,
            );
            let input = Input::RmsNorm {
                x: &x,
                gamma: &gamma,
                eps: 1e-5,
                normed: &h,
            };
            let by = |fold_norm| Kernel::Matvec { layout, fold_norm };
            let apart = peak.alongside(ctx, reps, |rec| {
                linear_by(rec, input, &w, Output::write(&y), by(false))
            })?;
            let folded = peak.alongside(ctx, reps, |rec| {
                linear_by(rec, input, &w, Output::write(&y), by(true))
            })?;
            for (how, (t, ceiling)) in [("then", apart), ("folded into", folded)] {
                out.push(KernelResult {
                    peak_alongside_gbps: Some(ceiling),
                    ..result(
                        &format!("rms_norm {how} matvec {name} {layout:?}"),
                        &format!("{label} {n}x{k}, 1 row(s)"),
                        w.size_bytes() + 4 * (n + 2 * k) as u64,
                        (2 * n * k) as u64,
                        &t,
                    )
                });
            }
        }
    }
    Ok(out)
}

/// Launches in the chain that measures the cost of one small launch.
const CHAIN: usize = 64;

/// Row kernels at SmolLM2 shapes: RMSNorm of `rows` rows, softmax and argmax over the vocabulary.
pub fn rows(ctx: &Context, rows: usize, reps: usize) -> Result<Vec<KernelResult>> {
    let (d, vocab) = (576, 49152);
    let ramp = |n: usize| -> Result<Tensor> {
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        Ok(ctx.upload_f32(&v, &[n])?)
    };
    let (x, g, h) = (
        ramp(rows * d)?,
        ramp(d)?,
        ctx.zeros(DType::F32, &[rows * d])?,
    );
    let norm = ctx.time(reps, |rec| rms_norm(rec, &x, &g, &h, 1e-5))?;
    // The launch floor: a chain of one-row norms, each reading what the one before wrote, in
    // one recording; its time per launch is what a small kernel costs in a decode step.
    let (one, other) = (x.view(&[1, d])?, h.view(&[1, d])?);
    let mut chain = ctx.time(reps, |rec| {
        (0..CHAIN / 2).try_for_each(|_| {
            rms_norm(rec, &one, &g, &other, 1e-5)?;
            rms_norm(rec, &other, &g, &one, 1e-5)
        })
    })?;
    chain.seconds.iter_mut().for_each(|t| *t /= CHAIN as f64);
    // The same with a kernel that has no barrier: silu over 576 values.
    let mut adds = ctx.time(reps, |rec| {
        (0..CHAIN / 2).try_for_each(|_| {
            silu(rec, &one, &other)?;
            silu(rec, &other, &one)
        })
    })?;
    adds.seconds.iter_mut().for_each(|t| *t /= CHAIN as f64);
    let logits = ramp(rows * vocab)?;
    let probs = ctx.zeros(DType::F32, &[rows * vocab])?;
    let best = ctx.zeros(DType::U32, &[rows])?;
    let soft = ctx.time(reps, |rec| softmax(rec, &logits, &probs, vocab, 1.0, None))?;
    let mut args = Vec::new();
    for scan in [Scan::Scalar, Scan::Wide] {
        let t = ctx.time(reps, |rec| argmax_with(rec, &logits, vocab, &best, scan))?;
        args.push((scan, t));
    }
    let (a, v) = ((rows * d * 4) as u64, (rows * vocab * 4) as u64);
    let mut results = vec![
        result(
            "rms_norm",
            &format!("SmolLM2 {rows}x{d}"),
            2 * a + 4 * d as u64,
            (4 * rows * d) as u64,
            &norm,
        ),
        result(
            "rms_norm chain",
            &format!("1x{d}, per launch of {CHAIN} dependent ones"),
            (8 * d + 4 * d) as u64,
            (4 * d) as u64,
            &chain,
        ),
        result(
            "silu chain",
            &format!("1x{d}, per launch of {CHAIN} dependent ones"),
            (8 * d) as u64,
            (4 * d) as u64,
            &adds,
        ),
        result(
            "softmax",
            &format!("SmolLM2 vocab {rows}x{vocab}"),
            2 * v,
            (5 * rows * vocab) as u64,
            &soft,
        ),
    ];
    for (scan, t) in &args {
        results.push(result(
            &format!("argmax {}", format!("{scan:?}").to_lowercase()),
            &format!("SmolLM2 vocab {rows}x{vocab}"),
            v + 4 * rows as u64,
            (rows * vocab) as u64,
            t,
        ));
    }
    Ok(results)
}
