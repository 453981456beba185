//! Input columns of a matrix kept in f32 beside its main part (the LLM.int8() decomposition);
//! the matrix kernels add their share after the main pass.

use kiln_runtime::{Context, DType, Tensor};

use crate::error::{KernelError, Result};

/// Input columns of a matrix held in f32: `values` is `[n, cols.len()]`.
pub struct Outliers {
    cols: Vec<u32>,
    pub(crate) cols_t: Tensor,
    pub(crate) values: Tensor,
}

impl Outliers {
    /// Columns `cols` (distinct, each below `k`) of an `[n, k]` matrix, their values `[n, c]`.
    pub fn upload(ctx: &Context, n: usize, k: usize, cols: &[u32], values: &[f32]) -> Result<Self> {
        let bad = |message: String| KernelError::Shape {
            kernel: "outliers",
            message,
        };
        if cols.is_empty() || values.len() != n * cols.len() {
            return Err(bad(format!(
                "{} outlier values for {n} rows of {} columns",
                values.len(),
                cols.len()
            )));
        }
        let mut seen = vec![false; k];
        for &c in cols {
            if c as usize >= k || std::mem::replace(&mut seen[c as usize], true) {
                return Err(bad(format!(
                    "outlier column {c} is repeated or outside 0..{k}"
                )));
            }
        }
        Ok(Self {
            cols: cols.to_vec(),
            cols_t: ctx.upload(cols, DType::U32, &[cols.len()])?,
            values: ctx.upload_f32(values, &[n, cols.len()])?,
        })
    }

    /// The input columns kept in f32.
    pub fn columns(&self) -> &[u32] {
        &self.cols
    }

    pub fn size_bytes(&self) -> u64 {
        self.cols_t.size_bytes() + self.values.size_bytes()
    }
}
