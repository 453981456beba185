//! A model's weight matrix, with the calibration probe an outlier decomposition reads: while a
//! probe is set, each product first records the largest |input| of every column
//! (`kiln_kernels::probe`), its input made as a tensor where the kernel would have made it as it
//! read.

use std::ops::Deref;

use kiln_kernels::Weights;
use kiln_kernels::linear::{Input, Output, linear};
use kiln_kernels::probe::column_absmax;
use kiln_runtime::{Recorder, Tensor};

use crate::error::Result;

pub struct Matrix {
    pub weights: Weights,
    /// `[k]` maxima of |input| per column, kept over every launch while calibrating.
    probe: Option<Tensor>,
}

impl Matrix {
    pub fn new(weights: Weights) -> Self {
        Self {
            weights,
            probe: None,
        }
    }

    /// `Y (+)= input · Wᵀ (+ bias)` into `out` ([`linear`]), probed while calibrating.
    pub fn record(&self, rec: &mut Recorder<'_>, input: Input<'_>, out: Output<'_>) -> Result<()> {
        let input = match &self.probe {
            Some(probe) => {
                let x = input.make(rec)?;
                column_absmax(rec, x, self.weights.k, probe)?;
                Input::Rows(x)
            }
            None => input,
        };
        Ok(linear(rec, input, &self.weights, out)?)
    }

    /// Starts (a zeroed `[k]` tensor) or stops recording the maxima of |input| per column.
    pub fn set_probe(&mut self, probe: Option<Tensor>) {
        self.probe = probe;
    }
}

impl Deref for Matrix {
    type Target = Weights;

    fn deref(&self) -> &Weights {
        &self.weights
    }
}

/// A weight matrix of a model, for whole-model passes such as the outlier decomposition.
pub struct NamedMatrix<'a> {
    /// `token_embd`, `blk.3.attn_qkv` (a stack), `blk.3.attn_output`, `output`, ...
    pub name: String,
    pub matrix: &'a mut Matrix,
    /// Rows are also gathered (an embedding table, or a tied LM head), not only multiplied.
    pub gathered: bool,
    /// The row counts of the projections stacked in it (Llama's q, k and v), each quantized on
    /// its own; empty for one projection.
    pub stacked: Vec<usize>,
}

impl<'a> NamedMatrix<'a> {
    pub fn new(name: impl Into<String>, matrix: &'a mut Matrix, gathered: bool) -> Self {
        Self {
            name: name.into(),
            matrix,
            gathered,
            stacked: Vec::new(),
        }
    }

    /// A matrix stacked from projections of `rows` rows each.
    pub fn stacked(mut self, rows: Vec<usize>) -> Self {
        self.stacked = rows;
        self
    }

    /// Row ranges quantized on their own: each stacked projection, or all rows.
    pub fn quant_parts(&self) -> Vec<std::ops::Range<usize>> {
        if self.stacked.is_empty() {
            return std::iter::once(0..self.matrix.n).collect();
        }
        let mut start = 0;
        self.stacked
            .iter()
            .map(|&n| {
                start += n;
                start - n..start
            })
            .collect()
    }
}

/// Bytes of `matrices` on the device (data, scales, zero points, biases).
pub fn matrix_bytes(matrices: &[&Weights]) -> u64 {
    matrices.iter().map(|w| w.size_bytes()).sum()
}

#[cfg(test)]
mod tests {
    use kiln_kernels::HostWeights;
    use kiln_kernels::norm::rms_norm_ref;
    use kiln_kernels::probe::column_absmax_ref;
    use kiln_runtime::DType;
    use kiln_runtime::testing::test_context;

    use super::*;

    /// A probed matrix keeps the maximum |input| per column over every launch: of plain rows,
    /// and of an RMSNorm the kernel would otherwise fold into its read (decode and prefill).
    #[test]
    fn probe_keeps_column_maxima_of_every_input() {
        let Some(ctx) = test_context() else { return };
        let (n, k, eps) = (5, 40, 1e-5);
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let w = Weights::upload(ctx, &HostWeights::f32(n, k, &values).unwrap()).unwrap();
        let mut m = Matrix::new(w);
        m.set_probe(Some(ctx.zeros(DType::F32, &[k]).unwrap()));
        let gamma: Vec<f32> = (0..k).map(|c| 0.5 + c as f32 / 10.0).collect();
        let gt = ctx.upload_f32(&gamma, &[k]).unwrap();
        let mut seen = Vec::new();
        for (i, rows) in [11, 1, 8].into_iter().enumerate() {
            let x: Vec<f32> = (0..rows * k)
                .map(|j| (((j + i * 7) * 7919) % 2003) as f32 / 250.0 - 4.0)
                .collect();
            let (xt, h) = (
                ctx.upload_f32(&x, &[rows, k]).unwrap(),
                ctx.zeros(DType::F32, &[rows, k]).unwrap(),
            );
            let y = ctx.zeros(DType::F32, &[rows, n]).unwrap();
            let mut rec = ctx.recorder();
            let input = if i == 1 {
                seen.extend(rms_norm_ref(&x, &gamma, eps));
                Input::RmsNorm {
                    x: &xt,
                    gamma: &gt,
                    eps,
                    normed: &h,
                }
            } else {
                seen.extend(&x);
                Input::Rows(&xt)
            };
            m.record(&mut rec, input, Output::write(&y)).unwrap();
            rec.submit().unwrap();
        }
        let got = ctx.read::<f32>(m.probe.as_ref().unwrap()).unwrap();
        let want = column_absmax_ref(&seen, k);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs(), "{got:?} vs {want:?}");
        }
    }
}
