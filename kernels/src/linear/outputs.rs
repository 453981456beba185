//! Where a matrix kernel writes its product (`shaders/outputs.wgsl`, included by the matvec,
//! matmul and outlier shaders): one output, or the columns of a matrix stacked by rows from
//! several projections of one input, cut over each projection's own output. A stack is one
//! launch (per row part, for a matrix over the binding limit) where its projections would be
//! one each: Llama's q, k and v take one launch, not three.

use kiln_runtime::{Binding, DType, Defines, Tensor};

use crate::error::{Result, ensure};

/// The output WGSL, included by the kernels that write through `y_put`.
pub(super) const OUTPUTS_WGSL: &str = include_str!("../../../shaders/outputs.wgsl");

/// How a matrix kernel stores its product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// `y = x · Wᵀ (+ bias)`
    Write,
    /// `y += x · Wᵀ (+ bias)`: a residual add in the same launch.
    Add,
}

/// Most outputs one stacked matrix writes.
pub const MAX_OUTPUTS: usize = 3;

/// The outputs of one `[M, N]` product: `ys[i]` is `[M, widths[i]]`, the widths summing to N.
pub(super) struct Outputs<'a> {
    ys: Vec<&'a Tensor>,
    widths: Vec<usize>,
}

impl<'a> Outputs<'a> {
    /// `ys` (1 to [`MAX_OUTPUTS`], f32) each `[m, n_i]` for a matrix of `n = Σ n_i` rows: the
    /// widths follow from the lengths.
    pub(super) fn split(
        kernel: &'static str,
        ys: &[&'a Tensor],
        m: usize,
        n: usize,
    ) -> Result<Self> {
        ensure((1..=MAX_OUTPUTS).contains(&ys.len()), kernel, || {
            format!(
                "a stacked matrix writes 1 to {MAX_OUTPUTS} outputs, got {}",
                ys.len()
            )
        })?;
        let mut widths = Vec::with_capacity(ys.len());
        for (i, y) in ys.iter().enumerate() {
            ensure(
                y.dtype() == DType::F32 && !y.is_empty() && y.len().is_multiple_of(m),
                kernel,
                || {
                    format!(
                        "output {i} must be f32 rows for {m} input rows, got {:?}{:?}",
                        y.dtype(),
                        y.shape()
                    )
                },
            )?;
            widths.push(y.len() / m);
        }
        ensure(widths.iter().sum::<usize>() == n, kernel, || {
            format!("outputs {widths:?} wide do not cut a matrix of {n} rows")
        })?;
        Ok(Self {
            ys: ys.to_vec(),
            widths,
        })
    }

    /// Columns of the whole product.
    fn width(&self) -> usize {
        self.widths.iter().sum()
    }

    /// How many outputs the product is cut over.
    pub(super) fn count(&self) -> usize {
        self.ys.len()
    }

    /// (cut1, cut2): the first column of outputs 1 and 2 (the width where there are fewer).
    pub(super) fn cuts(&self) -> (u32, u32) {
        let n = self.width();
        let cut = |i: usize| self.widths.iter().take(i).sum::<usize>().min(n) as u32;
        (cut(1), cut(2))
    }

    /// Group-0 bindings 2, 4 and 5.
    pub(super) fn bindings(&self) -> Vec<Binding<'a>> {
        self.ys
            .iter()
            .zip([2, 4, 5])
            .map(|(y, at)| Binding::new(at, y))
            .collect()
    }
}

/// The defines that cut a product over `outputs` outputs (1 to [`MAX_OUTPUTS`]).
pub(super) fn split_defines(d: Defines, outputs: usize) -> Defines {
    match outputs {
        1 => d,
        2 => d.flag("SPLIT_Y"),
        _ => d.flag("SPLIT_Y").flag("SPLIT_Y3"),
    }
}

/// CPU reference: the columns of a stacked `[m, Σ n_i]` product `y`, each output's share.
pub fn split_ref(y: &[f32], widths: &[usize], m: usize) -> Vec<Vec<f32>> {
    let n: usize = widths.iter().sum();
    let mut start = 0;
    widths
        .iter()
        .map(|&w| {
            let part = (0..m)
                .flat_map(|r| y[r * n + start..r * n + start + w].iter().copied())
                .collect();
            start += w;
            part
        })
        .collect()
}
