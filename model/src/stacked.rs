//! Projections of one input (Llama's q, k and v; gate and up) stacked by rows into one matrix, so
//! that one launch computes them all and writes each its own output
//! ([`kiln_kernels::linear::Output::split`]): a launch has a fixed cost before it reads a byte,
//! and small projections alone leave a device idle. A GGUF file may store the parts in different
//! formats (llama.cpp's quantization mixes keep some wider); those stay apart, one launch each.

use kiln_kernels::linear::{Input, Output, Store};
use kiln_kernels::{HostWeights, Weights};
use kiln_runtime::{Context, Recorder, Tensor};

use crate::error::{ModelError, Result};
use crate::matrix::{Matrix, NamedMatrix};
use crate::quantize::Quant;
use crate::weight_source::WeightSource;

pub(crate) enum Stacked {
    /// One matrix, named for calibration and decomposition (`blk.N.attn_qkv`), with the rows
    /// of each part.
    One {
        name: String,
        w: Box<Matrix>,
        rows: Vec<usize>,
    },
    /// Each part on its own, with its tensor's name (`blk.N.attn_q`, ...).
    Apart(Vec<(String, Matrix)>),
}

impl Stacked {
    /// Reads the `[n_i, k]` matrices `parts` (GGUF names without `.weight`, with their rows) and
    /// stacks them as `name` where they share a format, each converted to `quant` on its own (an
    /// int8 per-tensor scale stays per GGUF tensor). A part's `.bias` (Qwen2's q, k and v) is
    /// added by the kernels.
    pub fn load(
        ctx: &Context,
        src: &dyn WeightSource,
        name: String,
        parts: &[(String, usize)],
        k: usize,
        quant: Quant,
    ) -> Result<Self> {
        let hosts = parts
            .iter()
            .map(|(t, n)| {
                let host = src.matrix(&format!("{t}.weight"), *n, k, quant)?;
                Ok((t.clone(), host))
            })
            .collect::<Result<Vec<_>>>()?;
        let biases = parts
            .iter()
            .map(|(t, n)| {
                let bias = format!("{t}.bias");
                src.has(&bias).then(|| src.vector(&bias, *n)).transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_host(ctx, name, hosts, biases)
    }

    /// Stacks the named host matrices as `name` where they share a format and width, with each
    /// part's optional bias.
    pub fn from_host(
        ctx: &Context,
        name: String,
        parts: Vec<(String, HostWeights)>,
        biases: Vec<Option<Vec<f32>>>,
    ) -> Result<Self> {
        let same = parts
            .windows(2)
            .all(|w| w[0].1.format == w[1].1.format && w[0].1.k == w[1].1.k);
        if same {
            let hosts: Vec<HostWeights> = parts.into_iter().map(|(_, h)| h).collect();
            let rows: Vec<usize> = hosts.iter().map(|h| h.n).collect();
            let mut w = Weights::upload(ctx, &HostWeights::stack(&hosts)?)?;
            if biases.iter().any(Option::is_some) {
                let bias: Vec<f32> = biases
                    .iter()
                    .zip(&rows)
                    .flat_map(|(b, &n)| b.clone().unwrap_or_else(|| vec![0.0; n]))
                    .collect();
                w = w.with_bias(ctx, &bias)?;
            }
            return Ok(Self::One {
                name,
                w: Box::new(Matrix::new(w)),
                rows,
            });
        }
        let apart = parts
            .into_iter()
            .zip(biases)
            .map(|((t, h), bias)| {
                let mut w = Weights::upload(ctx, &h)?;
                if let Some(bias) = bias {
                    w = w.with_bias(ctx, &bias)?;
                }
                Ok((t, Matrix::new(w)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::Apart(apart))
    }

    /// `ys[i] = input · W_iᵀ` for every part, `ys` in the parts' order. A normed input is
    /// made once for parts kept apart.
    pub fn record(&self, rec: &mut Recorder<'_>, input: Input<'_>, ys: &[&Tensor]) -> Result<()> {
        let rows: Vec<usize> = match self {
            Self::One { rows, .. } => rows.clone(),
            Self::Apart(parts) => parts.iter().map(|(_, w)| w.n).collect(),
        };
        let m = input.source().len() / self.matrices()[0].k;
        let fits = ys.len() == rows.len() && ys.iter().zip(&rows).all(|(y, &n)| y.len() == m * n);
        if !fits {
            let got: Vec<_> = ys.iter().map(|y| y.shape().to_vec()).collect();
            return Err(ModelError::Config {
                path: "stacked projections".into(),
                message: format!("{m} rows of outputs {rows:?} wide, got {got:?}"),
            });
        }
        match self {
            Self::One { w, .. } => w.record(rec, input, Output::split(ys, Store::Write))?,
            Self::Apart(parts) => {
                let x = input.make(rec)?;
                for ((_, w), y) in parts.iter().zip(ys) {
                    w.record(rec, Input::Rows(x), Output::write(y))?;
                }
            }
        }
        Ok(())
    }

    pub fn matrices(&self) -> Vec<&Weights> {
        match self {
            Self::One { w, .. } => vec![&w.weights],
            Self::Apart(parts) => parts.iter().map(|(_, w)| &w.weights).collect(),
        }
    }

    pub fn named_mut(&mut self) -> Vec<NamedMatrix<'_>> {
        match self {
            Self::One { name, w, rows } => {
                vec![NamedMatrix::new(name.clone(), w, false).stacked(rows.clone())]
            }
            Self::Apart(parts) => parts
                .iter_mut()
                .map(|(name, w)| NamedMatrix::new(name.clone(), w, false))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_kernels::WeightFormat;
    use kiln_kernels::linear::matmul_ref;
    use kiln_runtime::testing::test_context;

    use super::*;

    /// Pseudo-random `[n, 64]` weights, f32 or converted to f16.
    fn host(format: WeightFormat, n: usize, seed: u32) -> HostWeights {
        let values: Vec<f32> = (0..n * 64)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let w = HostWeights::f32(n, 64, &values).unwrap();
        match format {
            WeightFormat::F32 => w,
            _ => Quant::F16.apply(w).unwrap(),
        }
    }

    /// Parts that share a format become one matrix; a part in another format keeps them apart.
    /// Either way each output is its own matrix's product plus its bias where it has one (f64
    /// reference, f32 accumulation of 64 products: 1e-4).
    #[test]
    fn stacks_shared_formats_and_keeps_mixed_ones_apart() {
        let Some(ctx) = test_context() else { return };
        for (formats, stacked) in [
            (
                [WeightFormat::F16, WeightFormat::F16, WeightFormat::F16],
                true,
            ),
            (
                [WeightFormat::F16, WeightFormat::F32, WeightFormat::F16],
                false,
            ),
        ] {
            let hosts: Vec<(String, HostWeights)> = formats
                .iter()
                .zip([9, 3, 3])
                .enumerate()
                .map(|(i, (&f, n))| (format!("blk.0.part{i}"), host(f, n, i as u32)))
                .collect();
            let wants: Vec<Vec<f32>> = hosts.iter().map(|(_, h)| h.dequantize()).collect();
            let biases = vec![
                Some(vec![0.5; 9]),
                None,
                Some((0..3).map(|i| i as f32).collect()),
            ];
            let s = Stacked::from_host(ctx, "blk.0.all".into(), hosts, biases.clone()).unwrap();
            assert_eq!(matches!(s, Stacked::One { .. }), stacked);
            let m = 2;
            let x: Vec<f32> = (0..m * 64).map(|i| (i as f32 * 0.37).sin()).collect();
            let xt = ctx.upload_f32(&x, &[m, 64]).unwrap();
            let ys: Vec<Tensor> = [9, 3, 3]
                .iter()
                .map(|&n| ctx.upload_f32(&vec![f32::NAN; m * n], &[m, n]).unwrap())
                .collect();
            let mut rec = ctx.recorder();
            s.record(&mut rec, Input::Rows(&xt), &ys.iter().collect::<Vec<_>>())
                .unwrap();
            rec.submit().unwrap();
            for (((y, w), n), b) in ys.iter().zip(&wants).zip([9, 3, 3]).zip(&biases) {
                let want = matmul_ref(&x, w, b.as_deref(), m, n, 64);
                let got = ctx.read::<f32>(y).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4, "stacked {stacked}: {g} vs {w}");
                }
            }
            // Outputs out of the parts' order are an error, not a product cut wrongly.
            let swapped = [&ys[1], &ys[0], &ys[2]];
            assert!(
                s.record(&mut ctx.recorder(), Input::Rows(&xt), &swapped)
                    .is_err()
            );
            let mut s = s;
            let named = s.named_mut();
            let names: Vec<&str> = named.iter().map(|m| m.name.as_str()).collect();
            let parts: Vec<_> = named.iter().map(|m| m.quant_parts()).collect();
            if stacked {
                assert_eq!(names, ["blk.0.all"]);
                // The decomposition quantizes each projection on its own.
                assert_eq!(parts, [vec![0..9, 9..12, 12..15]]);
            } else {
                assert_eq!(names, ["blk.0.part0", "blk.0.part1", "blk.0.part2"]);
                let whole: Vec<Vec<_>> = [9, 3, 3].map(|n| std::iter::once(0..n).collect()).into();
                assert_eq!(parts, whole);
            }
        }
    }
}
